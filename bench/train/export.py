"""``bench export RUN_DIR -o OUT``: a run's EMA generator as a file that leaves the harness.

``--format safetensors`` (``OUT.safetensors``): the file holds the EMA generator's state dict and, in the safetensors metadata, the run's
``config.json`` (``bench_config``): ``load_exported`` rebuilds the generator from it through the same
suite and method code as the run (the suite's teacher file must be where the config says), so
``bench generate OUT.safetensors`` draws exactly the run's samples. Reading is safetensors, which
holds tensors only: no code runs on load.

``--format edm-pickle`` (``OUT.pkl``, the EDM suites only): SiD's snapshot layout, ``dict(ema=EDMPrecond,
init_sigma=..., kimg=..., bench_config=...)``, whose ``ema`` is the one-step generator's denoiser with
its classes named ``training.networks.<Class>`` and no source code in the file
(``bench.nets.edm_pickle.write_by_name_pickle``). Inside SiD's (or EDM's) repository ``pickle.load(f)['ema']``
rebuilds their own classes with these weights, and SiD's ``sid_generate.py --network OUT.pkl
--init_sigma S`` samples ``G(S z, S)`` from it unchanged: its generate script takes the generator's
noise level as the ``--init_sigma`` flag (default 2.5), so pass the file's ``init_sigma``
(``bench export`` prints it). ``bench eval --generator OUT.pkl`` reads it back through the restricted loader.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from ..errors import BadInput

FORMAT = "distill-bench-generator"
SUFFIX = {"safetensors": ".safetensors", "edm-pickle": ".pkl"}


def read_header(path) -> dict:
    """The metadata of an exported generator (no torch); BadInput when ``path`` is not one."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise BadInput(f"{path} is not a safetensors file ({type(exc).__name__})") from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT or "bench_config" not in meta:
        raise BadInput(f"{path} is a safetensors file but not a generator exported by bench export")
    return meta


def _safetensors():
    """``safetensors.torch``, or BadInput naming the extra to install."""
    try:
        import safetensors.torch
    except ImportError:
        raise BadInput("bench export needs safetensors: pip install 'distill-bench[export]'") from None
    return safetensors.torch


def check_export_args(args) -> None:
    """A finished run with a checkpoint and a new, writable output of the format's suffix, before torch loads."""
    import argparse
    import os

    from . import runconfig
    from .generate import _existing_parent
    from ..rundir import read_json
    from ..suites import EDM_SUITES

    runconfig.check_eval_args(argparse.Namespace(run_dir=args.run_dir, n=None))
    from ..rundir import read_run_json
    from . import export_diffusers

    config = read_run_json(Path(args.run_dir) / "config.json")
    if export_diffusers.applies(args, config):  # --format diffusers and t2i runs: a folder, checked there
        return export_diffusers.check_args(args, config)
    out = Path(args.output)
    if out.suffix != SUFFIX[args.format]:
        raise BadInput(f"{out}: --format {args.format} writes a {SUFFIX[args.format]} file")
    if args.format == "edm-pickle":
        config = read_json(Path(args.run_dir) / "config.json")
        if config.get("suite") not in EDM_SUITES:
            raise BadInput(f"--format edm-pickle is for the EDM suites ({', '.join(EDM_SUITES)}); "
                           f"this run is suite {config.get('suite')!r} (use --format safetensors)")
        steps = (config.get("train") or {}).get("steps") or 1
        if steps > 1:
            raise BadInput(f"--format edm-pickle holds a one-step generator (SiD's layout); this run's has {steps} steps "
                           "(use --format safetensors)")
        import methods

        students = methods.create(config["method"], **(config.get("hparams") or {})).training_recipe.students
        if students is not None:  # MSD: K routed networks, not the one EDMPrecond SiD's layout holds
            raise BadInput(f"--format edm-pickle holds one network; this {config['method']} run's generator is "
                           f"{students} routed students (use --format safetensors)")
    if out.exists():
        raise BadInput(f"{out} exists; give a new file")
    if not os.access(_existing_parent(out), os.W_OK):
        raise BadInput(f"{out}: its folder is not writable")


def cli_export(args) -> int:
    """``bench export RUN_DIR --format safetensors|edm-pickle|diffusers -o OUT``."""
    if args.format == "diffusers":
        from .export_diffusers import cli_export_diffusers

        return cli_export_diffusers(args)
    save_file = _safetensors().save_file if args.format == "safetensors" else None

    from ..config import pick_device
    from ..rundir import read_json, write_atomic
    from ..runlock import RunLock
    from .loop import Run

    directory = Path(args.run_dir)
    config = read_json(directory / "config.json")
    run = Run(config, pick_device("cpu"), quiet=True)
    with RunLock(directory) as lock:
        lock.acquire(wait=False)
        run.attach(directory)
        run.load(truncate_logs=False)
    if args.format == "edm-pickle":
        from ..nets.edm_pickle import write_by_name_pickle

        sigma = run.ema.sigma_init
        write_by_name_pickle(args.output, run.ema.denoiser,
                             {"init_sigma": sigma, "kimg": run.kimg, "bench_config": json.dumps(config)})
        print(f"bench: note: SiD's sid_generate.py samples it with --init_sigma {sigma:g}", file=sys.stderr)
        print(args.output)
        return 0
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in run.ema.state_dict().items()}
    meta = {"format": FORMAT, "bench_config": json.dumps(config), "kimg": f"{run.kimg:g}"}
    write_atomic(Path(args.output), lambda tmp: save_file(tensors, tmp, metadata=meta))
    print(args.output)
    return 0


def load_exported(path, device):
    """A ``Run`` whose EMA generator holds the exported weights (``run.ema``), and the file's metadata."""
    from .loop import Run

    load_file = _safetensors().load_file

    meta = read_header(path)
    run = Run(json.loads(meta["bench_config"]), device, quiet=True)
    try:
        run.ema.load_state_dict(load_file(str(path), device=str(device)))
    except RuntimeError as exc:
        raise BadInput(f"{path}: its weights do not fit the generator its config builds ({str(exc).splitlines()[0]})") from None
    return run, meta
