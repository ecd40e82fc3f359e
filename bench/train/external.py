"""``bench eval --generator FILE --suite SUITE``: score a one-step generator trained elsewhere, as a reference row.

The file is one of (chosen by its suffix):

- ``.pkl``: a SiD snapshot, ``dict(ema=EDMPrecond, ...)``, in NVlabs' persistent-object format or in
  the by-name layout of ``bench export --format edm-pickle`` (``bench.nets.edm_pickle``; nothing in the
  file is executed);
- ``.bin``/``.pt``/``.pth``: DMD2's ``pytorch_model.bin``, a plain state dict of its EDMPrecond generator
  (read with ``weights_only=True``), loaded onto the suite's teacher architecture (DMD2's generator is a
  copy of the teacher); this project's ``.pt`` teacher format is read too;
- ``.safetensors``: a file of ``bench export --format safetensors`` (its suite must be ``--suite``).

The generator is ``G(z) = D(sigma z; sigma)`` (SiD's ``sid_generate.py``, DMD2's ``test_folder_edm.py``), with
``sigma`` from ``--sigma-init``, else the file's ``init_sigma`` (``bench export``'s pickles and
safetensors carry it), else 80 for a DMD2 state dict (DMD2's ``conditioning_sigma``); a SiD snapshot
holds none (SiD passes ``--init_sigma``, default 2.5), so it needs ``--sigma-init``.

It is scored as the teacher's row is: once, on the suite's latent bank of ``--seed``, through the
suite's evaluator, into a run directory ``results/<suite>/external-<stem>-s<seed>-<hash>`` whose
``config.json`` names the file and its SHA-256 and whose ``metrics.jsonl`` rows are those of a trained
run (kimg 0, ema true). Its method is ``external:<stem>``: the leaderboard shows each file as a row of
its own beside the teacher's, and leaves it out of budget comparisons (``--at``) and robustness.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path

from ..errors import BadInput
from ..rundir import EXTERNAL

PICKLE, STATE_DICT, SAFETENSORS = "edm-pickle", "state-dict", "safetensors"
FORMATS = {".pkl": PICKLE, ".bin": STATE_DICT, ".pt": STATE_DICT, ".pth": STATE_DICT, ".safetensors": SAFETENSORS}
DMD2_SIGMA = 80.0  # DMD2's conditioning_sigma (main/edm/train_edm.py, test_folder_edm.py)


def file_format(path: Path) -> str:
    """The generator file's format from its suffix; BadInput naming the accepted ones."""
    try:
        return FORMATS[path.suffix]
    except KeyError:
        raise BadInput(f"--generator {path}: expected a .pkl (SiD/EDM pickle), .bin or .pt (DMD2 state dict) "
                       f"or .safetensors (bench export) file") from None


def check_external_args(args) -> None:
    """``bench eval --generator``: file, suite, flags and results folder, before torch loads."""
    from .. import suites, validate
    from ..config import parse_sets
    from ..rundir import check_writable
    from ..suites import EDM_SUITES
    from . import runconfig

    if args.run_dir is not None:
        raise BadInput("give either RUN_DIR or --generator FILE, not both")
    if not args.suite:
        raise BadInput("--generator needs --suite (the suite whose evaluation scores it)")
    path = Path(args.generator).expanduser()
    if not path.is_file():
        raise BadInput(f"--generator {path} does not exist" if not path.exists() else f"--generator {path} is not a file")
    fmt = file_format(path)
    suites.check_name(args.suite)
    if fmt == SAFETENSORS:
        import json

        from .export import read_header

        suite = json.loads(read_header(path)["bench_config"]).get("suite")
        if suite != args.suite:
            raise BadInput(f"--generator {path} was trained on suite {suite!r}, not {args.suite!r}")
    elif args.suite not in EDM_SUITES:
        raise BadInput(f"--generator {path.name}: an EDM network is scored on an EDM suite ({', '.join(EDM_SUITES)}), "
                       f"not {args.suite!r}")
    if args.n is not None:
        validate.sample_count("--n", args.n)
    if args.sigma_init is not None:
        validate.positive("--sigma-init", args.sigma_init)
    validate.non_negative("--seed", args.seed, integer=True)
    hparams, _, optim, train = runconfig.split_sets(parse_sets(args.set))
    if hparams or optim or train:
        raise BadInput("--generator takes suite.KEY=VALUE options only (--set)")
    check_writable(args.results, "--results")


def sha256(path: Path) -> str:
    """The file's SHA-256 (hex): names the run, so another file never resumes this one's directory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_generator(path: Path, suite, sigma_init: float | None, device):
    """The file's one-step generator on ``device`` and its sigma; BadInput when it is not one for ``suite``."""
    from ..nets import edm_pickle
    from ..nets.precond import OneStepGenerator

    fmt = file_format(path)
    if fmt == SAFETENSORS:
        from .export import load_exported

        run, _ = load_exported(path, device)
        if sigma_init is not None and not math.isclose(sigma_init, run.ema.sigma_init):
            raise BadInput(f"--sigma-init {sigma_init:g}: {path.name} was trained with sigma_init "
                           f"{run.ema.sigma_init:g}, which its generator keeps")
        return run.ema.eval().requires_grad_(False), run.ema.sigma_init
    if fmt == PICKLE:
        net, file_sigma, _ = edm_pickle.read_generator_pickle(path)
        default = file_sigma
    else:
        net = edm_pickle.load_state_dict_file(path, like=suite.load_teacher("cpu"))
        default = DMD2_SIGMA
    suite.check_network(net, path)
    sigma = sigma_init if sigma_init is not None else default
    if sigma is None:
        raise BadInput(f"--generator {path.name} records no generator noise level: give --sigma-init "
                       "(SiD's sid_generate.py --init_sigma; its default is 2.5)")
    generator = OneStepGenerator(net, sigma)
    return generator.to(device).eval().requires_grad_(False), float(sigma)


def build_suite(args):
    """The suite that scores the file: ``--suite`` with ``--set suite.*`` and ``--n``; for a ``bench export``
    safetensors file, over the suite options it was trained with (its latents and labels fit them)."""
    import json

    from .. import suites
    from ..config import parse_sets
    from . import runconfig

    path = Path(args.generator).expanduser()
    base = {}
    if file_format(path) == SAFETENSORS:
        from .export import read_header

        base = dict(json.loads(read_header(path)["bench_config"]).get("suite_options") or {})
    _, suite_opts, _, _ = runconfig.split_sets(parse_sets(args.set))
    suite_opts = {**base, **suite_opts}
    if args.n is not None:
        suite_opts["n_eval"] = args.n
    return suites.create(args.suite, **suite_opts)  # validates the options


def resolve(args, suite, sigma: float, digest: str) -> dict:
    """The config of the external generator's run directory (hashed into its name like any run's)."""
    from . import runconfig

    path = Path(args.generator).expanduser().resolve()
    return runconfig.finish(dict(
        suite=args.suite, suite_options=suite.options, method=f"{EXTERNAL}{path.stem}",
        hparams={"format": file_format(path), "sigma_init": sigma},
        generator_file={"path": str(path), "sha256": digest}, lr_g=None, lr_fake=None, batch=None, batch_gpu=None,
        seed=args.seed, kimg=0.0, eval_every=None, checkpoint_every=None, precision="fp32", optimizer=None, train={}))


class ExternalRun:
    """An external generator scored once on the seed's latent bank, logged at kimg 0 (``runner.execute``'s job)."""

    kimg, step = 0.0, 0

    def __init__(self, config: dict, device, generator, suite):
        self.config, self.device, self.generator, self.suite = config, device, generator, suite
        self.evaluator = suite.evaluator(device)  # a missing reference is answered before the disk is touched
        self.started = time.time()
        self.sample_cost = None

    @property
    def wall_time(self) -> float:
        return time.time() - self.started

    def attach(self, directory: Path) -> None:
        """Write into ``directory`` from now on."""
        from ..rundir import JsonlLog

        self.dir = Path(directory)
        self.metrics = JsonlLog(self.dir / "metrics.jsonl")

    def cost_summary(self) -> dict:
        """The manifest's ``cost`` entry: what one sample costs (one pass of the generator)."""
        return {"sample": self.sample_cost}

    def train(self, stop_flag) -> str:
        from ..rundir import record_metric_impls
        from .cost import sampling_cost
        from .evaluation import _grid_path, generate, latent_bank, log_measurements, measure, save_samples

        n, n_final = self.evaluator.n_samples, self.evaluator.n_final
        z, cond = latent_bank(self.suite, self.config["seed"], n, n_final)
        started = time.time()
        self.sample_cost = sampling_cost({"generator": self.generator.denoiser},
                                         lambda: generate(self.generator, z, cond, self.device, 256, self.config["seed"]),
                                         z.shape[0], "generator")
        samples = self.sample_cost.pop("samples")
        self.metrics.truncate(0)  # scored in one go: an interrupted attempt starts over
        log_measurements(self.metrics, measure(self.evaluator, samples, cond, n), 0.0, True, started)
        save_samples(self.suite.to_images(samples[:64]), _grid_path(self.dir, 0.0))
        record_metric_impls(self.dir)
        return "done"


def cli_eval_generator(args) -> int:
    """``bench eval --generator FILE --suite SUITE [--n N] [--sigma-init S] [--seed S] [--results DIR]``."""
    from ..config import pick_device
    from ..rundir import read_jsonl
    from .runner import execute

    check_external_args(args)
    device = pick_device(args.device)
    path = Path(args.generator).expanduser()
    suite = build_suite(args)
    generator, sigma = load_generator(path, suite, args.sigma_init, device)
    config = resolve(args, suite, sigma, sha256(path))
    config["device"] = device.type
    job = ExternalRun(config, device, generator, suite)
    directory, _ = execute(config, args.results, device, quiet=True, job=job)
    for row in read_jsonl(directory / "metrics.jsonl"):
        print(f"{row['metric']}\t{row['value']:.6g}\tn={row['n_samples']}")
    print(directory)
    return 0
