"""The suite registry: what is distilled (teacher, data shape, conditioning, evaluator)."""
from __future__ import annotations

from ..errors import BadInput
from ..registry import Registry

# name -> "module:Class", imported lazily so a suite's heavy dependencies load only when used.
SUITES = Registry("suite", {
    "gaussian": "bench.suites.gaussian:GaussianSuite",
    "digits": "bench.suites.digits:DigitsSuite",
    "cifar10": "bench.suites.edm:Cifar10Suite",
    "imagenet64": "bench.suites.edm:ImageNet64Suite",
    "t2i": "bench.suites.t2i:TextToImageSuite",
})


def get(name: str):
    """The suite class registered as ``name``; BadInput naming close matches otherwise."""
    return SUITES.get(name)


def create(name: str, **options):
    """An instance of suite ``name`` with options."""
    return get(name)(**options)


def cli_teacher_train(args) -> int:
    """``bench teacher train --suite NAME``: train or load a suite's teacher and print where it is."""
    from ..config import parse_sets, pick_device

    suite = create(args.suite, **parse_sets(args.set))
    if not hasattr(suite, "train_teacher"):
        raise BadInput(f"suite {args.suite} has no teacher to train (its teacher is given, not trained)")
    path = suite.train_teacher(pick_device(args.device))
    print(path)
    return 0
