"""Data parallelism across processes started by torchrun (NCCL on CUDA, gloo on the CPU).

Gradients are averaged explicitly after each accumulated update instead of through
DistributedDataParallel: the generator loss back-propagates through the (frozen) fake network's
inputs and a step has several phases, which DDP's hooks do not model; one flat all-reduce per
update is exact and simple.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env() -> None:
    """Join the process group torchrun (or submitit) describes in the environment, if any."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU under torchrun."""
    if device.type == "cuda" and is_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def average_gradients(params) -> None:
    """Average ``.grad`` of ``params`` over all processes (no-op in a single process).

    A parameter with a gradient on some processes and none on others (a routed student, MSD, whose classes
    one process's batch lacked) gets a zero gradient where it had none, so every process reduces the same
    tensors; one with no gradient anywhere keeps none."""
    if not is_distributed():
        return
    params = list(params)
    if not params:
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    for p, anywhere in zip(params, has.tolist()):
        if anywhere and p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together: a rank tearing gloo down while another still uses it aborts."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
