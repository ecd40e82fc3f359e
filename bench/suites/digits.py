"""The digits suite: scikit-learn's 8x8 digits, a small EDM UNet teacher trained here, a CNN feature extractor.

Everything this suite needs is trained on the CPU in a couple of minutes and cached under a
directory named by a hash of its full configuration, so it trains once per configuration:
``$BENCH_CACHE/digits`` (default ``~/.cache/distill-bench/digits``), or the ``cache_dir`` option.
Data live in [-1, 1] with shape ``[N, 1, 8, 8]``; a fixed stratified split holds out 360 images,
the reference of every metric.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .. import validate
from ..errors import BadInput
from ..metrics.images import from_uint8, to_uint8
from ..rundir import write_atomic
from ..nets.classifier import DigitClassifier
from ..nets.ema import update_ema
from ..nets.guidance import GuidedDenoiser, one_hot
from ..nets.precond import EDMPrecond, OneStepGenerator
from ..nets.unet import UNet
from .base import Parts, Suite, heun_sampler

FID_REFERENCES = ("all", "held_out")
TEACHER_REFERENCE_SEED = 7_777_777  # apart from every run's latent bank (seed + 1_000_003) and training noise
EXTRACTOR = "digits"  # the classifier's torch-fidelity extractor (bench.suites.digits_features)
DATA_SPEC = {"dataset": "sklearn.load_digits", "held_out": 360, "split_seed": 0, "scale": "x/8-1"}
CACHE_FORMAT = 2  # bump when the training code changes what a configuration produces


# --- data -------------------------------------------------------------------------------------
def load_split() -> dict[str, torch.Tensor]:
    """The fixed stratified split: ``x_train [1437,1,8,8]``, ``y_train``, ``x_held [360,1,8,8]``, ``y_held``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(8).sub(1).unsqueeze(1)  # 0..16 -> [-1, 1]
    y = torch.from_numpy(digits.target).long()
    idx_train, idx_held = train_test_split(torch.arange(len(y)).numpy(), test_size=DATA_SPEC["held_out"],
                                           stratify=y.numpy(), random_state=DATA_SPEC["split_seed"])
    idx_train, idx_held = torch.from_numpy(idx_train), torch.from_numpy(idx_held)
    return {"x_train": x[idx_train], "y_train": y[idx_train], "x_held": x[idx_held], "y_held": y[idx_held]}


def quantise(x: torch.Tensor) -> torch.Tensor:
    """What an extractor sees of ``x``: EDM's uint8 quantisation, decoded to the centre of its bin."""
    return from_uint8(to_uint8(x))


# --- the cache --------------------------------------------------------------------------------
def cache_root(option: str | None = None) -> Path:
    """``option``, else ``$BENCH_CACHE/digits``, else ``~/.cache/distill-bench/digits``."""
    if option:
        return Path(option).expanduser()
    if os.environ.get("BENCH_CACHE"):
        return Path(os.environ["BENCH_CACHE"]).expanduser() / "digits"
    return Path.home() / ".cache" / "distill-bench" / "digits"


def config_hash(config: dict) -> str:
    """Short stable hash of a JSON-able configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def cached(root: Path, kind: str, config: dict, train) -> Path:
    """``root/<kind>-<hash>/<kind>.pt``, produced by ``train() -> (state dict, info dict)`` if absent.

    A lock file makes concurrent callers (a sweep's parallel runs) wait for one training; the
    file is written to a temporary name and renamed, so a crash never leaves a torn cache entry.
    """
    directory = root / f"{kind}-{config_hash(config)}"
    path = directory / f"{kind}.pt"
    if path.exists():  # a read-only shared cache is fine once it holds the entry
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                state, info = train()
                info = {"kind": kind, "config": config, "sha256": weights_hash(state), **info}
                (directory / "info.json").write_text(json.dumps(info, indent=2) + "\n")
                write_atomic(path, lambda tmp: torch.save({"state": state, "info": info}, tmp))
    except OSError as exc:
        raise BadInput(f"cannot write the digits cache at {directory} ({exc.strerror or exc}); set BENCH_CACHE "
                       "(or suite.cache_dir) to a writable folder") from None
    return path


def load_cached(path: Path) -> tuple[dict, dict]:
    """The state dict and info of a cache entry (tensors and plain data only)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    return blob["state"], blob["info"]


def _log(message: str) -> None:
    print(f"[digits] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def reproducible(seed: int):
    """Run a training bit-reproducibly on this machine, restoring the caller's settings afterwards.

    Three things made two trainings differ: the global RNG (dropout draws from it), the number of
    intra-op threads (a CPU reduction split over 2 threads sums in another order than over 1) and
    ops without a deterministic kernel. So: the global RNG seeded, one intra-op thread (for these
    small networks also the fastest on a shared 2-core machine), deterministic algorithms on.
    Across machines the weights still differ in the last bits: other SIMD kernels (AVX2, AVX-512),
    another torch/oneDNN/MKL build or a GPU change the float summation order.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)  # CUDA ops lacking one warn instead of failing
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes: equal hashes, bit-identical weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


# --- the teacher ------------------------------------------------------------------------------
def make_denoiser(net_config: dict) -> EDMPrecond:
    """An EDM-preconditioned UNet for ``[B, 1, 8, 8]`` digits."""
    return EDMPrecond(UNet(in_channels=1, **net_config))


def train_denoiser(config: dict, x_train: torch.Tensor, device: torch.device,
                   y_train: torch.Tensor | None = None) -> tuple[dict, dict]:
    """EDM training: ``ln sigma ~ N(P_mean, P_std)``, loss weight ``(s^2+sd^2)/(s sd)^2``, Adam, EMA.

    A network with ``label_dim`` learns ``D(x, sigma, c)`` from one-hot ``y_train``, each label dropped to
    the null class (an all-zero row) with probability ``train.label_dropout``: classifier-free guidance's
    training. Returns the EMA network's state dict and a summary (final loss, wall time).
    """
    t = config["train"]
    with reproducible(t["seed"]):
        gen = torch.Generator().manual_seed(t["seed"])
        net = make_denoiser(config["net"]).to(device).train()
        ema = copy.deepcopy(net).eval().requires_grad_(False)
        opt = torch.optim.Adam(net.parameters(), lr=t["lr"], betas=(0.9, 0.999), eps=1e-8)
        steps = max(1, round(t["kimg"] * 1000 / t["batch"]))
        warmup = max(1, int(steps * t["warmup_fraction"]))
        sd = net.sigma_data
        start, running = time.time(), None
        for step in range(steps):
            idx = torch.randint(0, len(x_train), (t["batch"],), generator=gen)
            y = x_train[idx].to(device)
            sigma = (torch.randn(t["batch"], generator=gen) * t["p_std"] + t["p_mean"]).exp().to(device)
            noise = torch.randn(y.shape, generator=gen).to(device)
            cond = None
            if config["net"].get("label_dim"):  # unconditional teachers draw nothing more: unchanged
                keep = torch.rand(t["batch"], generator=gen) >= t["label_dropout"]
                cond = (one_hot(y_train[idx], config["net"]["label_dim"]) * keep[:, None]).to(device)
            weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2).reshape(-1, 1, 1, 1)
            loss = (weight * (net(y + sigma.reshape(-1, 1, 1, 1) * noise, sigma, cond) - y).square()).mean()
            for group in opt.param_groups:
                group["lr"] = t["lr"] * min(1.0, (step + 1) / warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            update_ema(ema, net, t["batch"], (step + 1) * t["batch"], t["ema_halflife_kimg"], t["ema_rampup"])
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if (step + 1) % max(1, steps // 10) == 0:
                _log(f"teacher step {step + 1}/{steps} loss {running:.4f} ({time.time() - start:.0f} s)")
        return ({k: v.cpu() for k, v in ema.state_dict().items()},
                {"steps": steps, "final_loss": running, "train_time_s": round(time.time() - start, 2)})


# --- the classifier (feature extractor) ---------------------------------------------------------
def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translations by up to ``max_shift`` pixels, background-padded (augmentation)."""
    b, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, b, 1), generator=gen)
    rows, cols = dy + torch.arange(h), dx + torch.arange(w)  # [B, H], [B, W]
    out = padded[torch.arange(b)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2)


def classifier_accuracy(net: DigitClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy on quantised inputs, as the extractor sees them."""
    net.eval()
    with torch.no_grad():
        return (net(quantise(x))[1].argmax(1) == y).float().mean().item()


def train_classifier(config: dict, data: dict) -> tuple[dict, dict]:
    """Cross-entropy with shift augmentation on the training split; reports held-out accuracy."""
    t = config["train"]
    with reproducible(t["seed"]):
        gen = torch.Generator().manual_seed(t["seed"])
        net = DigitClassifier(**config["net"])
        opt = torch.optim.Adam(net.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        x, y = data["x_train"], data["y_train"]
        steps = t["epochs"] * math.ceil(len(x) / t["batch"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t["lr"], total_steps=steps)
        start = time.time()
        for _ in range(t["epochs"]):
            net.train()
            for idx in torch.randperm(len(x), generator=gen).split(t["batch"]):
                loss = F.cross_entropy(net(quantise(_shift(x[idx], gen)))[1], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        accuracy = classifier_accuracy(net, data["x_held"], data["y_held"])
        _log(f"classifier held-out accuracy {accuracy:.4f} ({time.time() - start:.1f} s)")
        return net.state_dict(), {"held_out_accuracy": accuracy, "train_time_s": round(time.time() - start, 2)}


def load_classifier(path: Path) -> DigitClassifier:
    """The cached classifier, in eval mode."""
    state, info = load_cached(path)
    net = DigitClassifier(**info["config"]["net"])
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


# --- the suite --------------------------------------------------------------------------------
class DigitsSuite(Suite):
    """Unconditional 8x8 digits: EDM UNet teacher trained here; generator and fake score copy it."""

    name = "digits"
    summary = {
        "teacher": "EDM UNet trained here on the CPU (cached by its configuration's hash)",
        "data": "scikit-learn's 8x8 digits (1,797)",
        "shape": "1x8x8",
        "conditioning": "none",
        "metrics": "fid, is, kid, precision, recall, fd_teacher, prdc_precision, prdc_recall, density, coverage, vendi, class_balance (digits classifier features)",
    }
    defaults = {
        # teacher network and its training (all part of the teacher's cache key)
        "channels": 16, "channel_mult": [1, 2], "blocks": 1, "attention": False,
        "teacher_kimg": 256, "teacher_batch": 128, "teacher_lr": 2e-3, "teacher_ema_halflife_kimg": 10.0,
        "teacher_seed": 0,
        # the teacher's own sampler (the baseline row)
        "teacher_steps": 18,
        # classifier (feature extractor)
        "classifier_epochs": 20, "classifier_seed": 0,
        # evaluation
        # evaluation: a cheap count during training, a less noisy one at the end; FID against all 1,797
        # digits (as CIFAR-10 FIDs use the training set) or the 360 held out; FD to 10k teacher samples
        "n_eval": 2000, "n_eval_final": 10000, "fid_reference": "all", "n_teacher_reference": 10000,
        "kid_subset_size": 300,
        "cache_dir": None,
    }

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        for key in ("channels", "blocks", "teacher_kimg", "teacher_batch", "teacher_steps", "classifier_epochs",
                    "n_eval", "n_eval_final", "kid_subset_size"):
            validate.positive(self.option_name(key), o[key], integer=True)
        for key in ("teacher_lr", "teacher_ema_halflife_kimg"):
            validate.positive(self.option_name(key), o[key])
        for key in ("teacher_seed", "classifier_seed"):
            validate.non_negative(self.option_name(key), o[key], integer=True)
        validate.non_negative(self.option_name("n_teacher_reference"), o["n_teacher_reference"], integer=True)
        validate.choice(self.option_name("fid_reference"), o["fid_reference"], FID_REFERENCES)
        for m in o["channel_mult"]:
            validate.positive(self.option_name("channel_mult"), m, integer=True)
        self._data = None

    # configuration ------------------------------------------------------------------------
    def teacher_config(self) -> dict:
        """Everything that determines the teacher's weights (its cache key)."""
        o = self.options
        return {
            "format": CACHE_FORMAT, "data": DATA_SPEC,
            "net": {"channels": int(o["channels"]), "channel_mult": [int(m) for m in o["channel_mult"]],
                    "blocks": int(o["blocks"]), "attention": bool(o["attention"])},
            "train": {"kimg": float(o["teacher_kimg"]), "batch": int(o["teacher_batch"]), "lr": float(o["teacher_lr"]),
                      "ema_halflife_kimg": float(o["teacher_ema_halflife_kimg"]), "ema_rampup": 0.05,
                      "warmup_fraction": 0.05, "p_mean": -1.2, "p_std": 1.2, "seed": int(o["teacher_seed"])},
        }

    def classifier_config(self) -> dict:
        """Everything that determines the classifier's weights (its cache key)."""
        o = self.options
        return {
            "format": CACHE_FORMAT, "data": DATA_SPEC,
            "net": {"channels": 32, "feature_dim": 64, "classes": 10, "dropout": 0.2},
            "train": {"epochs": int(o["classifier_epochs"]), "batch": 64, "lr": 3e-3, "weight_decay": 1e-4,
                      "seed": int(o["classifier_seed"])},
        }

    @property
    def data(self) -> dict[str, torch.Tensor]:
        if self._data is None:
            self._data = load_split()
        return self._data

    @property
    def root(self) -> Path:
        return cache_root(self.options["cache_dir"])

    # training and loading ----------------------------------------------------------------------
    def train_teacher(self, device: torch.device) -> Path:
        """Train (or find cached) the teacher and the classifier; the teacher's cache path."""
        path = self._teacher_path(device)
        classifier = self.train_classifier()
        info = load_cached(classifier)[1]
        _log(f"teacher {path} (sha256 {load_cached(path)[1].get('sha256', '?')[:12]})")
        _log(f"classifier {classifier} (held-out accuracy {info['held_out_accuracy']:.4f}, "
             f"sha256 {info.get('sha256', '?')[:12]})")
        return path

    def train_classifier(self) -> Path:
        """Train (or find cached) the feature-extractor classifier; its cache path."""
        config = self.classifier_config()
        return cached(self.root, "classifier", config, lambda: train_classifier(config, self.data))

    def _teacher_path(self, device: torch.device) -> Path:
        config = self.teacher_config()
        return cached(self.root, "teacher", config,
                      lambda: train_denoiser(config, self.data["x_train"], device, self.data["y_train"]))

    def load_teacher(self, device: torch.device) -> EDMPrecond:
        """The cached teacher (trained first if absent), frozen, in eval mode."""
        state, info = load_cached(self._teacher_path(device))
        teacher = make_denoiser(info["config"]["net"])
        teacher.load_state_dict(state)
        return teacher.to(device).eval().requires_grad_(False)

    # the Suite interface -----------------------------------------------------------------------
    @property
    def latent_shape(self):
        return (1, 8, 8)

    def build(self, sigma_init, device):
        teacher = self.load_teacher(device)
        student = lambda: copy.deepcopy(teacher).train().requires_grad_(True)  # noqa: E731
        return Parts(teacher=teacher, generator=OneStepGenerator(student(), sigma_init), fake=student())

    def real_data(self, n, generator):
        x = self.data["x_train"]
        return x[torch.randint(0, len(x), (n,), generator=generator)], None

    def teacher_sample(self, teacher, z, cond=None, steps=None):
        return heun_sampler(teacher, z, cond, steps=int(steps or self.options["teacher_steps"]))

    def teacher_info(self, steps=None) -> dict[str, Any]:
        return {"sampler": "heun", "steps": int(steps or self.options["teacher_steps"])}

    def evaluator(self, device):
        """FID, IS, KID and precision/recall against the digits, PRDC coverage and density against the same
        digits, the Vendi score and class balance, and FD to the teacher's samples, all with the classifier's
        features (2k samples during training, 10k at the end by default)."""
        from ..metrics.base import Combined, Renamed
        from ..metrics.diversity import DiversityEvaluator
        from ..metrics.fidelity import FidelityEvaluator

        o = self.options
        n, n_final = int(o["n_eval"]), max(int(o["n_eval"]), int(o["n_eval_final"]))
        real, _ = self.fid_reference()
        common = dict(extractor=EXTRACTOR, extractor_options={"path": self.train_classifier()}, device=device,
                      n_samples=n, n_final=n_final)
        data = FidelityEvaluator(
            reference=to_uint8(real), reference_key=f"digits-{o['fid_reference']}", metrics=("fid", "is", "kid", "prc"),
            kid_subset_size=min(int(o["kid_subset_size"]), n, real.shape[0]), **common)
        # mode coverage beside FID: the same reference and feature space; class balance through the logits
        diversity = DiversityEvaluator(reference=to_uint8(real), extractor=EXTRACTOR, device=device,
                                       extractor_options=common["extractor_options"], n_samples=n, n_final=n_final)
        n_teacher = int(o["n_teacher_reference"])
        if not n_teacher:
            return Combined(data, diversity, n_final=n_final)
        key = self.teacher_reference_key(device)
        to_teacher = FidelityEvaluator(reference=lambda: self.teacher_reference(device, n_teacher), reference_key=key,
                                       reference_size=n_teacher, metrics=("fid",), **common)
        return Combined(data, diversity, Renamed(to_teacher, {"fid": "fd_teacher"}), n_final=n_final)

    def fid_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The digits FID is measured against (``suite.fid_reference``: all, or the held-out split) and their labels."""
        if self.options["fid_reference"] == "held_out":
            return self.data["x_held"], self.data["y_held"]
        return (torch.cat([self.data["x_train"], self.data["x_held"]]),
                torch.cat([self.data["y_train"], self.data["y_held"]]))

    def teacher_reference_key(self, device: torch.device) -> str:
        """What names the teacher's reference samples in the caches: its weights, guidance, sampler, count, seed."""
        o = self.options
        teacher_sha = load_cached(self._teacher_path(device))[1].get("sha256", "")[:16]
        return (f"digits-teacher-{teacher_sha}{self.reference_tag()}-heun{int(o['teacher_steps'])}"
                f"-n{int(o['n_teacher_reference'])}-seed{TEACHER_REFERENCE_SEED}")

    def reference_tag(self) -> str:
        """What besides the teacher's weights decides its reference samples (a conditional suite's guidance)."""
        return ""

    def reference_cond(self, n: int):
        """The conditioning of the teacher's reference samples (None: unconditional)."""
        return None

    @torch.no_grad()
    def teacher_reference(self, device: torch.device, n: int, batch: int = 1000) -> torch.Tensor:
        """``n`` uint8 samples of the teacher's own sampler on latents of their own seed (no run's latents),
        drawn once per suite object (several caches are made from them)."""
        memo = self.__dict__.setdefault("_teacher_reference", {})
        if n not in memo:
            memo[n] = self._draw_teacher_reference(device, n, batch)
        return memo[n]

    def _draw_teacher_reference(self, device: torch.device, n: int, batch: int) -> torch.Tensor:
        teacher = self.load_teacher(device)
        gen = torch.Generator().manual_seed(TEACHER_REFERENCE_SEED)
        z = torch.randn(n, *self.latent_shape, generator=gen)
        cond = self.reference_cond(n)
        _log(f"drawing {n} teacher samples for the FD-to-teacher reference (once per teacher)")
        return torch.cat([to_uint8(self.teacher_sample(teacher, z[i:i + batch].to(device),
                                                       None if cond is None else cond[i:i + batch].to(device)
                                                       ).float().cpu())
                          for i in range(0, n, batch)])
