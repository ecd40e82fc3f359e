"""The training loop of one run: networks, optimisers, EMA, progress in images, checkpoints.

Progress is an integer image count ``nimg`` (EDM's ``cur_nimg``); the schedules in config.json are
in kimg and become integer image counts here, so no comparison needs a tolerance. The images
counted are those the generator is updated on (batch x generator updates); stats.jsonl also logs
``iterations``, fake-score updates, DMD2's unit (five per generator update).
The budget is in kimg, or in GFLOP (``--gflop``): then the run stops after the first step that reaches it.
"""
from __future__ import annotations

import contextlib
import copy
import random
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import methods
from methods.base import parse_router

from . import distributed as dist_utils
from . import checkpoint, evaluation, inputs, snapshots
from .. import suites
from .cost import CostMeter
from ..nets.guidance import guided_parts
from ..nets.modes import set_dropout
from ..nets.precond import FewStepGenerator, chain_sigmas
from ..nets.routed import route_generator, routed_copies
from ..rundir import JsonlLog
from .step import check_finite, training_step


def to_nimg(kimg: float) -> int:
    """A duration in kimg as a whole number of images."""
    return round(kimg * 1000)


def next_eval(nimg: int, every: int, growth: float) -> int:
    """The next evaluation: the next multiple of ``every``, or, with ``growth > 1``, a log-spaced
    schedule (each evaluation ``growth`` times the images of the one before, at least ``every`` apart)."""
    step = next_multiple(nimg, every)
    return step if growth <= 1 else max(step, math.ceil(nimg * growth))


def next_multiple(nimg: int, every: int) -> int:
    """The first multiple of ``every`` after ``nimg``."""
    return (nimg // every + 1) * every


class Run:
    """Everything one training run holds: networks, optimisers, EMA, progress and its files."""

    def __init__(self, config: dict, device: torch.device, quiet: bool = False):
        self.config, self.device, self.quiet = config, device, quiet
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.suite = suites.create(config["suite"], **config["suite_options"])
        self.method = methods.create(config["method"], **config["hparams"])
        self.recipe = self.method.training_recipe
        self.train_opts = config["train"]
        self.inputs = inputs.providers_for(self.recipe)
        torch.manual_seed(config["seed"])  # identical initial networks on every process
        self.parts = self.suite.build(self.train_opts["sigma_init"], device)
        if self.recipe.students is not None:  # K students and fake scores, each sample routed by its class (MSD)
            router = parse_router(self.recipe.router, self.suite.classes, self.recipe.students)
            route_generator(self.parts.generator, router)
            self.parts.fake = routed_copies(self.parts.fake, router)
        if self.train_opts.get("steps", 1) > 1:  # a K-step generator around the same denoiser
            self.parts.generator = FewStepGenerator(
                self.parts.generator.denoiser, chain_sigmas(self.train_opts["sigma_init"], self.train_opts["steps"]),
                chain=self.recipe.chain)
        self.parts.teacher.eval().requires_grad_(False)
        self.generator, self.fake = self.parts.generator, self.parts.fake
        if self.train_opts.get("dropout") is not None:  # the recipe's dropout (DMD2: 0) in every network
            for net in (self.parts.teacher, self.generator, self.fake):
                set_dropout(net, self.train_opts["dropout"])
        self.pairs = None
        for provider in self.inputs:
            provider.build(self)
        # the generator's denoiser is counted: a K-step generator is K passes of it; a guided teacher's network
        # too: a guided call is two passes of it, and guidance-based losses call its parts directly
        guided = guided_parts(self.parts.teacher)
        teacher_net = self.parts.teacher if guided is None else guided.base
        self.cost = CostMeter({"teacher": teacher_net, "fake": self.fake, "generator": self.generator.denoiser,
                               "discriminator": self.parts.discriminator}, scale=self.world)
        self.sample_cost = None  # what one image from the generator costs, measured at the first evaluation
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        # a method's own trained module (sCM's adaptive weight) learns with the generator
        extra = [] if self.parts.loss_weight is None else list(self.parts.loss_weight.parameters())
        self.generator_params = list(self.generator.parameters()) + extra
        self.opt_g = self._optimizer(self.generator_params, config["lr_g"])
        fake_params = list(self.fake.parameters())
        if self.parts.discriminator is not None:
            fake_params += [p for p in self.parts.discriminator.parameters() if all(p is not q for q in fake_params)]
        self.fake_params = fake_params
        self.opt_f = self._optimizer(fake_params, config["lr_fake"])
        self.step, self.nimg = 0, 0
        self.next_eval, self.next_ckpt, self.next_tick = 0, to_nimg(config["checkpoint_every"]), 0
        self.last_eval = None  # [nimg, final] of the latest evaluation: a resumed finished run is not scored twice
        self.wall_time_before = 0.0  # seconds spent in earlier sessions of this run (resumes)
        self.session_start = time.time()
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if device.type == "cuda" and config["precision"] == "bf16" else contextlib.nullcontext())
        if device.type == "cuda":
            tf32 = config["precision"] in ("tf32", "bf16")  # DMD2's bf16 runs keep TF32 on (train_edm.py)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            if self.train_opts.get("channels_last"):  # faster convolutions with tensor cores
                for net in (self.parts.teacher, self.generator, self.fake, self.ema):
                    net.to(memory_format=torch.channels_last)
        _seed_everything(config["seed"] * 7919 + self.rank)  # training noise differs across processes
        self.dir = self.stats = self.metrics = self._evaluator = None
        self.mirror = None  # the loggers of bench.train.mirrors, when asked for (rank 0)

    def attach(self, directory: Path) -> None:
        """Write into ``directory`` from now on (rank 0 keeps the logs)."""
        self.dir = Path(directory)
        if self.rank == 0:
            self.stats, self.metrics = JsonlLog(self.dir / "stats.jsonl"), JsonlLog(self.dir / "metrics.jsonl")

    @property
    def kimg(self) -> float:
        return self.nimg / 1000

    @property
    def wall_time(self) -> float:
        """Seconds of training, evaluation and checkpointing so far, over every session."""
        return self.wall_time_before + time.time() - self.session_start

    def evaluator(self):
        """The suite's evaluator, built on first use (it may load feature weights)."""
        if self._evaluator is None:
            self._evaluator = self.suite.evaluator(self.device)
        return self._evaluator

    def cost_summary(self) -> dict:
        """The manifest's ``cost`` entry: cumulative figures, one-off costs, a generator sample's cost."""
        return {**self.cost.summary(), "sample": self.sample_cost}

    def progress(self) -> tuple[float, float]:
        """Progress and budget on the run's budget axis: kimg, or GFLOP with ``--gflop``."""
        if self.config.get("gflop") is not None:
            return self.cost.gflop, self.config["gflop"]
        return self.kimg, self.config["kimg"]

    def _optimizer(self, params, lr):
        opt = self.config["optimizer"]
        cls = torch.optim.AdamW if opt["name"] == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(), "fake": self.fake.state_dict(), "ema": self.ema.state_dict(),
            "discriminator": self.parts.discriminator.state_dict() if self.parts.discriminator is not None else None,
            "loss_weight": self.parts.loss_weight.state_dict() if self.parts.loss_weight is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_f": self.opt_f.state_dict(),
            "progress": {"step": self.step, "nimg": self.nimg, "next_eval_nimg": self.next_eval, "last_eval": self.last_eval,
                         "next_ckpt_nimg": self.next_ckpt, "next_tick_nimg": self.next_tick,
                         "wall_time": self.wall_time},
            "rng": dist_utils.gather_objects(_rng_state()),
            "pairs": self.pairs,
            "cost": {**self.cost.state_dict(), "sample": self.sample_cost},
            "log_sizes": {"stats": self.stats.size(), "metrics": self.metrics.size()} if self.rank == 0 else None,
        }

    def save(self):
        state = self.state_dict()  # every rank joins the RNG gather
        if self.rank == 0:
            checkpoint.save(self.dir, state)
            if self.train_opts.get("snapshots"):  # only two checkpoints are kept: an EMA snapshot per checkpoint
                snapshots.save(self.dir, self.nimg, self.step, state["ema"])

    def load(self, truncate_logs: bool = True) -> tuple[str, list[str]]:
        """Resume from the newest usable checkpoint of the run directory (``bench.train.checkpoint``).

        Returns the file used and the problems of the files passed over; BadInput when none is
        usable. With ``truncate_logs`` the rows logged after the checkpoint are dropped (a resumed
        run logs them again).
        """
        name, state, problems = checkpoint.load(self.dir, self.device, self._apply)
        if self.rank == 0 and truncate_logs:
            self.stats.truncate(state["log_sizes"]["stats"])
            self.metrics.truncate(state["log_sizes"]["metrics"])
        return name, problems

    def _apply(self, state: dict) -> None:
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.ema.load_state_dict(state["ema"])
        if state["discriminator"] is not None:
            self.parts.discriminator.load_state_dict(state["discriminator"])
        if state.get("loss_weight") is not None:  # checkpoints from before loss weights have none
            self.parts.loss_weight.load_state_dict(state["loss_weight"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_f.load_state_dict(state["opt_f"])
        p = state["progress"]
        self.step, self.nimg, self.wall_time_before = p["step"], p["nimg"], p["wall_time"]
        # Checkpoints written before integer schedules hold them in kimg.
        self.next_eval, self.next_ckpt, self.next_tick = (
            p[f"{key}_nimg"] if f"{key}_nimg" in p else to_nimg(p[key])
            for key in ("next_eval", "next_ckpt", "next_tick"))
        self.last_eval = p.get("last_eval")
        self.pairs = state["pairs"]
        if "cost" in state:  # checkpoints written before cost accounting start from zero
            self.cost.load_state_dict(state["cost"])
            self.sample_cost = state["cost"]["sample"]
        _set_rng_state(state["rng"][self.rank])

    # --- the loop ------------------------------------------------------------------------------
    def train(self, stop_flag) -> str:
        """Train to the budget, evaluating, checkpointing and logging on schedule.

        Returns ``done``, or ``interrupted`` (after a checkpoint) when ``stop_flag()`` turns true.
        """
        cfg = self.config
        self.session_start = time.time()
        gflop_budget = cfg.get("gflop")
        total = to_nimg(cfg["kimg"]) if gflop_budget is None else None
        eval_every, ckpt_every = to_nimg(cfg["eval_every"]), to_nimg(cfg["checkpoint_every"])
        tick_kimg = self.train_opts["tick_kimg"] or max(cfg["batch"] / 1000, (cfg["kimg"] or 0) / 50)
        # a GFLOP budget has no kimg to divide: its tick is set after the first step (see below)
        tick_every = max(1, to_nimg(tick_kimg)) if gflop_budget is None or self.train_opts["tick_kimg"] else None
        for provider in self.inputs:
            provider.prepare(self)
        bar = None
        if self.rank == 0 and not self.quiet:
            from tqdm.auto import tqdm
            so_far, budget = self.progress()
            bar = tqdm(total=budget, initial=round(so_far, 3), unit="kimg" if gflop_budget is None else "GFLOP",
                       dynamic_ncols=True, desc=f"{cfg['method']} lr={cfg['lr_g']:g}", file=sys.stderr)
        tick_start, tick_nimg0 = time.time(), self.nimg
        reset_peak_memory(self.device)
        while True:
            done = self.nimg >= total if gflop_budget is None else self.cost.flops >= gflop_budget * 1e9
            if self.rank == 0 and (self.nimg >= self.next_eval or done) and self.last_eval != [self.nimg, done]:
                evaluation.evaluate(self, final=done)
                self.last_eval = [self.nimg, done]
                self.next_eval = next_eval(self.nimg, eval_every, self.train_opts.get("eval_growth", 1.0))
            dist_utils.barrier()
            if done:
                break
            if self.nimg >= self.next_ckpt:
                self.save()
                self.next_ckpt = next_multiple(self.nimg, ckpt_every)
            if stop_flag():
                self.save()
                return "interrupted"
            flops_before, nimg_before = self.cost.flops, self.nimg
            row = training_step(self)
            check_finite(self)
            if tick_every is None and self.nimg > nimg_before:  # about 50 stats rows over the budget, as with kimg
                per_image = (self.cost.flops - flops_before) / (self.nimg - nimg_before)
                tick_every = max(cfg["batch"], round(gflop_budget * 1e9 / per_image / 50)) if per_image > 0 \
                    else cfg["batch"]
            if bar is not None:
                bar.n = min(*self.progress())  # exact progress, not a sum of float increments
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_g", "loss_fake") if k in row})
            if self.rank == 0 and self.nimg >= self.next_tick:
                elapsed = time.time() - tick_start
                self.stats.append({"kimg": round(self.kimg, 6), "step": self.step, "time_s": self.wall_time,
                                   **row, "images_per_s": (self.nimg - tick_nimg0) / max(elapsed, 1e-9),
                                   "peak_mem_mb": peak_memory_mb(self.device), **self.cost.row()})
                tick_start, tick_nimg0 = time.time(), self.nimg
                reset_peak_memory(self.device)
                self.next_tick = next_multiple(self.nimg, tick_every)
        if bar is not None:
            bar.close()
        self.save()
        return "done"


def reset_peak_memory(device) -> None:
    """Start a new peak-memory window (CUDA allocator; on Linux CPUs the process's peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM


def peak_memory_mb(device) -> float:
    """Peak memory since the last reset: CUDA allocated bytes, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy's state as a tensor and plain numbers, so the checkpoint loads weights_only
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(n if isinstance(n, tuple) else  # a tuple in checkpoints from before the tensor form
                        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
