"""Fake results folders for the results/plots/report tests (importable as ``rundirs``).

Run directories are written exactly as the run directory contract describes them, with curves from a
closed form, so tests can compute every expected number independently of ``bench.analysis.results``.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

EVAL_KIMG = (0.0, 1.0, 2.0, 3.0, 4.0)
LRS = (1e-4, 1e-5)
SEEDS = (0, 1)
N_SAMPLES = 1000
HPARAMS = {"sim": {"distance": "pseudo_huber", "huber_c": 0.03, "weighting": "paper"},
           "sid": {"alpha": 1.2, "weighting": "paper"},
           "dmd": {"regression_weight": 0.25, "weighting": "paper"}}


def fid_curve(method: str, lr: float, seed: int, kimg: float, huber_c: float | None = None) -> float:
    """The FID a fake run reports: decays from 80 to a floor that depends on method, lr and seed."""
    floor = {"sim": 4.0, "sid": 6.0, "dmd": 9.0}.get(method, 5.0) * (1.0 if lr == 1e-4 else 2.5)
    floor += 0.3 * seed + (0.0 if huber_c in (None, 0.03) else 1.5)
    return floor + (80.0 - floor) * math.exp(-kimg)


def is_curve(fid: float) -> float:
    """An Inception score that rises as FID falls."""
    return 2.0 + 8.0 / (1.0 + fid / 10.0)


def write_run(root: Path, *, suite="digits", method="sim", lr=1e-4, seed=0, batch=64, hparams=None,
              run_id=None, status="done", evals=EVAL_KIMG, values=None, diverged_at=None, torn=False,
              metrics_file=True, samples=True, raw_rows=False, n_samples=N_SAMPLES, wall_time_s=None,
              gflop_per_kimg=None, oneoff_gflop=0.0, seconds_per_kimg=None, sample_cost=None,
              suite_options=None) -> Path:
    """One run directory. ``values(kimg) -> {metric: value}`` defaults to FID and IS from the curves.

    With ``gflop_per_kimg`` the run carries cost figures: cumulative ``gflop = oneoff_gflop + kimg *
    gflop_per_kimg`` and ``train_s = kimg * seconds_per_kimg`` (default 1 s per kimg) in every metrics
    row, and the totals in the manifest; ``sample_cost`` ({"gflop_per_image", "nfe"}) the sampler's cost.
    Without them the directory looks like one written before cost accounting.
    """
    hparams = dict(HPARAMS.get(method, {}) if hparams is None else hparams)
    teacher = method == "teacher"
    run_id = run_id or (f"teacher-s{seed}" if teacher else f"{method}-lr{lr:g}-b{batch}-s{seed}-"
                        f"{zlib.crc32(json.dumps(hparams, sort_keys=True).encode()):08x}")
    if values is None:
        values = lambda k: {"fid": fid_curve(method, lr, seed, k, hparams.get("huber_c")),  # noqa: E731
                            "is": is_curve(fid_curve(method, lr, seed, k, hparams.get("huber_c")))}
    d = Path(root) / suite / run_id
    d.mkdir(parents=True)
    config = {"run_id": run_id, "suite": suite, "suite_options": suite_options or {"res": 8}, "method": method, "hparams": hparams,
              "lr_g": None if teacher else lr, "lr_fake": None if teacher else lr, "batch": None if teacher else batch,
              "batch_gpu": None if teacher else batch, "seed": seed, "kimg": 0.0 if teacher else max(evals, default=4.0),
              "eval_every": None if teacher else 1.0, "checkpoint_every": 1.0, "precision": "fp32", "device": "cpu",
              "optimizer": None if teacher else {"name": "adam", "betas": [0.0, 0.999]}}
    (d / "config.json").write_text(json.dumps(config, indent=2))
    done_kimg = diverged_at if diverged_at is not None else max(evals, default=0.0)
    manifest = {"run_id": run_id, "status": status, "git_hash": "0123456789abcdef0123456789abcdef01234567",
                "versions": {"python": "3.11.7", "torch": "2.14.1", "distill-bench": "0.1.0",
                             "torch-fidelity": "0.4.0"},
                "hardware": {"device": "cpu", "cpu": "x86_64", "gpus": [], "world_size": 1},
                "started": "2026-11-23T10:00:00+00:00", "ended": None if status == "running" else "2026-11-23T10:05:00+00:00",
                "wall_time_s": wall_time_s if wall_time_s is not None else 100.0 * done_kimg + seed,
                "kimg_done": done_kimg,
                "diverged": None if diverged_at is None else {"kimg": diverged_at, "step": 123, "reason": "non-finite loss_g"},
                "metrics": {"fid": "torch-fidelity 0.4.0 / digits-classifier", "is": "torch-fidelity 0.4.0 / digits-classifier"}}
    cost = {}
    if gflop_per_kimg is not None:
        spk = 1.0 if seconds_per_kimg is None else seconds_per_kimg
        cost = lambda k: {"gflop": oneoff_gflop + k * gflop_per_kimg, "train_s": k * spk}  # noqa: E731
        manifest["cost"] = {**cost(done_kimg), "passes": {}, "oneoff_gflop": (
            {"regression_pairs": oneoff_gflop} if oneoff_gflop else {})}
    if sample_cost is not None:
        manifest.setdefault("cost", {})["sample"] = sample_cost
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if metrics_file:
        with open(d / "metrics.jsonl", "w") as f:
            for kimg in evals:
                for metric, value in values(kimg).items():
                    for ema in ((True, False) if raw_rows and not teacher else (not teacher,)):
                        # raw rows are deliberately worse: the table must prefer the EMA ones
                        f.write(json.dumps({"kimg": kimg, "metric": metric, "value": value if ema or teacher else value * 3,
                                            "n_samples": n_samples, "ema": ema, "impl": manifest["metrics"].get(metric, "?"),
                                            "time_s": 0.5, **(cost(kimg) if cost else {})}) + "\n")
            if torn:
                f.write('{"kimg": 9.0, "metric": "fid", "val')
    with open(d / "stats.jsonl", "w") as f:
        for step in range(1, 6):
            f.write(json.dumps({"kimg": step * done_kimg / 5, "step": step, "time_s": step * 1.0, "loss_g": 1.0 / step,
                                "loss_fake": 0.5, "images_per_s": 640.0 + 10 * seed, "peak_mem_mb": 300.0}) + "\n")
    if samples:
        for kimg in evals:
            rng = np.random.default_rng(int(kimg * 10) + seed)
            grid = (rng.random((32, 32)) * 255 * (1 - 0.15 * kimg)).astype(np.uint8)
            (d / "samples").mkdir(exist_ok=True)
            Image.fromarray(grid).convert("RGB").save(d / "samples" / f"kimg{kimg:010.3f}.png")
    return d


def standard_results(root: Path) -> Path:
    """The folder most tests use.

    digits: sim, sid, dmd x lr 1e-4, 1e-5 x seeds 0, 1 (done); sim also with huber_c=0.1 (worse); a
    dmd run at lr 1e-3 that diverged at kimg 2.5, a dmd run at 1e-3 that finished; a sim run at 1e-3 still
    running (evaluated up to kimg 2); a torn last line in one run's metrics.jsonl; the teacher (FID 3.0,
    IS 9.5); a run with no metrics.jsonl yet.
    """
    root = Path(root)
    for method in ("sim", "sid", "dmd"):
        for lr in LRS:
            for seed in SEEDS:
                write_run(root, method=method, lr=lr, seed=seed, torn=(method, lr, seed) == ("sid", 1e-4, 1))
    for seed in SEEDS:
        write_run(root, method="sim", lr=1e-4, seed=seed, hparams={**HPARAMS["sim"], "huber_c": 0.1})
    write_run(root, method="dmd", lr=1e-3, seed=0, status="diverged", diverged_at=2.5, evals=(0.0, 1.0, 2.0),
              values=lambda k: {"fid": 80.0 + 100 * k, "is": 2.0})
    write_run(root, method="dmd", lr=1e-3, seed=1, values=lambda k: {"fid": 40.0 - k, "is": 3.0})
    write_run(root, method="sim", lr=1e-3, seed=0, status="running", evals=(0.0, 1.0, 2.0))
    write_run(root, method="sim", lr=1e-3, seed=1, status="running", evals=(), metrics_file=False, samples=False)
    write_run(root, method="teacher", seed=0, hparams={"sampler": "heun", "steps": 18}, evals=(0.0,),
              values=lambda k: {"fid": 3.0, "is": 9.5})
    return root


# sid costs 2.5x sim per kimg; dmd pays 5 GFLOP of regression pairs up front; seconds are twice the GFLOP
COST = {"sim": dict(gflop_per_kimg=10.0), "sid": dict(gflop_per_kimg=25.0),
        "dmd": dict(gflop_per_kimg=15.0, oneoff_gflop=5.0)}


def costed_results(root: Path) -> Path:
    """sim, sid, dmd x lr 1e-4, 1e-5 x seeds 0, 1 with the cost figures of COST, a dmd run at lr 1e-3 that
    diverged at kimg 2.5, and the teacher (FID 3.0) with its sampling cost (35 NFE, 0.07 GFLOP per image)."""
    root = Path(root)
    for method, cost in COST.items():
        for lr in LRS:
            for seed in SEEDS:
                write_run(root, method=method, lr=lr, seed=seed, seconds_per_kimg=2.0 * cost["gflop_per_kimg"], **cost)
    write_run(root, method="dmd", lr=1e-3, seed=0, status="diverged", diverged_at=2.5, evals=(0.0, 1.0, 2.0),
              values=lambda k: {"fid": 80.0 + 100 * k, "is": 2.0}, **COST["dmd"])
    write_run(root, method="teacher", seed=0, hparams={"sampler": "heun", "steps": 18}, evals=(0.0,),
              values=lambda k: {"fid": 3.0, "is": 9.5}, sample_cost={"gflop_per_image": 0.07, "nfe": 35})
    return root


def table_of(runs) -> pd.DataFrame:
    """A Contract-3 table in memory: ``runs`` yields (method, lr, batch, seed, hparams, status, {kimg: fid})."""
    rows = []
    for i, (method, lr, batch, seed, hparams, status, curve) in enumerate(runs):
        for kimg, value in curve.items():
            rows.append(dict(suite="digits", run_id=f"r{i}", method=method, lr_g=lr, lr_fake=lr, batch=batch, seed=seed,
                             kimg=float(kimg), metric="fid", value=float(value), n_samples=1000, ema=True,
                             status=status, **{f"hp_{k}": v for k, v in hparams.items()}))
    return pd.DataFrame(rows)


def measure(a, arm, batch, name):
    """The one row of an Analysis's measures for (arm, batch, measure)."""
    row = a.measures[(a.measures["arm"] == arm) & (a.measures["batch"] == batch) & (a.measures["measure"] == name)]
    assert len(row) == 1
    return row.iloc[0]


def write_few_step_runs(root):
    """sim at 1, 2 and 4 generator steps (two seeds) and the teacher at its 18 Heun steps and at 2."""
    for steps in (1, 2, 4):
        for seed in (0, 1):
            d = write_run(root, method="sim", seed=seed, run_id=f"sim-k{steps}-s{seed}",
                                  values=lambda k, s=steps: {"fid": 40.0 / s + k}, sample_cost={"gflop_per_image": 0.01 * steps, "nfe": steps})
            if steps > 1:
                config = json.loads((d / "config.json").read_text())
                config["train"] = {"steps": steps}
                (d / "config.json").write_text(json.dumps(config))
    for steps, fid in ((18, 3.0), (2, 90.0)):
        d = write_run(root, method="teacher", run_id=f"teacher-{steps}", evals=[0.0], values=lambda k, f=fid: {"fid": f},
                              sample_cost={"gflop_per_image": 0.0057 * (2 * steps - 1), "nfe": 2 * steps - 1})
        config = json.loads((d / "config.json").read_text())
        config["hparams"] = {"sampler": "heun", "steps": steps}
        (d / "config.json").write_text(json.dumps(config))
