"""Evaluation: the fixed latent bank, sample generation, the teacher's baseline row, metric rows.

Every method and the teacher are scored on the same latents of a seed, through one row writer.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import distributed as dist_utils
from .. import suites
from .cost import sampling_cost
from ..rundir import JsonlLog, record_metric_impls
from .step import Diverged
from ..suites.base import slice_cond, to_device

EVAL_SEED_OFFSET = 1_000_003  # the latent bank of seed s is drawn from s + this, apart from training noise


FINAL_SEED_OFFSET = 2_000_003  # the final evaluation's extra latents beyond the training-time count


def latent_bank(suite, seed: int, n: int, n_final: int | None = None):
    """The fixed evaluation latents (and conditioning) of a seed: the same for every method.

    With ``n_final > n`` the bank has ``n_final`` entries whose first ``n`` are exactly the ``n``-bank,
    so the final evaluation's smaller count scores the same latents as every evaluation before it.
    """
    gen = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
    z = torch.randn(n, *suite.latent_shape, generator=gen)
    cond = suite.sample_cond(n, gen)
    if n_final is None or n_final <= n:
        return z, cond
    extra_z, extra_cond = _extra_bank(suite, seed, n_final - n)
    return torch.cat([z, extra_z]), _cat_cond(cond, extra_cond)


def _extra_bank(suite, seed: int, n: int):
    gen = torch.Generator().manual_seed(seed + FINAL_SEED_OFFSET)
    return torch.randn(n, *suite.latent_shape, generator=gen), suite.sample_cond(n, gen)


def _cat_cond(a, b):
    """Two conditionings one after the other (None, a tensor, a list, or a dict of those)."""
    if a is None:
        return None
    if torch.is_tensor(a):
        if a.ndim >= 2 and a.shape[1] != b.shape[1]:  # text embeddings (and masks) of two lengths: pad, masked
            from ..nets.vp import pad_sequence

            length = max(a.shape[1], b.shape[1])
            a, b = pad_sequence(a, length), pad_sequence(b, length)
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: _cat_cond(a[k], b[k]) for k in a}
    return list(a) + list(b)


def eval_counts(run, evaluator) -> tuple[int, int]:
    """(samples per evaluation during training, samples at the final one): train options, else the suite's."""
    n = run.train_opts.get("n_eval") or evaluator.n_samples
    return n, max(n, run.train_opts.get("n_eval_final") or evaluator.n_final)


CHAIN_NOISE_SEED = 3_000_017  # a multi-step generator's re-noising at evaluation, apart from training noise


@torch.no_grad()
def generate(sample, z, cond, device, batch: int = 256, seed: int = 0) -> torch.Tensor:
    """``sample(z, cond)`` in chunks of ``batch`` on ``device``; float32 samples on the CPU.

    The noise a multi-step generator draws between its steps comes from a generator seeded with
    ``seed``, so every evaluation of a run sees the same chain noise, and the training streams are left
    as they were (a one-step generator draws nothing)."""
    out = []
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(CHAIN_NOISE_SEED + seed)
        for i in range(0, z.shape[0], batch):
            out.append(sample(z[i:i + batch].to(device), to_device(slice_cond(cond, i, i + batch), device)).float().cpu())
    return torch.cat(out)


def measure(evaluator, samples: torch.Tensor, cond, n: int) -> list:
    """The measurements of the first ``n`` samples, then of all of them when there are more."""
    measured = evaluator.evaluate(samples[:n], slice_cond(cond, 0, n))
    if samples.shape[0] > n:
        measured += evaluator.evaluate(samples, cond)
    return measured


ROW_KEY = ("kimg", "metric", "n_samples", "ema")  # a metrics.jsonl row is unique on these


def measurement_rows(measurements, kimg: float, ema: bool, started: float, cost: dict | None = None) -> list[dict]:
    """One metrics.jsonl row per measurement (Contract 2), with the run's cumulative ``cost``."""
    return [{"kimg": round(kimg, 6), "metric": m.metric, "value": m.value, "n_samples": m.n_samples,
             "ema": ema, "impl": m.impl, "time_s": time.time() - started, **(cost or {}),
             **({"detail": m.detail} if getattr(m, "detail", None) else {})} for m in measurements]


def log_measurements(log: JsonlLog, measurements, kimg: float, ema: bool, started: float,
                     cost: dict | None = None) -> None:
    """Append one metrics.jsonl row per measurement."""
    for row in measurement_rows(measurements, kimg, ema, started, cost):
        log.append(row)


def save_samples(samples: torch.Tensor, path: Path, n: int = 64, mirror=None, kimg: float = 0.0) -> None:
    """A PNG grid of the first ``n`` samples (image suites only), handed to the run's ``mirror`` if any."""
    if samples.ndim != 4:
        return
    from ..metrics.images import save_grid, to_uint8

    path.parent.mkdir(exist_ok=True)
    save_grid(to_uint8(samples[:n]), path)
    if mirror is not None:
        mirror.grid(path, kimg)


def _grid_path(directory: Path, kimg: float) -> Path:
    return directory / "samples" / f"kimg{kimg:010.3f}.png"


def evaluate(run, rescore: bool = False, final: bool = False) -> list[dict]:
    """Evaluate a run's EMA generator (and the raw one if asked) on the latent bank; log and grid.

    The ``final`` evaluation scores the training-time count first (the curve stays on one count),
    then the larger final count when the suite asks for one. Returns the rows logged. With ``rescore``
    (``bench eval``) they replace earlier rows of the same (kimg, metric, n_samples, ema) instead of
    being appended beside them.
    """
    evaluator = run.evaluator()
    n, n_final = eval_counts(run, evaluator)
    z, cond = latent_bank(run.suite, run.config["seed"], n, n_final if final else None)
    if run.sample_cost is None:  # one generator image's cost, beside the teacher's multi-step one
        probe = min(64, z.shape[0])
        run.sample_cost = sampling_cost(
            {"generator": run.ema.denoiser}, lambda: generate(run.ema, z[:probe], slice_cond(cond, 0, probe), run.device),
            probe, "generator")
        run.sample_cost.pop("samples")
    nets = [(True, run.ema)] + ([(False, run.generator)] if run.train_opts["eval_raw"] else [])
    rows = []
    for ema, net in nets:
        started = time.time()
        samples = generate(net, z, cond, run.device, run.train_opts.get("eval_batch", 256), run.config["seed"])
        if not torch.isfinite(samples).all():
            raise Diverged("non-finite generator sample")
        new = measurement_rows(measure(evaluator, samples, cond, n), run.kimg, ema, started, run.cost.row())
        if not rescore:
            for row in new:
                run.metrics.append(row)
        rows += new
        if ema:
            save_samples(run.suite.to_images(samples[:64]), _grid_path(run.dir, run.kimg),
                         mirror=getattr(run, "mirror", None), kimg=run.kimg)
    if rescore:
        run.metrics.replace(rows, ROW_KEY)
    record_metric_impls(run.dir)
    return rows


class TeacherRun:
    """The teacher's own multi-step sampler on the seed's latent bank, logged at kimg 0."""

    kimg, step = 0.0, 0

    def __init__(self, config: dict, device: torch.device):
        self.config, self.device = config, device
        self.suite = suites.create(config["suite"], **config["suite_options"])
        self.teacher = self.suite.load_teacher(device).eval().requires_grad_(False)
        self.evaluator = self.suite.evaluator(device)
        self.started = time.time()
        self.sample_cost = None  # the multi-step sampler's cost per image: NFE x forward GFLOP

    @property
    def wall_time(self) -> float:
        return time.time() - self.started

    def attach(self, directory: Path) -> None:
        """Write into ``directory`` from now on (rank 0 keeps the log)."""
        self.dir = Path(directory)
        self.mirror = None
        self.metrics = JsonlLog(self.dir / "metrics.jsonl") if dist_utils.rank() == 0 else None

    def cost_summary(self) -> dict:
        """The manifest's ``cost`` entry: what one sample of the teacher's sampler costs."""
        return {"sample": self.sample_cost}

    def train(self, stop_flag) -> str:
        if dist_utils.rank() != 0:
            return "done"
        n, n_final = self.evaluator.n_samples, self.evaluator.n_final
        z, cond = latent_bank(self.suite, self.config["seed"], n, n_final)
        started = time.time()
        self.sample_cost = sampling_cost(
            {"teacher": self.teacher},
            lambda: generate(lambda z_, c_: self.suite.teacher_sample(self.teacher, z_, c_, self.config["hparams"].get("steps")),
                             z, cond, self.device),
            z.shape[0], "teacher")
        samples = self.sample_cost.pop("samples")
        log = self.metrics
        log.truncate(0)  # a teacher row is evaluated in one go: an interrupted attempt starts over
        log_measurements(log, measure(self.evaluator, samples, cond, n), 0.0, False, started)
        save_samples(self.suite.to_images(samples[:64]), _grid_path(self.dir, 0.0), mirror=self.mirror)
        record_metric_impls(self.dir)
        return "done"
