"""Resolve a run's configuration from the command line or a sweep entry, and name it.

The resolved config is what ``config.json`` holds; its hash names the run directory, so the same
config always maps to the same directory (re-running resumes or skips). Everything that can be checked
without torch is checked before the suite and method are built, so bad input is answered at once.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from . import suites
from .config import parse_sets
from .errors import BadInput

DEFAULTS = dict(lr=1e-4, batch=256, seed=0, kimg=100.0, eval_every=10.0, checkpoint_every=5.0)
OPTIMIZER_KEYS = ("name", "betas", "eps", "weight_decay")
TRAIN_KEYS = ("ema_halflife_kimg", "ema_rampup", "grad_clip", "warmup_kimg", "tick_kimg", "n_eval",
              "eval_raw", "eval_batch", "sigma_init", "n_regression_pairs", "channels_last")
TEACHER = "teacher"  # the pseudo-method that evaluates the teacher's own multi-step sampler


def _positive(name, value, integer=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if ok and integer:
        ok = float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise BadInput(f"{name} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _optional(check):
    """``check`` for a value that may also be null (the option's "off" or "default")."""
    return lambda name, value: None if value is None else check(name, value)


def _at_least_zero(name, value):
    if not (_number(value) and value >= 0):
        raise BadInput(f"{name} must be a non-negative number or null, got {value!r}")
    return float(value)


def _boolean(name, value):
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {value!r}")
    return value


# train.* options: how each is checked (null means off, or the suite's default for n_eval).
TRAIN_CHECKS = {
    "ema_halflife_kimg": _optional(_at_least_zero), "ema_rampup": _optional(_at_least_zero),
    "grad_clip": _optional(_at_least_zero), "warmup_kimg": _optional(_at_least_zero),
    "tick_kimg": _optional(_positive), "n_eval": _optional(lambda n, v: _positive(n, v, integer=True)),
    "eval_raw": _boolean, "eval_batch": lambda n, v: _positive(n, v, integer=True),
    "sigma_init": _positive, "n_regression_pairs": lambda n, v: _positive(n, v, integer=True),
    "channels_last": _boolean,
}
assert set(TRAIN_CHECKS) == set(TRAIN_KEYS)


def check_train(train: dict) -> dict:
    """``train.*`` options with checked values; BadInput naming the first bad one."""
    return {key: TRAIN_CHECKS[key](f"train.{key}", value) for key, value in train.items()}


def check_optimizer(optimizer: dict) -> dict:
    """``optim.*`` options (recipe defaults merged with ``--set``), checked; BadInput naming the first bad one."""
    optimizer = dict(optimizer)
    if "name" in optimizer and optimizer["name"] not in ("adam", "adamw"):
        raise BadInput(f"unknown optimizer {optimizer['name']!r} (use adam or adamw)")
    if "betas" in optimizer:
        betas = optimizer["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(_number(b) and 0 <= b < 1 for b in betas)):
            raise BadInput(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
        optimizer["betas"] = [float(b) for b in betas]
    if "eps" in optimizer:
        optimizer["eps"] = _positive("optim.eps", optimizer["eps"])
    if "weight_decay" in optimizer and not (_number(optimizer["weight_decay"]) and optimizer["weight_decay"] >= 0):
        raise BadInput(f"optim.weight_decay must be a non-negative number, got {optimizer['weight_decay']!r}")
    return optimizer


def check_precision(precision: str | None, device_type: str) -> None:
    """bf16 autocast and TF32 exist on CUDA only: asking for them on the CPU is refused, not ignored."""
    if precision in ("bf16", "tf32") and device_type != "cuda":
        raise BadInput(f"--precision {precision} needs a CUDA device; the CPU runs fp32 (drop --precision "
                       f"or use --device cuda)")


def device_type(name: str) -> str:
    """The device ``--device NAME`` resolves to; imports torch only for ``auto``."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_run_args(args) -> None:
    """``bench run``: every check that needs no torch, before the runner (and torch) is imported."""
    hparams, suite_opts, optim, train = split_sets(parse_sets(args.set))
    suites.check_name(args.suite)
    check_flags(lr=args.lr, lr_fake=args.lr_fake, batch=args.batch, batch_gpu=args.batch_gpu, seed=args.seed,
                kimg=args.kimg, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every)
    check_train(train)
    check_optimizer(optim)
    if args.precision in ("bf16", "tf32"):
        check_precision(args.precision, device_type(args.device))
    from .rundir import check_writable

    check_writable(args.results, "--results")


def check_eval_args(args) -> None:
    """``bench eval RUN_DIR``: a finished, non-teacher run with a checkpoint, and a positive ``--n``."""
    from . import checkpoint
    from .rundir import finished_status, read_json

    directory = Path(args.run_dir)
    if not (directory / "config.json").is_file():
        raise BadInput(f"{directory} is not a run directory (no config.json)")
    if args.n is not None and args.n < 1:
        raise BadInput(f"--n must be positive, got {args.n}")
    if read_json(directory / "config.json").get("method") == TEACHER:
        raise BadInput("a teacher run is evaluated when it runs; nothing to re-evaluate")
    if not checkpoint.exists(directory):
        raise BadInput(f"{directory} has no state.pt to evaluate")
    if finished_status(directory) is None:
        raise BadInput(f"{directory} has not finished; the same bench run command finishes it, then evaluate")


def check_flags(*, lr=None, lr_fake=None, batch=None, batch_gpu=None, seed=None, kimg=None, eval_every=None,
                checkpoint_every=None, world_size: int = 1) -> dict:
    """The numeric flags of a run with their defaults filled in; BadInput naming the first bad one."""
    lr = _positive("--lr", DEFAULTS["lr"] if lr is None else lr)
    lr_fake = lr if lr_fake is None else _positive("--lr-fake", lr_fake)
    batch = _positive("--batch", DEFAULTS["batch"] if batch is None else batch, integer=True)
    batch_gpu = batch // world_size if batch_gpu is None else _positive("--batch-gpu", batch_gpu, integer=True)
    if batch_gpu < 1 or batch % (batch_gpu * world_size):
        raise BadInput(f"--batch {batch} is not a multiple of --batch-gpu {batch_gpu} x {world_size} processes")
    seed = DEFAULTS["seed"] if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise BadInput(f"--seed must be a non-negative integer, got {seed!r}")
    kimg = _positive("--kimg", DEFAULTS["kimg"] if kimg is None else kimg)
    eval_every = _positive("--eval-every", DEFAULTS["eval_every"] if eval_every is None else eval_every)
    checkpoint_every = _positive("--checkpoint-every",
                                 DEFAULTS["checkpoint_every"] if checkpoint_every is None else checkpoint_every)
    return dict(lr=lr, lr_fake=lr_fake, batch=batch, batch_gpu=batch_gpu, seed=seed, kimg=kimg,
                eval_every=eval_every, checkpoint_every=checkpoint_every)


def split_sets(sets: dict) -> tuple[dict, dict, dict, dict]:
    """Split ``--set`` items into method hparams, ``suite.``, ``optim.`` and ``train.`` options."""
    hparams, suite_opts, optim, train = {}, {}, {}, {}
    for key, value in sets.items():
        prefix, _, rest = key.partition(".")
        if rest and prefix == "suite":
            suite_opts[rest] = value
        elif rest and prefix == "optim":
            if rest not in OPTIMIZER_KEYS:
                raise BadInput(f"unknown optimizer option {key!r} (known: {', '.join(OPTIMIZER_KEYS)})")
            optim[rest] = value
        elif rest and prefix == "train":
            if rest not in TRAIN_KEYS:
                raise BadInput(f"unknown training option {key!r} (known: {', '.join(TRAIN_KEYS)})")
            train[rest] = value
        elif rest:
            raise BadInput(f"unknown --set prefix in {key!r} (use suite., optim., train. or a method hyperparameter)")
        else:
            hparams[key] = value
    return hparams, suite_opts, optim, train


def resolve(suite: str, method: str, *, lr=None, lr_fake=None, batch=None, batch_gpu=None, seed=None,
            kimg=None, eval_every=None, checkpoint_every=None, sets: dict | None = None,
            precision=None, world_size: int = 1) -> dict:
    """The full, validated config of one run; BadInput naming the first problem.

    The checks that need no torch come first; then the suite and the method are built.
    """
    hparams, suite_opts, optim, train = split_sets(sets or {})
    suites.check_name(suite)
    flags = check_flags(lr=lr, lr_fake=lr_fake, batch=batch, batch_gpu=batch_gpu, seed=seed, kimg=kimg,
                        eval_every=eval_every, checkpoint_every=checkpoint_every, world_size=world_size)
    train = check_train(train)
    optim = check_optimizer(optim)
    lr, lr_fake, batch, batch_gpu, seed = (flags[k] for k in ("lr", "lr_fake", "batch", "batch_gpu", "seed"))
    kimg, eval_every, checkpoint_every = flags["kimg"], flags["eval_every"], flags["checkpoint_every"]
    suite_obj = suites.create(suite, **suite_opts)  # validates the suite's options

    if method == TEACHER:
        if hparams or optim or train:
            raise BadInput("--method teacher takes no method, optim. or train. options")
        return _finish(dict(suite=suite, suite_options=suite_obj.options, method=TEACHER,
                            hparams=suite_obj.teacher_info(), lr_g=None, lr_fake=None, batch=None,
                            batch_gpu=None, seed=seed, kimg=0.0, eval_every=None, checkpoint_every=None,
                            precision="fp32", optimizer=None, train={}))
    import methods

    try:
        m = methods.create(method, **hparams)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    recipe = m.training_recipe
    optimizer = dict(name=recipe.optimizer, betas=list(recipe.betas), eps=recipe.eps,
                     weight_decay=recipe.weight_decay)
    optimizer = check_optimizer({**optimizer, **optim})
    train_opts = dict(ema_halflife_kimg=recipe.ema_halflife_kimg, ema_rampup=0.05, grad_clip=recipe.grad_clip,
                      warmup_kimg=recipe.warmup_kimg, tick_kimg=None, n_eval=None, eval_raw=False,
                      eval_batch=256, sigma_init=recipe.sigma_init, n_regression_pairs=256, channels_last=False)
    train_opts.update(train)
    precision = precision or ("bf16" if recipe.precision == "bf16" else "fp32")
    return _finish(dict(suite=suite, suite_options=suite_obj.options, method=method, hparams=m.config(),
                        hparams_in_use=m.in_use(suite_obj.latent_shape),
                        lr_g=lr, lr_fake=lr_fake, batch=batch, batch_gpu=batch_gpu, seed=seed, kimg=kimg,
                        eval_every=eval_every, checkpoint_every=checkpoint_every, precision=precision,
                        optimizer=optimizer, train=train_opts))


def _finish(config: dict) -> dict:
    config["run_id"] = run_id(config)
    return config


def run_id(config: dict) -> str:
    """A readable slug plus a short hash of everything that defines the run."""
    body = {k: v for k, v in config.items() if k not in ("run_id", "hparams_in_use")}  # in_use: derived
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    if config["method"] == TEACHER:
        slug = f"teacher-s{config['seed']}"
    else:
        slug = f"{config['method']}-lr{config['lr_g']:g}-b{config['batch']}-s{config['seed']}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", slug) + "-" + digest


def run_dir(results: str | Path, config: dict) -> Path:
    """``results/<suite>/<run_id>``."""
    return Path(results) / config["suite"] / config["run_id"]
