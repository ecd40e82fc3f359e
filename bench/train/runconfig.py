"""Resolve a run's configuration from the command line or a sweep entry, and name it.

The resolved config is what ``config.json`` holds; its hash names the run directory, so the same
config always maps to the same directory (re-running resumes or skips). Everything that can be checked
without torch is checked before the suite and method are built, so bad input is answered at once.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .. import suites, validate
from ..config import parse_sets
from ..errors import BadInput
from ..registry import unknown_name
from ..rundir import EXTERNAL, TEACHER

DEFAULTS = dict(batch=256, seed=0, kimg=100.0, eval_every=10.0, checkpoint_every=5.0)
OPTIMIZER_KEYS = ("name", "betas", "eps", "weight_decay")


# How each train.KEY is checked (the value is kept as given, so run ids do not change).
TRAIN_CHECKS = {
    "ema_halflife_kimg": lambda n, v: validate.positive(n, v, optional=True),
    "ema_rampup": lambda n, v: validate.non_negative(n, v, optional=True),
    "grad_clip": lambda n, v: validate.positive(n, v, optional=True),
    "warmup_iterations": lambda n, v: validate.non_negative(n, v, optional=True),
    "tick_kimg": lambda n, v: validate.positive(n, v, optional=True),
    "n_eval": lambda n, v: validate.sample_count(n, v, optional=True),
    "n_eval_final": lambda n, v: validate.sample_count(n, v, optional=True),
    "eval_growth": lambda n, v: validate.number(n, v, low=1, strict=False),
    "eval_raw": validate.boolean,
    "eval_batch": lambda n, v: validate.positive(n, v, integer=True),
    "sigma_init": validate.positive,
    "n_regression_pairs": lambda n, v: validate.positive(n, v, integer=True),
    "channels_last": validate.boolean,
    "dropout": lambda n, v: validate.fraction(n, v, upper_open=True, optional=True),
    "augment_p": validate.fraction,
    "snapshots": validate.boolean,  # an EMA snapshot per checkpoint (bench generate --kimg)
}
TRAIN_KEYS = tuple(TRAIN_CHECKS)


def check_train(train: dict) -> dict:
    """``train.*`` options, checked (values kept as given); BadInput naming the first bad one."""
    for key, value in train.items():
        TRAIN_CHECKS[key](f"train.{key}", value)
    return train


def check_optimizer(optimizer: dict) -> dict:
    """``optim.*`` options (recipe defaults merged with ``--set``), checked; BadInput naming the first bad one."""
    optimizer = dict(optimizer)
    if "name" in optimizer:
        validate.choice("optim.name", optimizer["name"], ("adam", "adamw"))
    if "betas" in optimizer:
        betas = optimizer["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                and all(validate.is_number(b) and 0 <= b < 1 for b in betas)):
            raise BadInput(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
        optimizer["betas"] = [float(b) for b in betas]
    if "eps" in optimizer:
        optimizer["eps"] = validate.positive("optim.eps", optimizer["eps"])
    if "weight_decay" in optimizer:
        validate.non_negative("optim.weight_decay", optimizer["weight_decay"])
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
                kimg=args.kimg, gflop=args.gflop, eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                steps=args.steps)
    check_train(train)
    check_optimizer(optim)
    from . import mirrors

    mirrors.check(getattr(args, "logger", None))
    if args.precision in ("bf16", "tf32"):
        check_precision(args.precision, device_type(args.device))
    from ..rundir import check_writable

    check_writable(args.results, "--results")


def check_eval_args(args) -> None:
    """``bench eval RUN_DIR``: a finished, non-teacher run with a checkpoint, and a positive ``--n``.

    With ``--generator FILE`` the checks of ``bench.train.external`` apply instead."""
    from . import checkpoint
    from ..rundir import finished_status, read_run_json

    if getattr(args, "generator", None) is not None:
        from .external import check_external_args

        return check_external_args(args)
    if args.run_dir is None:
        raise BadInput("give a run directory, or --generator FILE --suite SUITE")

    directory = Path(args.run_dir)
    if not (directory / "config.json").is_file():
        raise BadInput(f"{directory} is not a run directory (no config.json)")
    config = read_run_json(directory / "config.json", "; `bench run` with the run's options rebuilds it")
    if args.n is not None:
        validate.sample_count("--n", args.n)
    if config.get("method") == TEACHER:
        raise BadInput("a teacher run is evaluated when it runs; nothing to re-evaluate")
    if not checkpoint.exists(directory):
        raise BadInput(f"{directory} has no state.pt to evaluate")
    if finished_status(directory) is None:
        raise BadInput(f"{directory} has not finished; the same bench run command finishes it, then evaluate")


MAX_STEPS = 64  # generator steps (or the teacher's Heun steps) a run may take per sample


def check_steps(name: str, steps):
    """A number of sampling steps: an integer from 1 to ``MAX_STEPS``, or None (the default)."""
    if steps is None:
        return None
    validate.positive(name, steps, integer=True)
    if steps > MAX_STEPS:
        raise BadInput(f"{name} must be at most {MAX_STEPS}, got {steps}")
    return int(steps)


def check_flags(*, lr=None, lr_fake=None, batch=None, batch_gpu=None, seed=None, kimg=None, eval_every=None,
                checkpoint_every=None, world_size: int = 1, gflop=None, steps=None) -> dict:
    """The numeric flags of a run with their defaults filled in; BadInput naming the first bad one.

    ``lr`` and ``lr_fake`` stay None when not given: the method's published rate fills them later.
    """
    lr = None if lr is None else validate.learning_rate("--lr", lr)
    lr_fake = None if lr_fake is None else validate.learning_rate("--lr-fake", lr_fake)
    batch = validate.positive("--batch", DEFAULTS["batch"] if batch is None else batch, integer=True)
    batch_gpu = batch // world_size if batch_gpu is None else validate.positive("--batch-gpu", batch_gpu, integer=True)
    if batch_gpu < 1 or batch % (batch_gpu * world_size):
        raise BadInput(f"--batch {batch} is not a multiple of --batch-gpu {batch_gpu} x {world_size} processes")
    seed = validate.seed("--seed", DEFAULTS["seed"] if seed is None else seed)
    if gflop is not None and kimg is not None:
        raise BadInput("--kimg and --gflop are alternative budgets: give one of them")
    if gflop is not None:
        gflop = validate.positive("--gflop", gflop)
    else:
        kimg = validate.positive("--kimg", DEFAULTS["kimg"] if kimg is None else kimg)
    eval_every = validate.positive("--eval-every", DEFAULTS["eval_every"] if eval_every is None else eval_every)
    checkpoint_every = validate.positive("--checkpoint-every",
                                         DEFAULTS["checkpoint_every"] if checkpoint_every is None else checkpoint_every)
    return dict(lr=lr, lr_fake=lr_fake, batch=batch, batch_gpu=batch_gpu, seed=seed, kimg=kimg, gflop=gflop,
                eval_every=eval_every, checkpoint_every=checkpoint_every, steps=check_steps("--steps", steps))


def split_sets(sets: dict) -> tuple[dict, dict, dict, dict]:
    """Split ``--set`` items into method hparams, ``suite.``, ``optim.`` and ``train.`` options."""
    hparams, suite_opts, optim, train = {}, {}, {}, {}
    for key, value in sets.items():
        prefix, _, rest = key.partition(".")
        if rest and prefix == "suite":
            suite_opts[rest] = value
        elif rest and prefix == "optim":
            if rest not in OPTIMIZER_KEYS:
                raise unknown_name("optimizer option", key, [f"optim.{k}" for k in OPTIMIZER_KEYS])
            optim[rest] = value
        elif rest and prefix == "train":
            if rest not in TRAIN_KEYS:
                raise unknown_name("training option", key, [f"train.{k}" for k in TRAIN_KEYS])
            train[rest] = value
        elif rest:
            raise BadInput(f"unknown --set prefix in {key!r} (use suite., optim., train. or a method hyperparameter)")
        else:
            hparams[key] = value
    return hparams, suite_opts, optim, train


def resolve(suite: str, method: str, *, lr=None, lr_fake=None, batch=None, batch_gpu=None, seed=None,
            kimg=None, eval_every=None, checkpoint_every=None, sets: dict | None = None,
            precision=None, world_size: int = 1, gflop=None, steps=None) -> dict:
    """The full, validated config of one run; BadInput naming the first problem.

    The checks that need no torch come first; then the suite and the method are built. The budget is
    ``kimg`` (generator images) or, instead, ``gflop`` (training FLOPs, one-off costs included): a
    gflop-budget config holds ``gflop`` and ``kimg: None``; a kimg-budget config has no ``gflop`` key,
    so run ids of configs written before compute budgets are unchanged. ``steps`` is the generator's
    number of sampling steps (``train.steps``, kept only when above 1, so one-step run ids are unchanged)
    or, for the teacher, its sampler's steps instead of the suite's ``teacher_steps``.
    """
    hparams, suite_opts, optim, train = split_sets(sets or {})
    suites.check_name(suite)
    flags = check_flags(lr=lr, lr_fake=lr_fake, batch=batch, batch_gpu=batch_gpu, seed=seed, kimg=kimg,
                        eval_every=eval_every, checkpoint_every=checkpoint_every, world_size=world_size,
                        gflop=gflop, steps=steps)
    train = check_train(train)
    optim = check_optimizer(optim)
    lr, lr_fake, batch, batch_gpu, seed = (flags[k] for k in ("lr", "lr_fake", "batch", "batch_gpu", "seed"))
    kimg, gflop = flags["kimg"], flags["gflop"]
    eval_every, checkpoint_every = flags["eval_every"], flags["checkpoint_every"]
    suite_obj = suites.create(suite, **suite_opts)  # validates the suite's options

    if method == TEACHER:
        if hparams or optim or train:
            raise BadInput("--method teacher takes no method, optim. or train. options")
        return finish(dict(suite=suite, suite_options=suite_obj.options, method=TEACHER,
                            hparams=suite_obj.teacher_info(flags["steps"]), lr_g=None, lr_fake=None, batch=None,
                            batch_gpu=None, seed=seed, kimg=0.0, eval_every=None, checkpoint_every=None,
                            precision="fp32", optimizer=None, train={}))
    import methods

    try:
        m = methods.create(method, **hparams)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    recipe = m.training_recipe
    lr_source = "given" if lr is not None else "published"  # without --lr: the method's published rate
    lr = recipe.lr if lr is None else lr
    lr_fake = lr * recipe.fake_lr_ratio if lr_fake is None else lr_fake
    optimizer = dict(name=recipe.optimizer, betas=list(recipe.betas), eps=recipe.eps,
                     weight_decay=recipe.weight_decay)
    optimizer = check_optimizer({**optimizer, **optim})
    train_opts = dict(ema_halflife_kimg=recipe.ema_halflife_kimg, ema_rampup=0.05, grad_clip=recipe.grad_clip,
                      warmup_iterations=recipe.warmup_iterations, tick_kimg=None, n_eval=None, n_eval_final=None,
                      eval_growth=1.0, eval_raw=False, eval_batch=256, sigma_init=recipe.sigma_init, n_regression_pairs=256, channels_last=False,
                      dropout=recipe.dropout, augment_p=recipe.augment_p)
    train_opts.update(train)
    if not train_opts.get("snapshots"):  # kept only when on, so run ids of configs without it are unchanged
        train_opts.pop("snapshots", None)
    if flags["steps"] and flags["steps"] > 1:
        train_opts["steps"] = flags["steps"]
    if "real_data" in (*recipe.generator_inputs, *recipe.fake_inputs):
        suite_obj.check_real_data()  # e.g. DMD2's GAN term on a suite without --set suite.data=PATH
    if "guidance" in recipe.generator_inputs and not suite_obj.guided:
        raise BadInput(f"method {method} needs a conditional teacher with classifier-free guidance; "
                       f"suite {suite} has none (try gaussian_cond)")
    in_use = {**m.in_use(suite_obj.latent_shape), **suite_obj.student_info()}  # for readers: labels, hp_ columns
    if recipe.students is not None:  # routed students (MSD) own classes: a class-conditional suite only
        if not suite_obj.classes:
            raise BadInput(f"method {method} routes each sample to a student by its class; suite {suite} is not "
                           f"class-conditional (try gaussian_cond or digits_cond)")
        from methods.base import parse_router, router_text

        try:
            in_use["router"] = router_text(parse_router(recipe.router, suite_obj.classes, recipe.students))
        except ValueError as exc:
            raise BadInput(f"method {method}: {exc}") from None
    precision = precision or ("bf16" if recipe.precision == "bf16" else "fp32")
    budget = {"kimg": kimg} if gflop is None else {"kimg": None, "gflop": gflop}
    return finish(dict(suite=suite, suite_options=suite_obj.options, method=method, hparams=m.config(),
                        hparams_in_use=in_use,
                        lr_g=lr, lr_fake=lr_fake, lr_source=lr_source, batch=batch, batch_gpu=batch_gpu, seed=seed,
                        **budget,
                        eval_every=eval_every, checkpoint_every=checkpoint_every, precision=precision,
                        optimizer=optimizer, train=train_opts))


def finish(config: dict) -> dict:
    """``config`` with its ``run_id``."""
    config["run_id"] = run_id(config)
    return config



def run_id(config: dict) -> str:
    """A readable slug plus a short hash of everything that defines the run."""
    body = {k: v for k, v in config.items() if k not in ("run_id", "hparams_in_use")}  # in_use: derived
    digest = hashlib.sha1(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]
    if config["method"] == TEACHER:
        slug = f"teacher-s{config['seed']}"
    elif config["method"].startswith(EXTERNAL):
        slug = f"external-{config['method'][len(EXTERNAL):]}-s{config['seed']}"
    else:
        slug = f"{config['method']}-lr{config['lr_g']:g}-b{config['batch']}-s{config['seed']}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", slug) + "-" + digest


def run_dir(results: str | Path, config: dict) -> Path:
    """``results/<suite>/<run_id>``."""
    return Path(results) / config["suite"] / config["run_id"]
