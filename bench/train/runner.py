"""``bench run`` and ``bench eval``: one (suite, method, hyperparameters, seed) from config to run directory.

The rooms: ``bench.train.step`` (one training step for every method, with ``bench.train.inputs`` supplying
what a recipe declares), ``bench.train.loop`` (the run and its loop in integer image counts),
``bench.train.evaluation`` (latent bank, teacher row, metric rows) and ``bench.rundir`` (files and the
manifest's lifecycle).
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from . import distributed as dist_utils
from . import checkpoint, evaluation, memory, mirrors, runconfig
from .. import runlock
from ..config import parse_sets, pick_device
from ..errors import BadInput
from .evaluation import TeacherRun
from .loop import Run
from ..rundir import (end_run, finished_status, read_json, read_json_or_none, start_run, stop_requests,
                      write_json_atomic)
from ..runlock import RunLock
from .step import Diverged, loss_bytes_per_sample


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


def check_memory(run: Run) -> float:
    """BadInput when a micro-batch of the run cannot fit in the device's free memory (measured)."""
    trained = sum(p.numel() * p.element_size() for p in [*run.generator.parameters(), *run.fake_params])
    return memory.check_fits(loss_bytes_per_sample(run), run.config["batch_gpu"], trained, run.device)


def execute(config: dict, results: str | Path, device: torch.device, quiet: bool = False,
            wait: bool = False, stop=None, loggers=(), job=None) -> tuple[Path, str]:
    """Run (or resume, or skip) one resolved config; returns its directory and final status.

    One process at a time owns a run directory (``bench.runlock``): another one is refused naming
    it, or with ``wait`` waits for it. A checkpoint that cannot be used is passed over for the
    previous one; when none can be, BadInput, and the manifest keeps the progress it had. ``stop``
    (returning a signal number, or 0) stops the run as that signal would (a sweep's parent asks it).
    ``loggers`` (``bench.train.mirrors``) mirror the rows of this session; a finished run is skipped unmirrored.
    ``job``: the run already built for ``config`` (``bench.train.external.ExternalRun``); by default it is
    built here from the config.
    """
    directory = runconfig.run_dir(results, config)
    rank = dist_utils.rank()
    finished = finished_status(directory)
    if finished:
        if rank == 0 and read_json_or_none(directory / "config.json") != config:  # lost or damaged: rebuilt
            write_json_atomic(directory / "config.json", config)
        return directory, finished
    # Build everything before touching the disk: bad input leaves nothing behind.
    if job is None:
        job = TeacherRun(config, device) if config["method"] == runconfig.TEACHER else Run(config, device, quiet)
    if isinstance(job, Run):
        check_memory(job)
    lock = RunLock(directory)
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        dead = lock.acquire(wait=wait)
        finished = finished_status(directory)  # finished by the process we waited for
        if finished:
            lock.release()
            return directory, finished
        if dead:
            print(f"bench: note: {directory.name} was left by {runlock.describe(dead)}, which died without "
                  f"finishing (killed, perhaps for memory); resuming", file=sys.stderr, flush=True)
    try:
        return _execute_locked(job, config, directory, device, stop, loggers)
    finally:
        lock.release()


def _execute_locked(job, config: dict, directory: Path, device: torch.device, stop=None,
                    loggers=()) -> tuple[Path, str]:
    rank = dist_utils.rank()
    dist_utils.barrier()
    job.attach(directory)
    resumed = job.load() if checkpoint.exists(directory) else None  # BadInput before the manifest changes
    logs = [directory / name for name in ("stats.jsonl", "metrics.jsonl") if (directory / name).is_file()]
    if rank == 0 and resumed is None and any(log.stat().st_size for log in logs):
        # no checkpoint to continue from: the run starts over, and the rows of the abandoned attempt go
        print(f"bench: note: {directory.name} has logs but no checkpoint; starting over without the earlier rows",
              file=sys.stderr, flush=True)
        for log in logs:
            os.truncate(log, 0)
    if rank == 0:
        start_run(directory, config, provenance(device, dist_utils.world_size()))
        if resumed and resumed[1]:
            print(f"bench: note: {'; '.join(resumed[1])}: resumed from {resumed[0]} at kimg {job.kimg:g}",
                  file=sys.stderr, flush=True)
    status, diverged, mirror = "failed", None, None
    with stop_requests() as received:
        def stop_signal():
            return received() or (stop() if stop is not None else None) or None

        try:
            if rank == 0:
                mirror = mirrors.attach(job, loggers, directory, config, resumed is not None)
            status = job.train(lambda: stop_signal() is not None)
        except Diverged as exc:
            status = "diverged"
            diverged = {"kimg": round(job.kimg, 6), "step": job.step + 1, "reason": str(exc)}
        finally:
            if rank == 0:
                end_run(directory, status, diverged, job.kimg, job.wall_time, job.cost_summary())
            if mirror is not None:
                mirror.close(status)
        if status == "interrupted":
            status = f"interrupted by signal {stop_signal()}"
    return directory, status


def cli_run(args) -> int:
    """``bench run``: resolve, validate, train or resume; print the run directory last."""
    dist_utils.init_from_env()
    device = dist_utils.local_device(pick_device(args.device))
    config = runconfig.resolve(args.suite, args.method, lr=args.lr, lr_fake=args.lr_fake, batch=args.batch,
                               batch_gpu=args.batch_gpu, seed=args.seed, kimg=args.kimg, gflop=args.gflop,
                               eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                               sets=parse_sets(args.set), precision=args.precision, steps=args.steps,
                               world_size=dist_utils.world_size())
    config["device"] = device.type
    directory, status = execute(config, args.results, device, quiet=args.quiet, wait=args.wait,
                                loggers=getattr(args, "logger", None) or ())
    if dist_utils.rank() == 0:
        print(directory)
    dist_utils.shutdown()
    if status.startswith("interrupted"):
        return 128 + int(status.rsplit(" ", 1)[1])  # the shell's convention for a signalled exit
    return 0


def cli_eval(args) -> int:
    """``bench eval RUN_DIR``: score a finished run's EMA generator with ``--n`` samples.

    Every metric is scored on the same N (the suite's evaluator is built for it), and the new rows
    take the place of any earlier row with the same (kimg, metric, n_samples, ema). With ``--generator``,
    a generator file is scored instead (``bench.train.external``).
    """
    if getattr(args, "generator", None) is not None:
        from .external import cli_eval_generator

        return cli_eval_generator(args)
    runconfig.check_eval_args(args)
    directory = Path(args.run_dir)
    config = read_json(directory / "config.json")
    device = pick_device(args.device)
    try:
        run = Run(config, device, quiet=True)
    except BadInput:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a config.json edited by hand
        raise BadInput(f"{directory / 'config.json'} does not describe a run of this harness "
                       f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    with RunLock(directory) as lock:
        lock.acquire(wait=args.wait)
        run.attach(directory)
        used, problems = run.load(truncate_logs=False)  # a finished run's logs are complete
        if problems:
            print(f"bench: note: {'; '.join(problems)}: evaluating {used} (kimg {run.kimg:g})", file=sys.stderr)
        if args.n is not None:
            run.train_opts = {**run.train_opts, "n_eval": args.n}
            if "n_eval" in run.suite.options:  # reference sets and sample counts of every metric follow N
                run.suite.options["n_eval"] = args.n
        rows = evaluation.evaluate(run, rescore=True)
    for row in rows:
        print(f"{row['metric']}\t{row['value']:.6g}\tn={row['n_samples']}\tkimg={row['kimg']:g}")
    print(directory)
    return 0
