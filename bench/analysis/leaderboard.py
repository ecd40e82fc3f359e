"""Views of the results table that rank: per-configuration summaries over seeds, leaderboards (at a
common budget or final), the lr-robustness table and the leaderboard columns a reader sees."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import BadInput
from ..metrics import registry as metric_registry
from ..rundir import TEACHER
from ..registry import unknown_name
from .table import (AXES, HP_PREFIX, is_reference, STATUSES, ascending, curves, direction, direction_text, failed_by_rule,
                    final_values, headline_metrics, load, load_runs, metric_label, on_training_count, teacher_text)
from .text import fmt, fmt_duration, fmt_kimg, is_missing, markdown, samples_label


def _sem(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


CONFIG_COST_COLUMNS = ("gflop", "train_s", "gflop_per_kimg", "train_s_per_kimg", "sample_gflop_per_image",
                       "sample_nfe")


def _mean(frame: pd.DataFrame, column: str) -> float:
    """Mean of a column over rows, NaN when absent or empty (older run directories lack cost columns)."""
    return float(frame[column].mean()) if column in frame and len(frame) else math.nan


def config_summaries(finals: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Aggregate final values over seeds, per (suite, method, configuration).

    Diverged and failed runs are counted but left out of the mean; the mean is over done and running
    runs (a running run contributes its latest evaluation; ``running`` says how many did).
    """
    hp = [c for c in finals.columns if c.startswith(HP_PREFIX)]
    out = []
    for (suite, method, config_id), g in finals.groupby(["suite", "method", "config_id"], sort=True):
        ok = g[~g["status"].isin(["diverged", "failed"])]
        counts = g["status"].value_counts()
        first = g.iloc[0]
        row = dict(suite=suite, metric=metric, method=method, config=first["config"], lr_g=first["lr_g"],
                   lr_fake=first["lr_fake"], batch=first["batch"], mean=float(ok["value"].mean()) if len(ok) else math.nan,
                   sem=_sem(ok["value"]), n=int(ok["value"].notna().sum()),
                   n_samples=ok["n_samples"].min() if len(ok) else pd.NA,
                   kimg=float(ok["kimg"].mean()) if len(ok) else math.nan,
                   images_seen=float(ok["images_seen"].mean()) if len(ok) else math.nan,
                   wall_time_s=float(ok["wall_time_s"].mean()) if len(ok) else math.nan,
                   **{c: _mean(ok, c) for c in CONFIG_COST_COLUMNS}, runs=len(g), **{s: int(counts.get(s, 0)) for s in STATUSES}, config_id=config_id)
        row.update({c: first[c] for c in hp})
        out.append(row)
    return pd.DataFrame(out)


def best_configs(summaries: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per group, the configuration with the fewest diverged runs, then the best mean over seeds."""
    s = summaries.copy()
    s["_diverged_frac"] = s["diverged"] / s["runs"]
    s["_key"] = s["mean"] if ascending(metric) else -s["mean"]
    s = s.sort_values(["_diverged_frac", "_key"], na_position="last", kind="stable")
    return s.groupby(by, sort=True, dropna=False).head(1).drop(columns=["_diverged_frac", "_key"])


def _check_metric(table: pd.DataFrame, metric: str) -> None:
    if metric not in metric_registry.METRICS and metric not in set(table["metric"]):
        raise unknown_name("metric", metric, sorted(set(metric_registry.METRICS) | set(table["metric"])))
    if metric not in set(table["metric"]):
        measured = ", ".join(sorted(set(table["metric"]))) or "nothing"
        raise BadInput(f"metric {metric!r} was not measured in these results (measured: {measured})")


def metric_per_suite(table: pd.DataFrame, metric: str | None) -> dict[str, str]:
    """{suite: metric} to show: ``metric`` where measured, else each suite's headline; BadInput if none."""
    if table.empty:
        raise BadInput("these results hold no measurements yet (no metrics.jsonl rows)")
    if metric is None:
        return headline_metrics(table)
    _check_metric(table, metric)
    return {suite: metric for suite in sorted(set(table.loc[table["metric"] == metric, "suite"]))}


def suites_without(table: pd.DataFrame, metric: str | None) -> list[str]:
    """The suites of ``table`` that did not measure ``metric`` (none when each suite shows its headline)."""
    if metric is None:
        return []
    return sorted(set(table["suite"]) - set(table.loc[table["metric"] == metric, "suite"]))


def _interpolate(x: np.ndarray, y: np.ndarray, at: float, log: bool) -> float:
    """``y`` at ``at`` on the piecewise-linear curve through (x, y) (x ascending); in log space if ``log``."""
    if log:
        return float(np.exp(np.interp(at, x, np.log(y))))
    return float(np.interp(at, x, y))


def reach(table: pd.DataFrame, axis: str) -> pd.Series:
    """Per method (reference rows left out), the furthest any of its runs was evaluated on ``axis``."""
    col = _axis_column(axis)
    t = table[~is_reference(table["method"])]
    return t.groupby("method")[col].max()


def _axis_column(axis: str) -> str:
    try:
        return AXES[axis]
    except KeyError:
        raise BadInput(f"unknown budget axis {axis!r} (known: {', '.join(AXES)})") from None


def values_at(table: pd.DataFrame, metric: str, axis: str, budget: float) -> pd.DataFrame:
    """One row per run that was evaluated at or beyond ``budget`` on ``axis``: its value there.

    The value is interpolated between the two evaluations around the budget, in log space for
    positive metrics (FID falls roughly exponentially); kimg, images_seen, gflop and train_s are
    interpolated linearly to the same point. Teacher rows are their final values.
    """
    col = _axis_column(axis)
    out = [final_values(table[is_reference(table["method"])])]
    for _, curve in curves(table[~is_reference(table["method"])]).groupby("run_id", sort=False):
        curve = curve.dropna(subset=[col]).sort_values(col)
        if curve.empty or curve[col].max() < budget * (1 - 1e-9) or curve[col].min() > budget * (1 + 1e-9):
            continue
        x = curve[col].to_numpy(float)
        row = curve.iloc[[int(np.searchsorted(x, budget, side="right")) - 1 if budget >= x[0] else 0]].copy()
        y = curve["value"].to_numpy(float)
        row["value"] = _interpolate(x, y, budget, log=metric_registry.info(metric).positive and bool((y > 0).all()))
        for other in ("kimg", "gflop", "train_s"):
            v = curve[other].to_numpy(float)
            row[other] = float(np.interp(budget, x, v)) if np.isfinite(v).all() else math.nan
        row["images_seen"] = row["kimg"] * 1000
        out.append(row)
    return pd.concat(out, ignore_index=True)


def common_budget(table: pd.DataFrame, axis: str) -> float:
    """The largest budget on ``axis`` that every method of ``table`` (one suite) reached.

    BadInput when a method has no figures on that axis (run directories written before cost accounting).
    """
    reached = reach(table, axis)
    methods = sorted(set(table.loc[~is_reference(table["method"]), "method"]))
    missing = [m for m in methods if not np.isfinite(reached.get(m, math.nan))]
    if missing:
        raise BadInput(f"no {axis} figures for method {missing[0]!r} (its runs predate cost accounting)")
    if not methods:
        raise BadInput("no one-step method runs to compare (only teacher rows)")
    return float(reached[methods].min())


def leaderboard(table: pd.DataFrame, metric: str | None = None, at: str | None = None,
                per_nfe: bool = False) -> pd.DataFrame:
    """Per suite: each method's best configuration and its final value (mean, sem, n over seeds).

    ``at`` ("kimg", "gflop" or "wall") compares at equal budget instead of at the end: every run's value
    at the largest budget on that axis that every method of the suite reached (``values_at``); the
    columns ``at`` and ``budget`` say where. Cost columns beside the value: gflop and train_s (at the
    value), gflop_per_kimg and train_s_per_kimg (per 1k generator images), sample_gflop_per_image and
    sample_nfe (the teacher's multi-step sampler; a generator's one pass).

    The best configuration (hyperparameters, learning rates, batch) has the fewest diverged runs, then
    the best mean over seeds of the final value. Columns: suite, metric, label ("FID-1k"), direction,
    method, config, lr_g, lr_fake, batch, mean, sem, n, n_samples (fewest behind any seed), kimg and
    images_seen at the final evaluation, wall_time_s, runs and one count per status (of that
    configuration), config_id, method_runs, method_diverged and method_failed (runs that failed by the study's
    rule, ``failed_by_rule``, or whose process failed; over all the method's configurations), hp_*.
    The teacher's multi-step row is there too (method "teacher"). Rows are sorted best first. With
    ``per_nfe`` each method (the teacher too) has one row per number of network evaluations per sample
    (``sample_nfe``: a K-step generator's K, the teacher sampler's), its best configuration there.
    ``metric=None`` takes each suite's headline metric; an unknown or unmeasured metric is BadInput.
    """
    boards, notes = [], []
    for suite, m in metric_per_suite(table, metric).items():
        t = table[(table["suite"] == suite) & (table["metric"] == m)]
        budget = math.nan
        if at is None:
            finals = final_values(t)
        else:
            budget = common_budget(t, at)
            finals = values_at(t, m, at, budget)
        notes += finals.attrs.get("notes", [])
        best = best_configs(config_summaries(finals, m), m, ["suite", "method"] + (["sample_nfe"] if per_nfe else []))
        best["at"], best["budget"] = at or "final", budget
        best = best.sort_values("mean", ascending=ascending(m), na_position="last", kind="stable")
        if per_nfe:  # each method's curve against NFE, methods in the order of their best row
            order = {method: i for i, method in enumerate(dict.fromkeys(best["method"]))}
            best = best.sort_values(["method", "sample_nfe"], key=lambda c: c.map(order) if c.name == "method" else c,
                                    kind="stable")
        best.insert(2, "direction", direction(m))
        best.insert(2, "label", [metric_label(m, n) for n in best["n_samples"]])
        per_method = finals.groupby("method")
        best["method_runs"] = best["method"].map(per_method["run_id"].nunique())
        best["method_diverged"] = best["method"].map(
            finals[finals["status"] == "diverged"].groupby("method")["run_id"].nunique()).fillna(0).astype(int)
        one_step = t[~is_reference(t["method"]) & (t["status"] != "failed")]
        failed = failed_by_rule(curves(on_training_count(one_step)).dropna(subset=["value"]), m)
        failed_ids = set(failed.index[failed]) | set(t.loc[t["status"] == "failed", "run_id"])
        best["method_failed"] = best["method"].map(
            finals[finals["run_id"].isin(failed_ids)].groupby("method")["run_id"].nunique()).fillna(0).astype(int)
        boards.append(best)
    board = pd.concat(boards, ignore_index=True)
    hp = [c for c in board.columns if c.startswith(HP_PREFIX)]
    board = board[[c for c in board.columns if c not in hp] + [c for c in hp if board[c].notna().any()]]
    missing = suites_without(table, metric)
    if missing:
        notes.append(f"{metric} was not measured in suite(s) {', '.join(missing)}: left out")
    board.attrs["notes"] = notes
    return board


def spread(values, metric: str) -> float:
    """Worst against best of ``values``: log10 of their ratio for positive metrics, else their difference."""
    values = np.asarray([v for v in values if not is_missing(v)], dtype=float)
    if len(values) < 2:
        return math.nan
    if metric_registry.info(metric).positive and (values > 0).all():
        return float(np.log10(values.max() / values.min()))
    return float(values.max() - values.min())


ROBUSTNESS_DEFINITION = (
    "For each learning rate of the grid, a method is represented by its best configuration at that "
    "learning rate (hyperparameters and batch), valued by the mean over seeds of the final metric, where "
    "a diverged run counts with its value at the start of training (divergence bought nothing). The score "
    "is the spread of these values across the learning rates that every method was run at: log10(worst / best) for positive metrics "
    "(FID, Fréchet, IS, ...: 0.3 means the worst learning rate is 2x worse), the plain difference for "
    "metrics that can be zero or negative (KID, precision, recall, ImageReward). Lower is more robust; "
    "it needs at least two learning rates. 'diverged' is the fraction of all the method's runs that "
    "diverged, and breaks ties."
)


def lr_robustness(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A robustness score per (suite, method) that a reader can sort by; see ROBUSTNESS_DEFINITION.

    Columns: suite, metric, method, score, spread_unit ("decades" or the metric), diverged (fraction
    of the method's runs), runs, best_lr, best_value, worst_lr, worst_value, lrs (how many were scored),
    and one column per learning rate ``lr=<value>`` with the value used. The score covers the learning
    rates at which every method of the suite has a value (each method's own grid when fewer than two
    are shared), so scores compare like with like. Sorted most robust first.
    """
    out = []
    for suite, m in metric_per_suite(table, metric).items():
        t = table[(table["suite"] == suite) & (table["metric"] == m) & ~is_reference(table["method"])]
        if t.empty:
            continue
        finals = final_values(t).set_index("run_id")
        start = curves(t).groupby("run_id")["value"].first()
        diverged = finals["status"] == "diverged"
        finals.loc[diverged, "value"] = start.reindex(finals.index)[diverged]
        finals = finals.assign(status=finals["status"].replace("diverged", "done")).reset_index()
        per_lr = best_configs(config_summaries(finals, m), m, ["method", "lr_g"])
        n_runs = t.groupby("method")["run_id"].nunique()
        n_div = t[t["status"] == "diverged"].groupby("method")["run_id"].nunique().reindex(n_runs.index, fill_value=0)
        per_lr = per_lr.dropna(subset=["lr_g", "mean"])
        grids = [set(g["lr_g"]) for _, g in per_lr.groupby("method")]
        common = set.intersection(*grids) if grids else set()
        lower = ascending(m)
        for method, g in per_lr.groupby("method"):
            scored = g[g["lr_g"].isin(common)] if len(common) >= 2 else g
            best = scored.loc[scored["mean"].idxmin() if lower else scored["mean"].idxmax()] if len(scored) else None
            worst = scored.loc[scored["mean"].idxmax() if lower else scored["mean"].idxmin()] if len(scored) else None
            row = dict(suite=suite, metric=m, method=method, score=spread(scored["mean"], m),
                       spread_unit="decades" if metric_registry.info(m).positive and (scored["mean"] > 0).all()
                       else metric_label(m),
                       diverged=n_div[method] / n_runs[method], runs=int(n_runs[method]),
                       best_lr=best["lr_g"] if best is not None else math.nan,
                       best_value=best["mean"] if best is not None else math.nan,
                       worst_lr=worst["lr_g"] if worst is not None else math.nan,
                       worst_value=worst["mean"] if worst is not None else math.nan, lrs=len(scored))
            row.update({f"lr={lr:g}": v for lr, v in zip(g["lr_g"], g["mean"])})
            out.append(row)
    if not out:
        raise BadInput("no one-step method runs to score (only teacher rows)")
    frame = pd.DataFrame(out)
    lr_cols = sorted((c for c in frame.columns if c.startswith("lr=")), key=lambda c: float(c[3:]))
    frame = frame[[c for c in frame.columns if not c.startswith("lr=")] + lr_cols]
    return frame.sort_values(["suite", "score", "diverged"], na_position="last", kind="stable", ignore_index=True)


def runs_text(row) -> str:
    """A configuration's runs by status, e.g. "2 done, 1 diverged"."""
    return ", ".join(f"{row[s]} {s}" for s in STATUSES if row[s]) or "–"


def cost_text(row) -> str:
    """A leaderboard row's cost: GFLOP and seconds per 1k generator images; for the teacher, what one
    sample costs (NFE x forward GFLOP), so a one-step generator's speed-up is a division away."""
    if row["method"] == TEACHER:
        if is_missing(row.get("sample_gflop_per_image")):
            return "–"
        nfe = row.get("sample_nfe")
        per_pass = row["sample_gflop_per_image"] / nfe if not is_missing(nfe) and nfe else math.nan
        return f"{fmt(row['sample_gflop_per_image'])} GFLOP/image ({nfe:g} NFE x {fmt(per_pass)})"
    if is_missing(row.get("gflop_per_kimg")):
        return "–"
    seconds = row.get("train_s_per_kimg")
    return f"{fmt(row['gflop_per_kimg'])} GFLOP" + ("" if is_missing(seconds) else f", {fmt(seconds)} s")


def budget_text(board: pd.DataFrame) -> str:
    """Where a leaderboard compares: "final values" or "at 12.3 GFLOP (the largest budget every method reached)"."""
    at = board["at"].iloc[0] if "at" in board and len(board) else "final"
    if at == "final":
        return "final values"
    unit = {"kimg": "kimg", "gflop": "GFLOP", "wall": "s of training"}[at]
    return f"at {fmt(float(board['budget'].iloc[0]))} {unit}, the largest budget every method reached"


@dataclass(frozen=True)
class Column:
    """One reader-facing leaderboard column: its header, its text and sort key for a board row
    (a dict), and its kind (how the report styles it: num, strong, method, config, runs)."""

    header: str
    text: Callable[[dict], str]
    key: Callable[[dict], Any] | None = None  # None: sort by the text
    kind: str = "num"


VALUE = "value"  # the header of the value column, replaced by the metric's label ("FID-1k")


# What `bench leaderboard` and the report show of a leaderboard, in order: a new column is one line.
LEADERBOARD_COLUMNS = (
    Column("method", lambda r: str(r["method"]), kind="method"),
    Column(VALUE, lambda r: fmt(r["mean"], r["sem"]), lambda r: r["mean"], "strong"),
    Column("seeds", lambda r: str(r["n"]), lambda r: r["n"]),
    Column("samples", lambda r: samples_label(r["n_samples"]), lambda r: r["n_samples"]),
    Column("configuration", lambda r: str(r["config"]), kind="config"),
    Column("kimg", lambda r: fmt_kimg(r["kimg"]), lambda r: r["kimg"]),
    Column("GFLOP", lambda r: fmt(r["gflop"]), lambda r: r["gflop"]),
    Column("NFE", lambda r: "–" if is_missing(r["sample_nfe"]) else f"{r['sample_nfe']:g}", lambda r: r["sample_nfe"]),
    Column("cost per kimg", lambda r: cost_text(r), lambda r: r["gflop_per_kimg"]),
    Column("wall time", lambda r: fmt_duration(r["wall_time_s"]), lambda r: r["wall_time_s"]),
    Column("runs of this config", runs_text, lambda r: r["runs"], "runs"),
    Column("failed, all configs", lambda r: f"{r['method_failed']} / {r['method_runs']}",
           lambda r: r["method_failed"] / r["method_runs"]),
)


def noise_floor(table: pd.DataFrame, suite: str, metrics: tuple[str, ...] = ("fid", "fd_teacher")) -> str | None:
    """The measurement's noise floor from the teacher's own rows: each metric at the teacher's largest sample
    count, per sampling seed, and its range. A teacher's FD to the teacher's reference samples is the
    teacher-vs-teacher distance, the least a distilled generator can score. None without teacher rows."""
    t = table[(table["suite"] == suite) & (table["method"] == TEACHER)]
    if "hp_steps" in t and t["hp_steps"].nunique() > 1:  # the teacher at several step counts: its most accurate
        t = t[t["hp_steps"] == t["hp_steps"].max()]
    parts = []
    for metric in metrics:
        m = t[t["metric"] == metric].dropna(subset=["n_samples", "value"])
        if m.empty:
            continue
        m = m[m["n_samples"] == m["n_samples"].max()].sort_values("seed")
        values = m.groupby("seed")["value"].last()
        label = metric_label(metric, m["n_samples"].iloc[0])
        what = "the teacher-vs-teacher distance " if metric == "fd_teacher" else ""
        text = f"{what}{label} " + ", ".join(fmt(v) for v in values)
        if len(values) > 1:
            text += (f" over sampling seeds {', '.join(str(int(s)) for s in values.index)}"
                     f" (range {fmt(values.max() - values.min())})")
        parts.append(text)
    if not parts:
        return None
    return "Noise floor (the teacher's own rows): " + "; ".join(parts)


def value_header(board: pd.DataFrame) -> str:
    """The value column's header: the board's label ("FID-1k"), or the metric's when sample counts differ."""
    if board["label"].nunique() == 1:
        return str(board["label"].iloc[0])
    return metric_label(board["metric"].iloc[0])


def leaderboard_view(board: pd.DataFrame) -> pd.DataFrame:
    """The columns of a leaderboard a reader wants (LEADERBOARD_COLUMNS), formatted as strings."""
    rows = board.to_dict("records")
    header = value_header(board)
    return pd.DataFrame({header if c.header == VALUE else c.header: [c.text(r) for r in rows]
                         for c in LEADERBOARD_COLUMNS})


def cli_leaderboard(args) -> int:
    """``bench leaderboard DIR [--metric M] [--at kimg|gflop|wall] [--format md|csv]``: one table per suite."""
    runs = load_runs(args.results_dir)
    table = load(args.results_dir, runs)
    board = leaderboard(table, args.metric, at=args.at, per_nfe=args.per_nfe)
    for note in board.attrs["notes"]:
        print(f"bench: note: {note}", file=sys.stderr)
    if args.format == "csv":
        print(board.to_csv(index=False), end="")
        return 0
    for (suite, metric), b in board.groupby(["suite", "metric"], sort=False):
        print(f"## {suite}: {metric_label(metric)} ({direction_text(metric)}), {budget_text(b)}\n")
        text = teacher_text(runs, suite)
        print(f"{text[0].upper()}{text[1:]}.\n")
        floor = noise_floor(table, suite)
        if floor:
            print(f"{floor}.\n")
        print(markdown(leaderboard_view(b)))
        print()
    return 0
