"""Helpers shared by the bench tests (importable as ``bench_helpers``): tiny, fast gaussian runs."""
import json
import sys
from pathlib import Path

TINY = ["--set", "suite.width=32", "--set", "suite.depth=1", "--set", "suite.n_eval=256", "--set", "suite.dim=4"]


def tiny_run_args(results, method="sid", kimg="1", extra=()):
    """CLI arguments of a tiny gaussian run (seconds)."""
    return ["run", "--suite", "gaussian", "--method", method, "--kimg", kimg, "--batch", "64",
            "--eval-every", "0.5", "--checkpoint-every", "0.5", "--results", str(results), "--quiet",
            *TINY, *extra]


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cli_caller(capsys):
    """Run ``bench`` in-process; returns (exit status, stdout, stderr)."""
    from bench.cli import main

    def call(*argv):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


PYTHON = sys.executable


def save_pngs(images, folder) -> Path:
    """Write each image of a uint8 NCHW batch as ``000000.png`` ... (an image folder as users bring it)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(images.cpu().permute(0, 2, 3, 1).numpy()):
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(folder / f"{i:06d}.png")
    return folder


def gloo_gradient_worker(rank, port, out):
    """Spawned by the distributed test: average known gradients over two gloo processes."""
    import os

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from bench.train.distributed import average_gradients, gather_objects

    p = torch.nn.Parameter(torch.zeros(3))
    q = torch.nn.Parameter(torch.zeros(2, 2))
    ((rank + 1.0) * p.sum() + (rank + 1.0) * 10 * q.sum()).backward()
    average_gradients([p, q])
    # a routed student (MSD) used on rank 1 only, and one used nowhere
    used, unused = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    if rank == 1:
        (4.0 * used.sum()).backward()
    average_gradients([used, unused])
    out[rank] = (p.grad.clone(), q.grad.clone(), gather_objects(rank), used.grad.clone(), unused.grad)
    dist.destroy_process_group()
