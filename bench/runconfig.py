"""Resolve a run's configuration from the command line or a sweep entry, and name it.

The resolved config is what ``config.json`` holds; its hash names the run directory, so the same
config always maps to the same directory (re-running resumes or skips).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import methods

from . import suites
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
    """The full, validated config of one run; BadInput naming the first problem."""
    hparams, suite_opts, optim, train = split_sets(sets or {})
    suite_obj = suites.create(suite, **suite_opts)  # validates suite name and options
    lr = _positive("--lr", DEFAULTS["lr"] if lr is None else lr)
    lr_fake = lr if lr_fake is None else _positive("--lr-fake", lr_fake)
    batch = _positive("--batch", DEFAULTS["batch"] if batch is None else batch, integer=True)
    batch_gpu = batch // world_size if batch_gpu is None else _positive("--batch-gpu", batch_gpu, integer=True)
    if batch % (batch_gpu * world_size):
        raise BadInput(f"--batch {batch} is not a multiple of --batch-gpu {batch_gpu} x {world_size} processes")
    seed = DEFAULTS["seed"] if seed is None else seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise BadInput(f"--seed must be a non-negative integer, got {seed!r}")
    kimg = _positive("--kimg", DEFAULTS["kimg"] if kimg is None else kimg)
    eval_every = _positive("--eval-every", DEFAULTS["eval_every"] if eval_every is None else eval_every)
    checkpoint_every = _positive("--checkpoint-every",
                                 DEFAULTS["checkpoint_every"] if checkpoint_every is None else checkpoint_every)

    if method == TEACHER:
        if hparams or optim or train:
            raise BadInput("--method teacher takes no method, optim. or train. options")
        return _finish(dict(suite=suite, suite_options=suite_obj.options, method=TEACHER,
                            hparams=suite_obj.teacher_info(), lr_g=None, lr_fake=None, batch=None,
                            batch_gpu=None, seed=seed, kimg=0.0, eval_every=None, checkpoint_every=None,
                            precision="fp32", optimizer=None, train={}))
    try:
        m = methods.create(method, **hparams)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    recipe = m.training_recipe
    optimizer = dict(name=recipe.optimizer, betas=list(recipe.betas), eps=recipe.eps,
                     weight_decay=recipe.weight_decay)
    optimizer.update(optim)
    if optimizer["name"] not in ("adam", "adamw"):
        raise BadInput(f"unknown optimizer {optimizer['name']!r} (use adam or adamw)")
    betas = optimizer["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
        raise BadInput(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
    optimizer["betas"] = [float(b) for b in betas]
    optimizer["eps"] = _positive("optim.eps", optimizer["eps"])
    if not (isinstance(optimizer["weight_decay"], (int, float)) and optimizer["weight_decay"] >= 0):
        raise BadInput(f"optim.weight_decay must be a non-negative number, got {optimizer['weight_decay']!r}")
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
