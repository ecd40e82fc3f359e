"""EMA snapshots by training progress, and a run's EMA generator loaded at a chosen kimg.

A run keeps two full checkpoints (``state.pt``, ``state-prev.pt``); with ``--set train.snapshots=true`` each
checkpoint also leaves ``snapshots/ema-<nimg>.pt`` (the EMA generator's state dict and the progress), as
EDM keeps a network snapshot per tick, so ``bench generate --kimg K`` can draw from any checkpointed point of
training. Snapshots are written atomically and read ``weights_only`` (``bench.train.checkpoint.read``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput
from ..rundir import write_atomic
from . import checkpoint

FOLDER = "snapshots"


def path_for(directory: Path, nimg: int) -> Path:
    """``snapshots/ema-<nimg>.pt`` (nine digits: names sort by progress)."""
    return Path(directory) / FOLDER / f"ema-{nimg:09d}.pt"


def save(directory: Path, nimg: int, step: int, ema_state: dict) -> None:
    """Write the EMA snapshot of progress ``nimg``: flushed to disk before it is renamed into place."""
    import torch

    state = {"ema": ema_state, "progress": {"nimg": nimg, "step": step}}

    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path_for(directory, nimg), write)


def saved(directory: Path) -> dict[int, Path]:
    """The run's EMA snapshots: nimg -> file, by their names."""
    found = {}
    for path in sorted((Path(directory) / FOLDER).glob("ema-*.pt")):
        stem = path.stem.removeprefix("ema-")
        if stem.isdigit():
            found[int(stem)] = path
    return found


def available(directory: Path, device="cpu") -> dict[int, Path]:
    """Every EMA point of the run: nimg -> file; a snapshot (EMA only: smaller) is preferred to a checkpoint
    at the same nimg. Checkpoints are read to learn their progress; a damaged one is not offered."""
    directory = Path(directory)
    found = saved(directory)
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):
        path = directory / name
        if path.exists():
            try:
                found.setdefault(int(checkpoint.read(path, device)["progress"]["nimg"]), path)
            except (BadInput, KeyError, TypeError, ValueError):
                continue
    return dict(sorted(found.items()))


def find(directory: Path, kimg: float) -> Path:
    """The file holding the EMA generator at ``kimg``; BadInput listing the available kimg otherwise."""
    from .loop import to_nimg

    nimg = to_nimg(kimg)
    points = saved(directory)  # by name: the checkpoints are read only when no snapshot matches
    if nimg not in points:
        points = available(directory)
    if nimg not in points:
        listed = ", ".join(f"{n / 1000:g}" for n in points) or "none"
        hint = "" if any(p.parent.name == FOLDER for p in points.values()) else \
            " (--set train.snapshots=true keeps one per checkpoint)"
        raise BadInput(f"{directory}: no EMA generator at kimg {kimg:g}; available kimg: {listed}{hint}")
    return points[nimg]


def load_run(directory: Path, device, kimg: float | None = None):
    """A ``Run`` of the run directory with its EMA generator loaded: the newest usable checkpoint, or the
    snapshot (or checkpoint) at ``kimg``. Returns (run, file used, problems of files passed over)."""
    from ..rundir import read_json
    from ..runlock import RunLock
    from .loop import Run

    directory = Path(directory)
    path = None if kimg is None else find(directory, kimg)  # before the (possibly large) networks are built
    run = Run(read_json(directory / "config.json"), device, quiet=True)
    with RunLock(directory) as lock:
        lock.acquire(wait=False)
        run.attach(directory)
        if path is None:
            used, problems = run.load(truncate_logs=False)
            return run, used, problems
        state = checkpoint.read(path, device)
        try:
            run.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError) as exc:
            raise BadInput(f"{path.name} does not fit this run ({str(exc).splitlines()[0]})") from None
        run.nimg, run.step = state["progress"]["nimg"], state["progress"].get("step", 0)
    return run, str(path.relative_to(directory)), []
