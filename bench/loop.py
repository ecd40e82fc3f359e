"""The training loop of one run: networks, optimisers, EMA, progress in images, checkpoints.

Progress is an integer image count ``nimg`` (EDM's ``cur_nimg``); the schedules in config.json are
in kimg and become integer image counts here, so no comparison needs a tolerance.
"""
from __future__ import annotations

import contextlib
import copy
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

import methods

from . import distributed as dist_utils
from . import evaluation, inputs, suites
from .rundir import JsonlLog, save_torch_atomic
from .step import check_finite, training_step


def to_nimg(kimg: float) -> int:
    """A duration in kimg as a whole number of images."""
    return round(kimg * 1000)


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
        self.parts.teacher.eval().requires_grad_(False)
        self.generator, self.fake = self.parts.generator, self.parts.fake
        self.pairs = None
        for provider in self.inputs:
            provider.build(self)
        self.ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.opt_g = self._optimizer(self.generator.parameters(), config["lr_g"])
        fake_params = list(self.fake.parameters())
        if self.parts.discriminator is not None:
            fake_params += [p for p in self.parts.discriminator.parameters() if all(p is not q for q in fake_params)]
        self.fake_params = fake_params
        self.opt_f = self._optimizer(fake_params, config["lr_fake"])
        self.step, self.nimg = 0, 0
        self.next_eval, self.next_ckpt, self.next_tick = 0, to_nimg(config["checkpoint_every"]), 0
        self.wall_time_before = 0.0  # seconds spent in earlier sessions of this run (resumes)
        self.session_start = time.time()
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if device.type == "cuda" and config["precision"] == "bf16" else contextlib.nullcontext())
        if device.type == "cuda":
            tf32 = config["precision"] == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            if self.train_opts.get("channels_last"):  # faster convolutions with tensor cores
                for net in (self.parts.teacher, self.generator, self.fake, self.ema):
                    net.to(memory_format=torch.channels_last)
        _seed_everything(config["seed"] * 7919 + self.rank)  # training noise differs across processes
        self.dir = self.stats = self.metrics = self._evaluator = None

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

    def _optimizer(self, params, lr):
        opt = self.config["optimizer"]
        cls = torch.optim.AdamW if opt["name"] == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=tuple(opt["betas"]), eps=opt["eps"], weight_decay=opt["weight_decay"])

    # --- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(), "fake": self.fake.state_dict(), "ema": self.ema.state_dict(),
            "discriminator": self.parts.discriminator.state_dict() if self.parts.discriminator is not None else None,
            "opt_g": self.opt_g.state_dict(), "opt_f": self.opt_f.state_dict(),
            "progress": {"step": self.step, "nimg": self.nimg, "next_eval_nimg": self.next_eval,
                         "next_ckpt_nimg": self.next_ckpt, "next_tick_nimg": self.next_tick,
                         "wall_time": self.wall_time},
            "rng": dist_utils.gather_objects(_rng_state()),
            "pairs": self.pairs,
            "log_sizes": {"stats": self.stats.size(), "metrics": self.metrics.size()} if self.rank == 0 else None,
        }

    def save(self):
        state = self.state_dict()  # every rank joins the RNG gather
        if self.rank == 0:
            save_torch_atomic(self.dir / "state.pt", state)

    def load(self, path: Path):
        state = torch.load(path, map_location=self.device, weights_only=False)  # our own file
        self.generator.load_state_dict(state["generator"])
        self.fake.load_state_dict(state["fake"])
        self.ema.load_state_dict(state["ema"])
        if state["discriminator"] is not None:
            self.parts.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_f.load_state_dict(state["opt_f"])
        p = state["progress"]
        self.step, self.nimg, self.wall_time_before = p["step"], p["nimg"], p["wall_time"]
        # Checkpoints written before integer schedules hold them in kimg.
        self.next_eval, self.next_ckpt, self.next_tick = (
            p[f"{key}_nimg"] if f"{key}_nimg" in p else to_nimg(p[key])
            for key in ("next_eval", "next_ckpt", "next_tick"))
        self.pairs = state["pairs"]
        _set_rng_state(state["rng"][self.rank])
        if self.rank == 0:  # drop rows logged after this checkpoint: they will be logged again
            self.stats.truncate(state["log_sizes"]["stats"])
            self.metrics.truncate(state["log_sizes"]["metrics"])

    # --- the loop ------------------------------------------------------------------------------
    def train(self, stop_flag) -> str:
        """Train to the budget, evaluating, checkpointing and logging on schedule.

        Returns ``done``, or ``interrupted`` (after a checkpoint) when ``stop_flag()`` turns true.
        """
        cfg = self.config
        self.session_start = time.time()
        total = to_nimg(cfg["kimg"])
        eval_every, ckpt_every = to_nimg(cfg["eval_every"]), to_nimg(cfg["checkpoint_every"])
        tick_kimg = self.train_opts["tick_kimg"] or max(cfg["batch"] / 1000, cfg["kimg"] / 50)
        tick_every = max(1, to_nimg(tick_kimg))
        for provider in self.inputs:
            provider.prepare(self)
        bar = None
        if self.rank == 0 and not self.quiet:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg["kimg"], initial=round(self.kimg, 3), unit="kimg", dynamic_ncols=True,
                       desc=f"{cfg['method']} lr={cfg['lr_g']:g}", file=sys.stderr)
        tick_start, tick_nimg0 = time.time(), self.nimg
        reset_peak_memory(self.device)
        while True:
            done = self.nimg >= total
            if self.rank == 0 and (self.nimg >= self.next_eval or done):
                evaluation.evaluate(self)
                self.next_eval = next_multiple(self.nimg, eval_every)
            dist_utils.barrier()
            if done:
                break
            if self.nimg >= self.next_ckpt:
                self.save()
                self.next_ckpt = next_multiple(self.nimg, ckpt_every)
            if stop_flag():
                self.save()
                return "interrupted"
            row = training_step(self)
            check_finite(self)
            if bar is not None:
                bar.n = min(self.kimg, cfg["kimg"])  # exact kimg, not a sum of float increments
                bar.set_postfix(loss_g=f"{row['loss_g']:.3g}", loss_fake=f"{row['loss_fake']:.3g}")
            if self.rank == 0 and self.nimg >= self.next_tick:
                elapsed = time.time() - tick_start
                self.stats.append({"kimg": round(self.kimg, 6), "step": self.step, "time_s": self.wall_time,
                                   **row, "images_per_s": (self.nimg - tick_nimg0) / max(elapsed, 1e-9),
                                   "peak_mem_mb": peak_memory_mb(self.device)})
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
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
