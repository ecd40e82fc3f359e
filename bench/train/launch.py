"""Run many configurations: a sweep YAML expanded into runs, launched locally or on Slurm.

Sweep file::

    suite: digits
    suite_options: {}
    grid: {method: [sim, sid], lr: [1.0e-4, 1.0e-5], batch: [128], seed: [0, 1]}   # crossed
    fixed: {kimg: 40, eval_every: 5, checkpoint_every: 10}   # or gflop: N, the same compute for every method
    method_hparams: {sim: {distance: [pseudo_huber, l2]}}   # per method, lists crossed
    train: {ema_halflife_kimg: 2}                          # train.* options of every run
    optim: {}                                              # optim.* options of every run
    teacher: true                                          # add the teacher's row per seed
    quick: {grid: {seed: [0]}, fixed: {kimg: 2}}           # what --quick overrides
    slurm: {partition: gpu, timeout_min: 720, gpus_per_node: 1}
    logger: tensorboard                                    # or [tensorboard, wandb]: every run mirrors its logs

Finished runs are skipped and unfinished ones resumed, because a config always maps to the same
run directory.
"""
from __future__ import annotations

import concurrent.futures as futures
import contextlib
import itertools
import multiprocessing
import os
import re
import shutil
import signal
import sys
from pathlib import Path

from . import runconfig
from .mirrors import check as check_loggers
from .sweepfile import load_sweep  # noqa: F401  (the sweep file's reader, used with expand)
from ..errors import BadInput
from ..registry import unknown_name
from ..rundir import check_writable
from ..runlock import RunBusy

def _as_list(value):
    return value if isinstance(value, list) else [value]


def _cross(mapping: dict) -> list[dict]:
    keys = list(mapping)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(_as_list(mapping[k]) for k in keys))]


def expand(spec: dict, world_size: int = 1) -> list[dict]:
    """Every resolved run config of a sweep (teacher rows first); validates all before any runs."""
    prefixed = {f"suite.{k}": v for k, v in (spec.get("suite_options") or {}).items()}
    common = {**prefixed, **{f"train.{k}": v for k, v in (spec.get("train") or {}).items()},
              **{f"optim.{k}": v for k, v in (spec.get("optim") or {}).items()}}
    configs, seeds, steps, guidances = [], [], set(), set()
    import methods

    for method in spec.get("method_hparams") or {}:  # a misspelt method's hparams would be dropped silently
        if method not in methods.available():
            raise BadInput(f"{spec.get('path', 'sweep')}: method_hparams: "
                           f"{unknown_name('method', method, methods.available())}")
    for point in _cross(spec["grid"]):
        method = point["method"]
        per_method = (spec.get("method_hparams") or {}).get(method) or {}
        for hparams in _cross(per_method):
            args = {**spec["fixed"], **point}
            # a guidance axis sets a conditional suite's suite.guidance, run by run
            guided = {} if point.get("guidance") is None else {"suite.guidance": point["guidance"]}
            configs.append(runconfig.resolve(
                spec["suite"], method, lr=args.get("lr"), lr_fake=args.get("lr_fake"), batch=args.get("batch"),
                batch_gpu=args.get("batch_gpu"), seed=args.get("seed"), kimg=args.get("kimg"), gflop=args.get("gflop"),
                eval_every=args.get("eval_every"), checkpoint_every=args.get("checkpoint_every"),
                sets={**common, **guided, **hparams}, precision=args.get("precision"), world_size=world_size,
                steps=args.get("steps")))
            seeds.append(configs[-1]["seed"])
            steps.add(args.get("steps"))
            guidances.add(point.get("guidance"))
    if spec.get("teacher", True):
        teacher_sets = prefixed
        # one teacher row per seed; a sweep over generator steps adds the teacher at each of them too
        # (its Heun sampler at those steps, the teacher's curve against NFE) beside its own steps
        teacher_steps = [None, *sorted(k for k in steps if k is not None)]
        # and at each guidance scale of the grid: the teacher's rows at several guidance scales
        teachers = [runconfig.resolve(spec["suite"], runconfig.TEACHER, seed=s, steps=k,
                                      sets={**teacher_sets, **({} if w is None else {"suite.guidance": w})})
                    for s in sorted(set(seeds)) for k in teacher_steps
                    for w in sorted(guidances, key=lambda v: (v is not None, v or 0))]
        configs = teachers + configs
    ids = [c["run_id"] for c in configs]
    if len(set(ids)) != len(ids):
        configs = list({c["run_id"]: c for c in configs}.values())
    return configs


_STOP = None  # in a worker process: the sweep's shared stop signal (0 while none)


def _init_worker(stop) -> None:
    """A worker of ``launch_local``: Ctrl-C goes to the sweep, which tells the runs through ``stop``."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_one(config: dict, results: str, device: str, threads: int | None, stop=None, loggers=()):
    """One run (in a worker process with local --jobs N); ``stop`` returns a signal number or 0."""
    import torch

    from ..config import pick_device
    from .runner import execute

    if threads:
        torch.set_num_threads(threads)
    config = {**config, "device": pick_device(device).type}
    if stop is None and _STOP is not None:
        stop = lambda: _STOP.value  # noqa: E731
    if stop is not None and stop():  # queued before the sweep stopped: never started
        return config["run_id"], f"not run: stopped by signal {stop()}"
    directory, status = execute(config, results, pick_device(device), quiet=True, stop=stop, loggers=loggers)
    return str(directory), status


@contextlib.contextmanager
def _environment(**values):
    """Set environment variables for the duration of the block (spawned workers inherit them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _stop_on_signals(received):
    """While inside, SIGINT and SIGTERM set ``received.value`` (the sweep stops) instead of raising."""
    def request_stop(signum, frame):
        received.value = signum

    handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def launch_local(configs: list[dict], results: str, device: str, jobs: int = 1,
                 loggers=()) -> list[tuple[str, str]]:
    """Run configs one after another, or ``jobs`` at a time in worker processes (one per job slot,
    each running many runs) sharing the cores.

    Ctrl-C (or SIGTERM) stops the sweep: running runs checkpoint and stop as ``bench run`` would
    (``interrupted by signal N``), and no further run starts (``not run: stopped by signal N``).
    """
    context = multiprocessing.get_context("spawn")
    received = context.Value("i", 0)
    stopped = lambda c: (c["run_id"], f"not run: stopped by signal {received.value}")  # noqa: E731
    with _stop_on_signals(received):
        if jobs <= 1:
            out = []
            for c in configs:
                out.append(stopped(c) if received.value else _run_one_safely(c, results, device, None,
                                                                              lambda: received.value, loggers))
                if out[-1][1].startswith("not run"):
                    _print_outcome(*out[-1])
                elif out[-1][1].startswith("interrupted by signal"):
                    received.value = int(out[-1][1].rsplit(" ", 1)[1])
            return out
        return _launch_pool(configs, results, device, jobs, context, received, stopped, loggers)


def _launch_pool(configs, results, device, jobs, context, received, stopped, loggers=()) -> list[tuple[str, str]]:
    threads = max(1, (os.cpu_count() or 1) // jobs)
    outcome = {}
    # BLAS libraries read their thread counts when numpy loads, before any worker code runs, so the
    # limit goes into the environment the workers inherit (torch-fidelity's KID runs on numpy).
    limits = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with _environment(**limits), futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(received,)) as pool:
        pending = {pool.submit(_run_one, c, results, device, threads, None, loggers): c for c in configs}
        waiting = set(pending)
        while waiting:
            done, waiting = futures.wait(waiting, timeout=0.5, return_when=futures.FIRST_COMPLETED)
            if received.value:  # start no new run; the running ones see the signal and checkpoint
                for future in waiting:
                    future.cancel()
            for future in done:
                config = pending[future]
                if future.cancelled():
                    outcome[config["run_id"]] = stopped(config)
                else:
                    try:
                        outcome[config["run_id"]] = future.result()
                    except RunBusy as exc:
                        outcome[config["run_id"]] = (config["run_id"], f"busy: {exc}")
                    except Exception as exc:  # one failed run does not stop the sweep
                        outcome[config["run_id"]] = (config["run_id"], f"failed: {type(exc).__name__}: {exc}")
                _print_outcome(*outcome[config["run_id"]])
    return [outcome[c["run_id"]] for c in configs]


def _run_one_safely(config, results, device, threads, stop=None, loggers=()):
    try:
        out = _run_one(config, results, device, threads, stop, loggers)
    except RunBusy as exc:  # another process is running it: not this sweep's failure
        out = (config["run_id"], f"busy: {exc}")
    except BadInput:
        raise
    except Exception as exc:
        out = (config["run_id"], f"failed: {type(exc).__name__}: {exc}")
    _print_outcome(*out)
    return out


def _print_outcome(directory, status):
    print(f"{status:10s} {directory}", flush=True)


class SlurmRun:
    """A submitit job: one run, resumable; requeued from its latest checkpoint on preemption."""

    def __init__(self, config: dict, results: str, device: str, loggers=()):
        self.config, self.results, self.device, self.loggers = config, results, device, list(loggers)

    def __call__(self):
        import submitit

        if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        from . import distributed

        distributed.init_from_env()
        from ..config import pick_device
        from .runner import execute

        device = distributed.local_device(pick_device(self.device))
        # A requeued job may start while its previous attempt still holds the run: it waits for it.
        directory, status = execute({**self.config, "device": device.type}, self.results, device, quiet=True,
                                    wait=True, loggers=self.loggers)
        distributed.shutdown()
        return str(directory), status

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmRun(self.config, self.results, self.device, self.loggers))


def slurm_cluster(slurm: dict, local_test: bool) -> str:
    """The submitit cluster to use: Slurm when ``sbatch`` is here, "local" only when asked for."""
    cluster = os.environ.get("BENCH_SUBMITIT_CLUSTER", (slurm or {}).get("cluster"))
    if local_test:
        return "local"
    if cluster in (None, "slurm") and shutil.which("sbatch") is None:
        raise BadInput("--launcher slurm: no Slurm here (sbatch not found); use --launcher local, or add "
                       "--local-test to try the Slurm path with local processes")
    return cluster or "slurm"


def launch_slurm(configs: list[dict], results: str, device: str, slurm: dict, cluster: str = "slurm",
                 jobs: int | None = None, loggers=()) -> list[tuple[str, str]]:
    """Submit the configs as submitit job arrays and wait for them.

    On Slurm one array runs ``array_parallelism`` jobs at a time (``slurm:`` in the YAML); the local
    executor (``--local-test``) has no such limit, so the configs go in arrays of ``jobs``, one after
    another.
    """
    try:
        import submitit
    except ImportError:
        raise BadInput("the slurm launcher needs submitit: pip install 'distill-bench[slurm]'") from None
    slurm = dict(slurm or {})
    slurm.pop("cluster", None)
    gpus = int(slurm.pop("gpus_per_node", 0))
    executor = submitit.AutoExecutor(folder=Path(results) / ".submitit" / "%j", cluster=cluster)
    params = {"timeout_min": slurm.pop("timeout_min", 60), "slurm_array_parallelism": slurm.pop("array_parallelism", 64)}
    if gpus:
        params.update(gpus_per_node=gpus, tasks_per_node=gpus)
    if executor.cluster == "slurm":
        params.update({f"slurm_{k}": v for k, v in slurm.items()})
    executor.update_parameters(**params)
    size = jobs if jobs and executor.cluster != "slurm" else len(configs)
    out = []
    for start in range(0, len(configs), size):
        chunk = configs[start:start + size]
        submitted = executor.submit_array([SlurmRun(c, results, device, loggers) for c in chunk])
        print(f"submitted {len(submitted)} jobs ({executor.cluster}): "
              f"{', '.join(j.job_id for j in submitted[:5])}{' ...' if len(submitted) > 5 else ''}", flush=True)
        for config, job in zip(chunk, submitted):
            try:
                result = job.result()
                out.append(result[0] if isinstance(result, list) else result)
            except Exception as exc:
                out.append((config["run_id"], f"failed: {type(exc).__name__}: {str(exc).splitlines()[-1] if str(exc) else ''}"))
            _print_outcome(*out[-1])
    return out


def cli_sweep(args) -> int:
    """``bench sweep CONFIG.yaml``: expand, validate everything, then launch."""
    spec = load_sweep(args.config, quick=args.quick)
    if args.jobs < 1:
        raise BadInput(f"--jobs must be at least 1, got {args.jobs}")
    cluster = slurm_cluster(spec.get("slurm") or {}, args.local_test) if args.launcher == "slurm" else None
    if args.local_test and args.launcher != "slurm":
        raise BadInput("--local-test goes with --launcher slurm")
    results = args.results or spec.get("results") or "results"
    configs = expand(spec)
    loggers = check_loggers(spec.get("logger"))
    if not configs:
        raise BadInput(f"{args.config}: the grid expands to no runs")
    if args.dry_run:
        for c in configs:
            print(runconfig.run_dir(results, c))
        return 0
    if spec["fixed"].get("precision") in ("bf16", "tf32"):  # asked for, not a recipe's default
        runconfig.check_precision(spec["fixed"]["precision"], runconfig.device_type(args.device))
    check_writable(results, "results folder")
    print(f"sweep: {len(configs)} runs -> {Path(results) / spec['suite']}", flush=True)
    if args.launcher == "slurm":
        outcome = launch_slurm(configs, results, args.device, spec.get("slurm") or {}, cluster, jobs=args.jobs,
                               loggers=loggers)
    else:
        outcome = launch_local(configs, results, args.device, jobs=args.jobs, loggers=loggers)
    return sweep_exit(outcome)


def sweep_exit(outcome: list[tuple[str, str]]) -> int:
    """Print the sweep's tally and name every run it did not finish; the exit status: 0 when all
    finished, 128 + N when a signal N stopped it (the shell's convention), 1 when runs failed, were
    busy (another process holds them) or were not run."""
    kinds = [(Path(d).name, re.split(r":| by signal", status)[0], status) for d, status in outcome]
    counts = {}
    for _, kind, _ in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    print("sweep finished: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), flush=True)
    unfinished = {}
    for name, kind, _ in kinds:
        if kind in ("failed", "busy", "not run", "interrupted"):
            unfinished.setdefault(kind, []).append(name)
    if not unfinished:
        return 0
    print("bench: sweep did not finish every run: "
          + "; ".join(f"{kind}: {', '.join(names)}" for kind, names in unfinished.items()), file=sys.stderr, flush=True)
    signals = [int(m.group(1)) for _, _, status in kinds if (m := re.search(r"by signal (\d+)", status))]
    return 128 + signals[0] if signals else 1
