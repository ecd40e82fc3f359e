"""Will a run fit in memory? Measured per sample at two small batches, scaled to the asked batch.

A training step's memory grows with the micro-batch through the activations autograd keeps for the
backward pass. ``saved_bytes`` counts them for one loss evaluation; the slope between two small
batches is the cost of one more sample (fixed costs such as weights cancel). The estimate for a
micro-batch is that slope times the batch, times ``HEADROOM`` for what the backward pass allocates
on top of the saved tensors, plus Adam's two moments and the gradients, which a fresh run has not
allocated yet. A run is refused only when that estimate exceeds what the device has free.
"""
from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import BadInput

HEADROOM = 2.0  # backward buffers and temporaries, relative to the saved activations
PROBE_BATCHES = (4, 8)


def saved_bytes(loss_fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves while ``loss_fn()`` runs (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = loss_fn()
    del out
    return sum(storages.values())


def bytes_per_sample(loss_at: Callable[[int], object], batches: tuple[int, int] = PROBE_BATCHES) -> float:
    """The slope of ``saved_bytes`` between two micro-batch sizes: what one more sample costs.

    Runs ``loss_at(b)`` (forward only, no backward, no optimiser step) with the random number
    generators saved and restored, so the run's own random streams are untouched.
    """
    b1, b2 = batches
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            low, high = saved_bytes(lambda: loss_at(b1)), saved_bytes(lambda: loss_at(b2))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return max(high - low, 0) / (b2 - b1)


def free_bytes(device: torch.device) -> int | None:
    """Memory this process can still use: CUDA's free memory, or the CPU's available memory (cgroup too)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):  # a container's limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = left if free is None else min(free, left)
    return free


def _size(n: float) -> str:
    """Bytes for people: "35.8 GB", "120 MB", "1.9 kB"."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if n >= scale / 8:
            return f"{n / scale:.3g} {unit}"
    return f"{n / 1024:.3g} kB"


def check_fits(per_sample: float, micro_batch: int, trained_params: int, device: torch.device) -> float:
    """BadInput when a micro-batch will not fit; returns the estimate in bytes.

    ``per_sample`` is ``bytes_per_sample`` of the most demanding loss of a step; ``trained_params``
    counts the bytes of every trained parameter (Adam keeps two moments and a gradient per parameter).
    """
    need = HEADROOM * per_sample * micro_batch + 3 * trained_params
    free = free_bytes(device)
    if free is not None and need > free:
        raise BadInput(f"a micro-batch of {micro_batch} needs about {_size(need)} of {device.type} memory "
                       f"({_size(per_sample)} per sample, measured) but {_size(free)} is free; lower --batch, "
                       f"or set --batch-gpu to accumulate gradients over smaller micro-batches")
    return need
