"""Checkpoints that survive a truncated or corrupt file: the previous one is kept and used instead.

``save`` writes ``state.pt`` through a temporary file that is flushed to disk before it replaces the
old one, and the old one becomes ``state-prev.pt``. ``load`` tries ``state.pt`` and then
``state-prev.pt``, and says which one it used; a file that cannot be read or applied is passed over.
When neither can be, the run is not resumable from here: BadInput names both problems. Torch is
imported only to write and read, so the CLI can check for checkpoints before it loads.

Reading is ``weights_only``: a results folder someone shares can hold a planted pickle, and
resuming or evaluating it must not run its code. A checkpoint holds tensors and plain containers
only (the loop stores numpy's RNG state as a tensor); NumPy arrays, which checkpoints written
before that hold, are the one allow-listed type (rebuilding an array runs no code).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from ..rundir import write_atomic

CURRENT, PREVIOUS = "state.pt", "state-prev.pt"


def save(directory: Path, state: dict) -> None:
    """Write ``state.pt``, keeping the checkpoint it replaces as ``state-prev.pt``."""
    import torch

    directory = Path(directory)

    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if (directory / CURRENT).exists():
            os.replace(directory / CURRENT, directory / PREVIOUS)

    write_atomic(directory / CURRENT, write)


def exists(directory: Path) -> bool:
    """Whether the run has a checkpoint to resume from (either file)."""
    return any((Path(directory) / name).exists() for name in (CURRENT, PREVIOUS))


def read(path: Path, device) -> dict:
    """A checkpoint's state dict, loaded ``weights_only``; BadInput when unreadable or when it asks
    to build a type that is not allow-listed (its code never runs)."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's weights_only refusal (and a damaged pickle stream)
        text = str(exc)
        if "Unsupported global" in text or "weights_only" in text.split("\n")[0]:
            found = text.split("GLOBAL ", 1)[1].split(" ", 1)[0] if "GLOBAL " in text else "an unsupported type"
            raise BadInput(f"{path.name} was refused: it asks to build {found}, which a checkpoint never holds "
                           "(nothing in it was run)") from None
        raise BadInput(f"{path.name} is unreadable ({_first_line(exc)})") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError... for damaged files
        raise BadInput(f"{path.name} is unreadable ({_first_line(exc)})") from None
    if not isinstance(state, dict) or "progress" not in state:
        raise BadInput(f"{path.name} is not a checkpoint of this harness")
    return state


def load(directory: Path, device, apply: Callable[[dict], None]) -> tuple[str, dict, list[str]]:
    """``apply`` the newest usable checkpoint; returns (file name used, its state, problems passed over).

    BadInput when no checkpoint can be used; ``apply`` must set everything it restores, since a
    failed attempt may have set part of it before the next file is tried.
    """
    directory = Path(directory)
    problems = []
    for name in (CURRENT, PREVIOUS):
        path = directory / name
        if not path.exists():
            continue
        try:
            state = read(path, device)
            apply(state)
        except BadInput as exc:
            problems.append(str(exc))
            continue
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:  # does not fit this run's networks
            problems.append(f"{name} does not fit this run ({_first_line(exc)})")
            continue
        return name, state, problems
    raise BadInput(f"{directory}: no usable checkpoint: {'; '.join(problems) or 'none written yet'}")


def _numpy_globals() -> list:
    """What rebuilding a NumPy array needs (older checkpoints hold numpy's RNG state as one)."""
    import numpy as np

    multiarray = getattr(np, "_core", None) or np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
