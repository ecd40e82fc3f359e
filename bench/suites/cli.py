"""``bench teacher train``: the suites' command (kept apart so ``bench.suites`` stays light for the CLI)."""
from __future__ import annotations

from ..errors import BadInput
from . import create


def cli_teacher_train(args) -> int:
    """``bench teacher train --suite NAME``: train or load a suite's teacher and print where it is."""
    from ..config import parse_sets, pick_device

    suite = create(args.suite, **parse_sets(args.set))
    if not hasattr(suite, "train_teacher"):
        raise BadInput(f"suite {args.suite} has no teacher to train (its teacher is given, not trained)")
    path = suite.train_teacher(pick_device(args.device))
    print(path)
    return 0
