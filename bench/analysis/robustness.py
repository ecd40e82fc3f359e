"""Hyperparameter robustness with uncertainty: the measures of the digits study and its verdict.

Input: the results table of ``bench.results.load`` (Contract 3). Pandas and NumPy only, no torch.

An *arm* is a method with one setting of its own hyperparameters: each method's most-run setting
is named after the method (``sim``), any other after its differences (``sim d_term=False``). A
run's *final value* is its last evaluation of the metric (EMA preferred). The learning-rate *curve*
of an arm at one batch size is the mean over seeds of the final value at each learning rate.

Definitions (one place; the report and README quote ``DEFINITIONS``):
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import BadInput
from ..metrics import registry as metric_registry
from .leaderboard import metric_per_suite
from .table import curves, direction, failed_by_rule, final_values, is_reference, on_training_count


DEFINITIONS = {
    "tolerance": "learning-rate tolerance: the width, in decades of learning rate, of the part of the "
                 "grid where an arm's learning-rate curve at one batch size (interpolated linearly in log "
                 "lr and log value) is within the stated factor (default 2x) of that curve's own best "
                 "point. Wider is more robust; it cannot exceed the grid's span and is 0 when only the "
                 "best lr is within it. Defined for positive metrics (FID, IS, ...).",
    "best": "best value: the best point of the learning-rate curve, and the learning rate that reached it.",
    "spread": "spread: log10(worst / best) over the grid's points for positive metrics (0.3 means the "
              "worst learning rate is 2x worse), worst minus best otherwise. Lower is more robust.",
    "area": "area: the area under the quality-vs-budget curve divided by the budget, i.e. the metric's "
            "mean over training (trapezoids in kimg), averaged over the grid. Lower is better for "
            "lower-is-better metrics: it rewards converging fast and staying there.",
    "failure": "failure rate: the fraction of runs that failed. A run has failed when its metric became "
               "non-finite (it diverged; it then counts with its value at the start of training), when it "
               "ends worse than it started, or when it ends more than 2x worse than the best value it "
               "reached (a run that improved and then collapsed). Start, best and end are read on the "
               "training-time sample count, on the same latents, so sampling noise does not enter the "
               "comparison.",
    "edge": "stable edge: the largest learning rate of the grid at which, and at every smaller one, no seed "
            "of the arm failed (per batch size; 'all' takes the smallest over batch sizes). Shown as '>= "
            "top' when nothing failed (the grid, not the method, bounds it) and '< bottom' when the smallest "
            "learning rate already failed. Its interval is the bootstrap over seeds: a resample that leaves "
            "out a failed seed moves the edge up.",
    "batch": "per batch size, or 'all': tolerance and area averaged over batch sizes, best, spread and "
             "failure over every (lr, batch) cell.",
    "interval": "95% interval: percentile bootstrap over seeds (2000 resamples of the seed list, the "
                "same resample for every arm and cell, since seeds share their latents), so "
                "differences between arms are paired. With three seeds an interval is coarse: read "
                "overlap as 'not resolved', not as 'equal'.",
    "pairwise": "pairwise difference at one (lr, batch): arm A's final value minus arm B's, per seed, "
                "mean over seeds, with a paired bootstrap interval.",
    "flatness": "flatness at each arm's best learning rate (per batch size): the change over the last "
                "quarter of the budget that each run's trend implies: the least-squares slope of log10 of the "
                "metric against the fraction of the budget, fitted to the evaluations of the run's second half "
                "(at least its last two), times 0.25; averaged over seeds and shown as a relative change "
                "(positive: still improving). A trend, since one evaluation moves from the next by more than "
                "the curve does late in training. A curve has flattened when that change is within 10%; a "
                "budget whose curves have not flattened measures speed of convergence as much as robustness.",
}


__doc__ += "\n".join(f"- {text}" for text in DEFINITIONS.values()) + "\n"


MEASURES = ("tolerance", "best", "spread", "area", "failure", "edge")


FLAT = {"fit_from": 0.5, "last": 0.25, "within": 0.10}


def _arm_labels(runs: pd.DataFrame) -> pd.Series:
    """Per run: its method, plus the hyperparameters where it differs from the method's most-run setting."""
    labels = pd.Series(runs["method"].values, index=runs.index, dtype=object)
    for method, g in runs.groupby("method"):
        hp = [c for c in g.columns if c.startswith("hp_") and g[c].notna().any()]
        settings = pd.Series([tuple("" if pd.isna(v) else str(v) for v in r) for r in g[hp].itertuples(index=False)],
                             index=g.index)
        common = settings.value_counts(sort=True).index[0]
        for i, setting in settings.items():
            diff = [f"{c[3:]}={v}" for c, v, base in zip(hp, setting, common) if v != base]
            if diff:
                labels[i] = f"{method} {' '.join(diff)}"
    return labels


def run_matrix(table: pd.DataFrame, suite: str, metric: str) -> pd.DataFrame:
    """One row per one-step run of ``suite``: arm, method, lr, batch, seed, diverged, failed, final, area, trend.

    ``final`` is the final evaluation at the largest sample count every run has there
    (``final_values``; the start value for a diverged run); ``area`` the metric's mean over the
    evaluated budget and ``trend`` the change over the last ``FLAT["last"]`` of the budget its late
    slope implies (``late_trend``; NaN for a diverged run), both on the training-time count, as is
    the failure rule (``failed``, see DEFINITIONS["failure"]). Runs whose process failed are left out.
    """
    t = table[(table["suite"] == suite) & (table["metric"] == metric) & ~is_reference(table["method"])
              & (table["status"] != "failed")]
    c = curves(on_training_count(t)).dropna(subset=["value"])
    runs = pd.DataFrame(columns=["run_id", "method", "lr", "batch", "seed", "diverged", "failed", "final", "area",
                                 "trend"])
    if not c.empty:
        by = c.groupby("run_id", sort=True)
        first, last = by.head(1).set_index("run_id"), by.tail(1).set_index("run_id")
        step = by["kimg"].diff()
        trapezoids = (step * (c["value"] + by["value"].shift()) / 2).groupby(c["run_id"]).sum()
        span = last["kimg"] - first["kimg"]
        area = (trapezoids.reindex(first.index) / span).where(span > 0, last["value"])
        diverged = first["status"] == "diverged"
        info = metric_registry.info(metric)
        failed = failed_by_rule(c, metric).reindex(first.index)
        final = final_values(t).set_index("run_id")["value"].reindex(first.index).fillna(last["value"])
        trend = {run: late_trend(g["kimg"].to_numpy(float), g["value"].to_numpy(float), info.positive) for run, g in by}
        runs = pd.DataFrame({
            "run_id": first.index, "method": first["method"].values, "lr": first["lr_g"].astype(float).values,
            "batch": first["batch"].astype(int).values, "seed": first["seed"].astype(int).values,
            "diverged": diverged.values, "failed": failed.values,
            "final": first["value"].where(diverged, final).astype(float).values,
            "area": first["value"].where(diverged, area).astype(float).values,
            "trend": pd.Series(trend).reindex(first.index).where(~diverged).astype(float).values})
    if runs.empty:
        return runs.assign(arm=pd.Series(dtype=object))
    hp = table.drop_duplicates("run_id").set_index("run_id").filter(like="hp_").reindex(runs["run_id"])
    hp = hp.loc[:, hp.notna().any()]
    with_hp = pd.concat([runs.reset_index(drop=True), hp.reset_index(drop=True)], axis=1)
    runs["arm"] = _arm_labels(with_hp).values
    return runs


def late_trend(kimg: np.ndarray, value: np.ndarray, positive: bool) -> float:
    """The change over the last ``FLAT["last"]`` of a run's budget that its late slope implies: least squares
    of log10(value) (value itself for metrics that may be negative) against the budget fraction, over the
    evaluations from ``FLAT["fit_from"]`` on (at least the last two). NaN with fewer than two evaluations."""
    if len(kimg) < 2 or kimg[-1] <= kimg[0]:
        return math.nan
    x = (kimg - kimg[0]) / (kimg[-1] - kimg[0])
    use = x >= FLAT["fit_from"]
    if use.sum() < 2:
        use = np.arange(len(x)) >= len(x) - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log10(value[use]) if positive else value[use]
    if not np.isfinite(y).all():
        return math.nan
    return float(np.polyfit(x[use], y, 1)[0] * FLAT["last"])


def _oriented_log(values: np.ndarray, lower: bool) -> np.ndarray:
    """log10 of a positive metric, sign-flipped for higher-is-better metrics: lower is always better."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    return out if lower else -out


def tolerance_width(log_lr: np.ndarray, y: np.ndarray, log_factor: float) -> np.ndarray:
    """Width in decades where the piecewise-linear curve ``y(log_lr)`` is within ``log_factor`` of its minimum.

    ``log_lr`` ascending ``[n]``; ``y`` ``[n, B]`` in oriented log units (lower is better; NaN points are
    never within). Returns ``[B]``.
    """
    y = np.where(np.isnan(y), np.inf, y)
    best = y.min(axis=0)
    threshold = best + log_factor
    width = np.zeros(y.shape[1])
    for i in range(len(log_lr) - 1):
        a, b, dx = y[i], y[i + 1], log_lr[i + 1] - log_lr[i]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        with np.errstate(invalid="ignore", divide="ignore"):
            part = np.where(hi <= threshold, 1.0, np.where(lo > threshold, 0.0, (threshold - lo) / (hi - lo)))
        width += np.nan_to_num(part, nan=0.0) * dx
    return np.where(np.isfinite(best), width, np.nan)


def seed_means(matrix: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``matrix`` ``[cells, seeds]`` (NaN missing) -> ``[cells, B]`` means over each draw's seeds."""
    with warnings.catch_warnings():  # a draw without any value of a cell: NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(matrix[:, draws], axis=2)  # [cells, B, seeds] -> [cells, B]


@dataclass
class _Grid:
    """An arm's cells: learning rates and batch sizes, with per-seed final, area and failed matrices."""

    lrs: np.ndarray
    batches: np.ndarray
    final: np.ndarray
    area: np.ndarray
    failed: np.ndarray


def _grid(runs: pd.DataFrame, seeds: list[int], cells: list[tuple[float, int]]) -> _Grid:
    index = {s: j for j, s in enumerate(seeds)}
    shape = (len(cells), len(seeds))
    final, area, failed = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    where = {cell: i for i, cell in enumerate(cells)}
    for r in runs.itertuples():
        i = where.get((r.lr, r.batch))
        if i is not None:
            final[i, index[r.seed]], area[i, index[r.seed]] = r.final, r.area
            failed[i, index[r.seed]] = float(r.failed)
    return _Grid(np.array([c[0] for c in cells]), np.array([c[1] for c in cells]), final, area, failed)


def stable_edge(lrs: np.ndarray, failed: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The stable edge (DEFINITIONS["edge"]) of one batch size for each draw of seeds.

    ``lrs`` ascending ``[cells]``, ``failed`` ``[cells, seeds]`` (1 failed, 0 not, NaN not run), ``draws``
    ``[B, seeds]``. Returns ``[B]`` learning rates: ``inf`` when nothing failed, 0 when the smallest did.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        any_failed = np.nanmax(failed[:, draws], axis=2) > 0  # [cells, B]
    first = np.where(any_failed.any(axis=0), any_failed.argmax(axis=0), len(lrs))
    edge = np.where(first == 0, 0.0, lrs[np.maximum(first - 1, 0)])
    return np.where(first == len(lrs), np.inf, edge)


def _measures(grid: _Grid, draws: np.ndarray, metric: str, factor: float) -> dict[str, np.ndarray]:
    """Every measure for each draw of seeds (``draws`` ``[B, seeds]``): name -> ``[B]``; best_lr too."""
    lower = direction(metric) == "lower"
    positive = metric_registry.info(metric).positive
    m = seed_means(grid.final, draws)  # [cells, B]
    best_i = np.where(np.isnan(m), np.inf, m if lower else -m).argmin(axis=0)
    best = np.take_along_axis(m, best_i[None], 0)[0]
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        top, bottom = np.nanmax(m, axis=0), np.nanmin(m, axis=0)
        spread = np.log10(top / bottom) if positive else top - bottom
    widths, edges = [], []
    for b in np.unique(grid.batches):
        sel = np.flatnonzero(grid.batches == b)
        order = sel[np.argsort(grid.lrs[sel])]
        edges.append(stable_edge(grid.lrs[order], grid.failed[order], draws))
        if positive:
            widths.append(tolerance_width(np.log10(grid.lrs[order]), _oriented_log(m[order], lower), math.log10(factor)))
        else:
            widths.append(np.full(m.shape[1], np.nan))
    area = seed_means(grid.area, draws)
    failed = seed_means(grid.failed, draws)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {"tolerance": np.mean(widths, axis=0), "best": best, "spread": np.where(np.isfinite(spread), spread, np.nan),
                "area": np.nanmean(area, axis=0), "failure": np.nanmean(failed, axis=0), "edge": np.min(edges, axis=0),
                "best_lr": grid.lrs[best_i], "best_batch": grid.batches[best_i]}


@dataclass
class Analysis:
    """Everything the study reports for one suite and metric (see the module docstring)."""

    suite: str
    metric: str
    factor: float
    seeds: list[int]
    batches: list[int]
    measures: pd.DataFrame  # arm, method, batch, measure, value, lo, hi, n_seeds, lrs, best_lr, best_batch
    pairwise: pd.DataFrame  # batch, lr, arm_a, arm_b, diff, lo, hi, n_seeds
    flatness: pd.DataFrame  # arm, batch, change, lo, hi, n_seeds, flat (at lr FLAT["lr"])
    base_arms: list[str] = field(default_factory=list)
    replicates: dict = field(default_factory=dict)  # (arm, batch) -> {measure: [B]} for paired differences
    runs: pd.DataFrame | None = None  # run_matrix: what the claims (bench.analysis.claims) read
    draws: np.ndarray | None = None  # the bootstrap's seed resamples, shared by every measure
    table: pd.DataFrame | None = None  # the suite's rows of this metric (the claims read its curves)


def interval(samples: np.ndarray) -> tuple[float, float]:
    """The central 95% percentile interval of bootstrap samples (NaN, NaN when none is finite)."""
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return math.nan, math.nan
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return float(lo), float(hi)


def edge_interval(samples: np.ndarray) -> tuple[float, float]:
    """The 95% interval of stable-edge samples, which may be ``inf`` (nothing failed): no interpolation."""
    lo, hi = np.percentile(samples, [2.5, 97.5], method="nearest")
    return float(lo), float(hi)


def analyse(table: pd.DataFrame, metric: str | None = None, factor: float = 2.0, n_boot: int = 2000,
            rng_seed: int = 0) -> list[Analysis]:
    """One Analysis per suite (its headline metric unless ``metric`` is given); BadInput if nothing to measure."""
    if not (isinstance(factor, (int, float)) and factor > 1):
        raise BadInput(f"--factor must be a number above 1, got {factor!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise BadInput(f"--boot must be a positive integer, got {n_boot!r}")
    out = []
    for suite, m in metric_per_suite(table, metric).items():
        runs = run_matrix(table, suite, m)
        if not runs.empty:
            out.append(analyse_runs(runs, suite, m, float(factor), n_boot, rng_seed))
            out[-1].table = table[(table["suite"] == suite) & (table["metric"] == m)]
    if not out:
        raise BadInput("no finished one-step method runs to measure (only teacher rows, or no evaluations)")
    return out


def analyse_runs(runs: pd.DataFrame, suite: str, metric: str, factor: float, n_boot: int, rng_seed: int) -> Analysis:
    """The Analysis of a ``run_matrix`` (every measure per arm and batch, the paired differences, flatness)."""
    seeds = sorted(runs["seed"].unique().tolist())
    rng = np.random.default_rng(rng_seed)
    point = np.arange(len(seeds))[None]  # the actual seeds: the point estimate
    draws = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    base_arms = sorted(a for a in runs["arm"].unique() if a in set(runs["method"]))
    cells_of = {a: set(zip(g["lr"], g["batch"])) for a, g in runs.groupby("arm")}
    common = set.intersection(*(cells_of[a] for a in base_arms)) if base_arms else set()
    rows, replicates = [], {}
    for arm, g in runs.groupby("arm", sort=True):
        # the methods' own arms are measured on the cells they all share; other arms on their own cells
        cells = sorted(common if arm in base_arms and len(common) >= 1 else cells_of[arm])
        batches = sorted({b for _, b in cells})
        for batch in [*(batches if len(batches) > 1 else []), "all"]:  # one batch size: its row is "all"
            sub = [c for c in cells if batch == "all" or c[1] == batch]
            grid = _grid(g, seeds, sub)
            est, reps = _measures(grid, point, metric, factor), _measures(grid, draws, metric, factor)
            replicates[(arm, batch)] = reps
            n_seeds = int(np.isfinite(grid.final).any(axis=0).sum())
            for name in MEASURES:
                lo, hi = interval(reps[name]) if name != "edge" else edge_interval(reps[name])
                rows.append(dict(arm=arm, method=g["method"].iloc[0], batch=batch, measure=name, value=float(est[name][0]),
                                 lo=lo, hi=hi, n_seeds=n_seeds, lrs=len({c[0] for c in sub}),
                                 best_lr=float(est["best_lr"][0]), best_batch=int(est["best_batch"][0])))
    measures = pd.DataFrame(rows)
    return Analysis(suite, metric, factor, seeds, sorted(runs["batch"].unique().tolist()), measures,
                    _pairwise(runs, seeds, draws), _flatness(runs, seeds, draws, metric), base_arms, replicates,
                    runs, draws)


def _pairwise(runs: pd.DataFrame, seeds: list[int], draws: np.ndarray) -> pd.DataFrame:
    rows = []
    for (lr, batch), g in runs.groupby(["lr", "batch"], sort=True):
        by_arm = {a: h.set_index("seed")["final"].reindex(seeds).to_numpy(float) for a, h in g.groupby("arm", sort=True)}
        arms = sorted(by_arm)
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                diff = (by_arm[a] - by_arm[b])[None]  # [1, seeds], NaN where either is missing
                reps = seed_means(diff, draws)[0]
                lo, hi = interval(reps)
                rows.append(dict(batch=int(batch), lr=float(lr), arm_a=a, arm_b=b, diff=float(np.nanmean(diff)) if
                                 np.isfinite(diff).any() else math.nan, lo=lo, hi=hi,
                                 n_seeds=int(np.isfinite(diff).sum())))
    return pd.DataFrame(rows, columns=["batch", "lr", "arm_a", "arm_b", "diff", "lo", "hi", "n_seeds"])


def _flatness(runs: pd.DataFrame, seeds: list[int], draws: np.ndarray, metric: str) -> pd.DataFrame:
    """Per (arm, batch) at its best lr: the relative change over the last part of the budget, with an interval."""
    lower, positive = direction(metric) == "lower", metric_registry.info(metric).positive
    rows = []
    for (arm, batch), cell in runs.groupby(["arm", "batch"], sort=True):
        means = cell.groupby("lr")["final"].mean().dropna()
        if means.empty:
            continue
        lr = float(means.idxmin() if lower else means.idxmax())
        g = cell[cell["lr"] == lr]
        trend = g.set_index("seed")["trend"].reindex(seeds).to_numpy(float)
        change = -trend if lower else trend  # oriented: positive while still improving
        reps = seed_means(change[None], draws)[0]
        point = float(np.nanmean(change)) if np.isfinite(change).any() else math.nan
        lo, hi = interval(reps)
        as_fraction = (lambda v: 10 ** v - 1) if positive else (lambda v: v)
        rows.append(dict(arm=arm, batch=int(batch), lr=lr, change=as_fraction(point), lo=as_fraction(lo), hi=as_fraction(hi),
                         n_seeds=int(np.isfinite(change).sum()), relative=positive,
                         flat=bool(positive and abs(as_fraction(point)) <= FLAT["within"])))
    return pd.DataFrame(rows, columns=["arm", "batch", "lr", "change", "lo", "hi", "n_seeds", "relative", "flat"])
