"""``bench run`` and ``bench eval``: one (suite, method, hyperparameters, seed) from config to run directory.

The rooms: ``bench.step`` (one training step for every method, with ``bench.inputs`` supplying
what a recipe declares), ``bench.loop`` (the run and its loop in integer image counts),
``bench.evaluation`` (latent bank, teacher row, metric rows) and ``bench.rundir`` (files and the
manifest's lifecycle).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from . import distributed as dist_utils
from . import evaluation, runconfig
from .config import parse_sets, pick_device
from .errors import BadInput
from .evaluation import TeacherRun
from .loop import Run
from .rundir import end_run, finished_status, read_json, read_jsonl, start_run, stop_requests
from .step import Diverged


def provenance(device: torch.device, world_size: int) -> dict:
    """Git hash, package versions and hardware for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("distill-bench", "torch-fidelity", "numpy"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        git = None
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device.type == "cuda" else []
    hardware = {"device": device.type, "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus,
                "world_size": world_size}
    return {"git_hash": git, "versions": versions, "hardware": hardware}


def execute(config: dict, results: str | Path, device: torch.device, quiet: bool = False) -> tuple[Path, str]:
    """Run (or resume, or skip) one resolved config; returns its directory and final status."""
    directory = runconfig.run_dir(results, config)
    rank = dist_utils.rank()
    finished = finished_status(directory)
    if finished:
        return directory, finished
    # Build everything before touching the disk: bad input leaves nothing behind.
    job = TeacherRun(config, device) if config["method"] == runconfig.TEACHER else Run(config, device, quiet)
    if rank == 0:
        start_run(directory, config, provenance(device, dist_utils.world_size()))
    dist_utils.barrier()
    job.attach(directory)
    status, diverged = "failed", None
    with stop_requests() as stop_signal:
        try:
            if (directory / "state.pt").exists():
                job.load(directory / "state.pt")
            status = job.train(lambda: stop_signal() is not None)
        except Diverged as exc:
            status = "diverged"
            diverged = {"kimg": round(job.kimg, 6), "step": job.step + 1, "reason": str(exc)}
        finally:
            if rank == 0:
                end_run(directory, status, diverged, job.kimg, job.wall_time)
        if status == "interrupted":
            status = f"interrupted by signal {stop_signal()}"
    return directory, status


def cli_run(args) -> int:
    """``bench run``: resolve, validate, train or resume; print the run directory last."""
    dist_utils.init_from_env()
    device = dist_utils.local_device(pick_device(args.device))
    config = runconfig.resolve(args.suite, args.method, lr=args.lr, lr_fake=args.lr_fake, batch=args.batch,
                               batch_gpu=args.batch_gpu, seed=args.seed, kimg=args.kimg,
                               eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                               sets=parse_sets(args.set), precision=args.precision,
                               world_size=dist_utils.world_size())
    config["device"] = device.type
    directory, status = execute(config, args.results, device, quiet=args.quiet)
    if dist_utils.rank() == 0:
        print(directory)
    dist_utils.shutdown()
    if status.startswith("interrupted"):
        return 128 + int(status.rsplit(" ", 1)[1])  # the shell's convention for a signalled exit
    return 0


def cli_eval(args) -> int:
    """``bench eval RUN_DIR``: evaluate a run's latest EMA generator with ``--n`` samples."""
    directory = Path(args.run_dir)
    if not (directory / "config.json").exists():
        raise BadInput(f"{directory} is not a run directory (no config.json)")
    if not (directory / "state.pt").exists():
        raise BadInput(f"{directory} has no state.pt to evaluate")
    if args.n is not None and args.n < 1:
        raise BadInput(f"--n must be positive, got {args.n}")
    config = read_json(directory / "config.json")
    device = pick_device(args.device)
    if config["method"] == runconfig.TEACHER:
        raise BadInput("a teacher run is evaluated when it runs; nothing to re-evaluate")
    run = Run(config, device, quiet=True)
    run.attach(directory)
    run.load(directory / "state.pt")
    if args.n is not None:
        run.train_opts = {**run.train_opts, "n_eval": args.n}
    before = len(read_jsonl(run.metrics.path))
    evaluation.evaluate(run)
    for row in read_jsonl(run.metrics.path)[before:]:
        print(f"{row['metric']}\t{row['value']:.6g}\tn={row['n_samples']}\tkimg={row['kimg']:g}")
    print(directory)
    return 0
