"""The SIM paper's two claims, each judged from the numbers: faster convergence, and robustness to
higher learning rates. Pandas and NumPy only.

Each claim compares SIM with SiD and DI on cells they all ran and reads as *holds*, *does not hold*
or *not resolved* at the budget the runs had, with paired bootstrap intervals over seeds (the
resamples of ``Analysis.draws``, so every difference is paired by seed).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .robustness import Analysis, analyse_runs, interval, seed_means
from .table import curves, direction, on_training_count
from .text import fmt, lr_text

ARMS = ("sim", "sid", "di")
CONVERGENCE = {"batch": 256, "lrs": (1e-4, 1e-5)}

DEFINITIONS = {
    "convergence": "faster convergence (the SIM paper's first claim): at batch 256, lr 1e-4 and 1e-5, SIM's "
                   "metric at matched kimg (the most kimg every compared arm reached in the cell, each run's "
                   "curve interpolated linearly in kimg) and its area up to there (the curve's mean over [0, "
                   "that kimg]) are better than SiD's and DI's. Holds when every paired difference (SIM minus "
                   "the other, per seed) has its interval on SIM's side of 0, does not hold when any lies on "
                   "the other side, and is not resolved otherwise.",
    "higher_lr": "robustness to higher learning rates (the second claim): at each batch size where SIM, SiD "
                 "and DI share at least three learning rates, SIM's stable edge is above SiD's and DI's and "
                 "its tolerance is wider (paired interval above 0). Does not hold when SIM's edge is below "
                 "either or a paired tolerance interval lies below 0; not resolved otherwise.",
}


def _at(kimg: np.ndarray, value: np.ndarray, k: float) -> tuple[float, float]:
    """A curve's value at ``k`` kimg and its mean over [first kimg, k] (linear between evaluations)."""
    keep = kimg <= k
    x, y = kimg[keep], value[keep]
    if len(x) == 0:
        return math.nan, math.nan
    if x[-1] < k:
        after = np.flatnonzero(kimg > k)
        if not len(after):
            return math.nan, math.nan
        j = after[0]
        v = value[j - 1] + (value[j] - value[j - 1]) * (k - kimg[j - 1]) / (kimg[j] - kimg[j - 1])
        x, y = np.append(x, k), np.append(y, v)
    area = float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float(y[-1])
    return float(y[-1]), area


def convergence(analysis: Analysis) -> pd.DataFrame:
    """Per claim cell and compared arm: matched kimg, SIM's and the other's values and areas, paired differences."""
    a, rows = analysis, []
    runs = a.runs[a.runs["arm"].isin(ARMS) & (a.runs["batch"] == CONVERGENCE["batch"])]
    c = curves(on_training_count(a.table[a.table["run_id"].isin(runs["run_id"])]))
    curve = {r: (g["kimg"].to_numpy(float), g["value"].to_numpy(float)) for r, g in c.groupby("run_id")}
    lower = direction(a.metric) == "lower"
    for lr in CONVERGENCE["lrs"]:
        cell = runs[np.isclose(runs["lr"], lr, rtol=1e-6) & ~runs["diverged"]]
        if set(cell["arm"]) < set(ARMS):
            continue
        k = min(curve[r][0][-1] for r in cell["run_id"] if r in curve)
        per_arm = {}
        for arm, g in cell.groupby("arm"):
            at = {s: _at(*curve[r], k) for s, r in zip(g["seed"], g["run_id"]) if r in curve}
            per_arm[arm] = np.array([[at.get(s, (math.nan,) * 2)[i] for s in a.seeds] for i in (0, 1)])
        for other in ARMS[1:]:
            row = dict(lr=lr, batch=CONVERGENCE["batch"], kimg=k, other=other)
            for i, name in enumerate(("value", "area")):
                sim, them = per_arm["sim"][i], per_arm[other][i]
                diff = (sim - them) if lower else (them - sim)  # negative: SIM better
                lo, hi = interval(seed_means(diff[None], a.draws)[0])
                row.update({f"sim_{name}": float(np.nanmean(sim)), f"other_{name}": float(np.nanmean(them)),
                            f"{name}_diff": float(np.nanmean(diff)), f"{name}_lo": lo, f"{name}_hi": hi})
            rows.append(row)
    return pd.DataFrame(rows)


def _outcome(los: list[float], his: list[float], n_seeds: int) -> str:
    if n_seeds > 1 and all(h < 0 for h in his):
        return "holds"
    if n_seeds > 1 and any(lo > 0 for lo in los):
        return "does not hold"
    return "is not resolved"


def convergence_sentence(analysis: Analysis) -> str:
    """The first claim in one paragraph, generated from ``convergence``."""
    a = analysis
    where = f"batch {CONVERGENCE['batch']}, lr {' and '.join(lr_text(x) for x in CONVERGENCE['lrs'])}"
    conv = convergence(a)
    if conv.empty:
        return f"The SIM paper's faster-convergence claim (SIM against SiD and DI at {where}) was not measured here."
    outcome = _outcome([*conv["value_lo"], *conv["area_lo"]], [*conv["value_hi"], *conv["area_hi"]], len(a.seeds))
    budget = _budget(a.table, a.runs[a.runs["batch"] == CONVERGENCE["batch"]])
    parts = []
    for lr, g in conv.groupby("lr", sort=False):
        diffs = "; ".join(f"SIM minus {r.other.upper() if r.other == 'di' else 'SiD'} "
                          f"{fmt(r.value_diff)} [{fmt(r.value_lo)}, {fmt(r.value_hi)}], area "
                          f"{fmt(r.area_diff)} [{fmt(r.area_lo)}, {fmt(r.area_hi)}]" for r in g.itertuples())
        first = g.iloc[0]
        parts.append(f"at lr {lr_text(lr)}, at {first['kimg']:.3g} kimg (the most every arm reached), sim "
                     f"{fmt(first['sim_value'])} ({diffs})")
    return (f"Claim 1, faster convergence (SIM against SiD and DI at {where}{budget}): {outcome}: "
            + "; ".join(parts) + " (negative: SIM better).")


def higher_lr(analysis: Analysis) -> pd.DataFrame:
    """Per batch size the three arms share: each arm's stable edge and tolerance, SIM's paired differences.

    Measured on the cells SIM, SiD and DI share (the claim cells at batch 256 too, which the other
    methods did not run), with the study's bootstrap.
    """
    a, rows = analysis, []
    if a.runs is not None and set(ARMS) <= set(a.runs["arm"]):
        a = analyse_runs(a.runs[a.runs["arm"].isin(ARMS)], a.suite, a.metric, a.factor,
                         len(a.draws) if a.draws is not None else 2000, 0)
    m = a.measures[a.measures["arm"].isin(ARMS) & (a.measures["batch"] != "all")]
    if m.empty:  # one batch size: its rows are "all"
        m = a.measures[a.measures["arm"].isin(ARMS)]
    for batch, g in m.groupby("batch", sort=True):
        by = {(r.arm, r.measure): r for r in g.itertuples()}
        if not all((arm, "edge") in by for arm in ARMS) or min(by[(arm, "edge")].lrs for arm in ARMS) < 3:
            continue
        for other in ARMS[1:]:
            lo, hi = interval(a.replicates[("sim", batch)]["tolerance"] - a.replicates[(other, batch)]["tolerance"])
            rows.append(dict(batch=batch, other=other, sim_edge=by[("sim", "edge")].value,
                             other_edge=by[(other, "edge")].value,
                             sim_tolerance=by[("sim", "tolerance")].value, other_tolerance=by[(other, "tolerance")].value,
                             tolerance_diff=by[("sim", "tolerance")].value - by[(other, "tolerance")].value,
                             tolerance_lo=lo, tolerance_hi=hi, sim_failure=by[("sim", "failure")].value,
                             other_failure=by[(other, "failure")].value))
    return pd.DataFrame(rows)


def edge_text(edge: float) -> str:
    """A stable edge as people read it: a learning rate, "none failed" or "below the grid"."""
    if math.isinf(edge):
        return "none failed"
    return "below the grid" if edge == 0 else lr_text(edge)


def higher_lr_sentence(analysis: Analysis) -> str:
    """The second claim in one paragraph, generated from ``higher_lr``."""
    h = higher_lr(analysis)
    if h.empty:
        return "The SIM paper's higher-learning-rate claim was not measured here (SIM, SiD and DI share too few learning rates)."
    parts, outcomes = [], []  # one outcome per batch size: they may differ
    for batch, g in h.groupby("batch", sort=True):
        above = all(r.sim_edge > r.other_edge for r in g.itertuples())
        below = any(r.sim_edge < r.other_edge for r in g.itertuples())
        wider = len(analysis.seeds) > 1 and all(r.tolerance_lo > 0 for r in g.itertuples())
        narrower = len(analysis.seeds) > 1 and any(r.tolerance_hi < 0 for r in g.itertuples())
        outcomes.append("holds" if above and wider else "does not hold" if below or narrower else "is not resolved")
        first = g.iloc[0]
        edges = ", ".join([f"sim {edge_text(first['sim_edge'])}"] + [f"{r.other} {edge_text(r.other_edge)}"
                                                                     for r in g.itertuples()])
        tol = "; ".join(f"SIM minus {r.other} {fmt(r.tolerance_diff)} [{fmt(r.tolerance_lo)}, {fmt(r.tolerance_hi)}]"
                        for r in g.itertuples())
        fails = ", ".join([f"sim {first['sim_failure']:.0%}"] + [f"{r.other} {r.other_failure:.0%}" for r in g.itertuples()])
        shown = analysis.batches[0] if batch == "all" else batch
        parts.append(f"{outcomes[-1]} at batch {shown} (stable edge {edges}; tolerance {tol} decades; failure rate {fails})")
    return "Claim 2, robustness to higher learning rates: " + "; ".join(parts) + "."


def _budget(table: pd.DataFrame, runs: pd.DataFrame) -> str:
    t = table[table["run_id"].isin(runs["run_id"])]
    gflop = t["gflop_budget"].dropna().unique() if "gflop_budget" in t else []
    return f", {fmt(float(gflop[0]))} GFLOP per run" if len(gflop) == 1 else ""
