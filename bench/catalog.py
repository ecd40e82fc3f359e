"""``bench methods`` and ``bench suites``: what the registries hold, one line each or as JSON.

The rows come from the classes themselves (a method's ``paper``, ``minimises``, ``defaults`` and
``recipe``; a suite's ``summary``), so the listing cannot drift from the code. GFLOP per kimg is a
measurement, not a property: ``bench methods --results DIR`` adds the median rate of the runs there.
"""
from __future__ import annotations

import json
import math


def method_rows(results_dir=None) -> list[dict]:
    """One dict per registered method: paper, divergence, published defaults and the recipe's key fields."""
    import methods

    rates = _gflop_per_kimg(results_dir) if results_dir else {}
    rows = []
    for name in methods.available():
        cls = methods.get(name)
        r = cls.recipe
        rows.append(dict(
            name=name, paper=cls.paper, minimises=cls.minimises, defaults=dict(cls.defaults),
            lr=r.lr, lr_fake=r.lr * r.fake_lr_ratio, sigma_init=r.sigma_init, optimizer=r.optimizer,
            betas=list(r.betas), chain=r.chain,
            fake_updates_per_generator_update=r.fake_updates_per_generator_update,
            fake_score=r.fake_score, inputs=sorted(set(r.generator_inputs) | set(r.fake_inputs)),
            published=dict(r.published), gflop_per_kimg=rates.get(name)))
    return rows


def _gflop_per_kimg(results_dir) -> dict[str, float]:
    """Median measured training GFLOP per kimg of each method's runs under ``results_dir``."""
    from .analysis.table import load_runs

    runs = load_runs(results_dir)
    if runs.empty or "gflop_per_kimg" not in runs:
        return {}
    rates = runs.dropna(subset=["gflop_per_kimg"]).groupby("method")["gflop_per_kimg"].median()
    return {m: float(v) for m, v in rates.items() if math.isfinite(v)}


def suite_rows() -> list[dict]:
    """One dict per registered suite: teacher, data, sample shape, conditioning, metrics."""
    from .suites import SUITES

    return [dict(name=name, **SUITES.get(name).summary) for name in SUITES.names()]


def _method_line(row: dict) -> str:
    defaults = ", ".join(f"{k}={v}" for k, v in row["defaults"].items()) or "-"
    rate = f"{row['gflop_per_kimg']:.4g} GFLOP/kimg" if row["gflop_per_kimg"] is not None else "GFLOP/kimg not measured"
    updates = row["fake_updates_per_generator_update"] if row["fake_score"] else "no fake score"
    lr = f"lr {row['lr']:g}" + (f" (fake score {row['lr_fake']:g})" if row["lr_fake"] != row["lr"] else "")
    chain = f", {row['chain']} chain between steps" if row["chain"] != "stochastic" else ""
    return (f"{row['name']}: {row['paper']}; minimises {row['minimises']}; {lr}, "
            f"sigma_init {row['sigma_init']:g}{chain}, fake updates per generator update {updates}; "
            f"inputs {', '.join(row['inputs']) or 'none'}; defaults {defaults}; {rate}")


def _suite_line(row: dict) -> str:
    return (f"{row['name']}: teacher {row.get('teacher', '?')}; data {row.get('data', '?')}; "
            f"shape {row.get('shape', '?')}; conditioning {row.get('conditioning', '?')}; "
            f"metrics {row.get('metrics', '?')}")


def cli_methods(args) -> int:
    """``bench methods [--json] [--results DIR]``."""
    rows = method_rows(args.results)
    print(json.dumps(rows, indent=1) if args.json else "\n".join(_method_line(r) for r in rows))
    return 0


def cli_suites(args) -> int:
    """``bench suites [--json]``."""
    rows = suite_rows()
    print(json.dumps(rows, indent=1) if args.json else "\n".join(_suite_line(r) for r in rows))
    return 0


def check_results_arg(args) -> None:
    """BadInput when ``--results`` names no directory (before torch loads)."""
    from pathlib import Path

    from .errors import BadInput

    if args.results is not None and not Path(args.results).is_dir():
        raise BadInput(f"--results {args.results}: no such directory")
