"""Robustness figures from the results table, in the layout of the SIM paper (seaborn, Agg).

One row per (suite, metric): the suite's headline metric, then IS where it was measured. One panel per
generator learning rate: the metric against training kimg, one line per method (its best
configuration at that learning rate), bands of one standard error over seeds, an x where a run
diverged, the teacher's multi-step value as a dashed line. For lower-is-better metrics the y axis stops
at ten times the worst starting value; a curve that leaves it gets a ^ on the top edge. The last panel of a row sums the row up:
final value against learning rate per method (an x on the top edge where every seed diverged).
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
from matplotlib import ticker
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np
import pandas as pd
import seaborn as sns

from . import results
from .errors import BadInput

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "distill-bench",  # selectable text, reproducible ids
         "font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False}
SECOND_ROW_METRICS = ("is",)
DIVERGED_MARKER = dict(marker="x", s=60, linewidths=2.0, zorder=5)


def _text(value) -> str:
    """A run-directory string as plain text: a dollar sign must not start mathtext."""
    return str(value).replace("$", r"\$")


def _palette(methods) -> dict:
    names = sorted(m for m in set(methods) if m != results.TEACHER)
    return dict(zip(names, sns.color_palette("colorblind", max(len(names), 1))))


def _rows(table: pd.DataFrame, metric: str | None) -> list[tuple[str, str]]:
    """(suite, metric) pairs to draw: the chosen metric, then IS where measured."""
    rows = []
    for suite, m in results.metric_per_suite(table, metric).items():
        rows.append((suite, m))
        measured = set(table.loc[table["suite"] == suite, "metric"])
        rows += [(suite, extra) for extra in SECOND_ROW_METRICS if extra in measured and extra != m]
    return rows


def _selected(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of each method's best configuration per learning rate (leaderboard rule)."""
    t = table[(table["metric"] == metric) & (table["method"] != results.TEACHER)]
    if t.empty:
        return t
    best = results.best_configs(results.config_summaries(results.final_values(t), metric), metric, ["method", "lr_g"])
    return t[t["config_id"].isin(best["config_id"])]


def _log_helps(values: pd.Series, metric: str) -> bool:
    values = values.dropna()
    return (metric in results.POSITIVE and len(values) > 0 and (values > 0).all()
            and values.max() / values.min() > 10)


def _cap(data: pd.DataFrame, metric: str) -> float:
    """Upper y limit of a lower-is-better row: 10x the worst starting value, so a blow-up cannot squash
    every other curve into a flat line (clipped curves get a ^ on the top edge)."""
    if results.direction(metric) != "lower" or data.empty:
        return math.inf
    curves = results.curves(data)
    starts = curves[curves["kimg"] == curves.groupby("run_id")["kimg"].transform("min")]["value"]
    return 10 * starts.max() if len(starts) and starts.max() > 0 else math.inf


def _clip_top(ax, cap: float) -> None:
    """Limit the y axis to ``cap``; mark lines that leave it with a ^ and pull markers onto the edge."""
    if not math.isfinite(cap) or ax.get_ylim()[1] <= cap:
        return
    ax.set_ylim(top=cap)
    for line in list(ax.get_lines()):
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        above = np.flatnonzero(y > cap)
        if len(above):
            ax.scatter([x[above[0]]], [cap], marker="^", s=45, color=line.get_color(), clip_on=False, zorder=6)
    for points in ax.collections:
        if isinstance(points, PathCollection) and points.get_offsets().size:
            xy = np.asarray(points.get_offsets(), float)
            xy[:, 1] = np.minimum(xy[:, 1], cap)
            points.set_offsets(xy)
            points.set_clip_on(False)


def _teacher_line(ax, table: pd.DataFrame, suite: str, metric: str) -> None:
    t = table[(table["suite"] == suite) & (table["metric"] == metric) & (table["method"] == results.TEACHER)]
    if len(t):
        ax.axhline(results.final_values(t)["value"].mean(), color="0.35", linestyle="--", linewidth=1.2, zorder=1)


def _curves_panel(ax, data: pd.DataFrame, palette: dict, metric: str, x: str = "kimg") -> None:
    col = results.AXES[x]
    curves = results.curves(data).dropna(subset=[col])
    if curves.empty:
        ax.text(0.5, 0.5, "no evaluations" if x == "kimg" else f"no {x} figures", transform=ax.transAxes,
                ha="center", color="0.5")
        return
    sns.lineplot(data=curves, x=col, y="value", hue="method", palette=palette, errorbar="se",
                 estimator="mean", marker="o", markersize=3.5, linewidth=1.6, ax=ax, legend=False)
    diverged = curves[curves["status"] == "diverged"]
    for run_id, g in diverged.groupby("run_id"):
        last = g.sort_values(col).iloc[-1]
        at = last["diverged_kimg"] if x == "kimg" and not math.isnan(last["diverged_kimg"]) else last[col]
        ax.scatter([at], [last["value"]], color=palette.get(last["method"], "k"), **DIVERGED_MARKER)
    running = curves[curves["status"] == "running"]
    for run_id, g in running.groupby("run_id"):
        last = g.sort_values(col).iloc[-1]
        ax.scatter([last[col]], [last["value"]], facecolors="none", edgecolors=palette.get(last["method"], "k"),
                   s=40, linewidths=1.2, zorder=5)


def _summary_panel(ax, data: pd.DataFrame, palette: dict, metric: str) -> None:
    finals = results.final_values(data)
    ok = finals[~finals["status"].isin(["diverged", "failed"])]
    if len(ok):
        sns.lineplot(data=ok, x="lr_g", y="value", hue="method", palette=palette, errorbar="se",
                     marker="o", markersize=6, linewidth=1.6, ax=ax, legend=False, err_style="bars")
    lost = finals.groupby(["method", "lr_g"]).filter(lambda g: g["status"].isin(["diverged", "failed"]).all())
    for (method, lr), _ in lost.groupby(["method", "lr_g"]):
        ax.scatter([lr], [1.0], transform=ax.get_xaxis_transform(), color=palette.get(method, "k"),
                   clip_on=False, **DIVERGED_MARKER)
    ax.set_xscale("log")
    ax.set_xlabel("generator learning rate")
    ax.set_title("final value vs learning rate")


def robustness_figure(table: pd.DataFrame, metric: str | None = None, x: str = "kimg") -> Figure:
    """The robustness figure (see the module docstring); BadInput when there is nothing to draw.

    ``x`` is the curves' axis: "kimg" (generator images), "gflop" (training FLOPs, one-off costs
    included) or "wall" (seconds in the update phases).
    """
    if x not in results.AXES:
        raise BadInput(f"unknown x axis {x!r} (known: {', '.join(results.AXES)})")
    rows = _rows(table, metric)
    methods = table["method"].unique()
    palette = _palette(methods)
    lrs = {suite: sorted(table.loc[(table["suite"] == suite) & (table["method"] != results.TEACHER), "lr_g"]
                         .dropna().unique()) for suite, _ in rows}
    ncols = max(len(v) for v in lrs.values()) + 1
    with matplotlib.rc_context(STYLE), sns.axes_style("whitegrid", {"axes.spines.top": False,
                                                                      "axes.spines.right": False}):
        fig = Figure(figsize=(3.3 * ncols, 2.9 * len(rows) + 0.7), layout="constrained")
        axes = fig.subplots(len(rows), ncols, squeeze=False)
        for r, (suite, m) in enumerate(rows):
            sel = _selected(table[table["suite"] == suite], m)
            n = sel["n_samples"].min() if len(sel) else None
            label = results.metric_label(m, None if n is pd.NA else n)
            cap = _cap(sel, m)
            log = _log_helps(sel["value"].clip(upper=cap), m)
            row_axes = []
            for c in range(ncols):
                ax = axes[r][c]
                if c < len(lrs[suite]):
                    lr = lrs[suite][c]
                    _curves_panel(ax, sel[sel["lr_g"] == lr], palette, m, x)
                    ax.set_title(f"{_text(suite)} · lr = {lr:g}")
                    ax.set_xlabel(results.AXIS_LABELS[x])
                    row_axes.append(ax)
                elif c == ncols - 1:
                    _summary_panel(ax, sel, palette, m)
                    row_axes.append(ax)
                else:
                    ax.set_visible(False)
                    continue
                _teacher_line(ax, table, suite, m)
                ax.set_ylabel(label if c == 0 or c == ncols - 1 else "")
                if log:
                    ax.set_yscale("log")
                    for axis in (ax.yaxis,):  # 40 rather than 4x10^1
                        axis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=False))
                        axis.set_minor_formatter(ticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
            curve_axes = row_axes[:-1]
            if curve_axes:  # one y range per row, so learning rates compare at a glance
                lo = min(a.get_ylim()[0] for a in curve_axes)
                hi = max(a.get_ylim()[1] for a in curve_axes)
                for a in curve_axes:
                    a.set_ylim(lo, hi)
            for a in row_axes:
                _clip_top(a, cap)
        handles = [Line2D([], [], color=palette[m], marker="o", markersize=4, label=_text(m)) for m in palette]
        handles += [Line2D([], [], color="0.35", linestyle="--", label="teacher (multi-step)"),
                    Line2D([], [], color="0.2", marker="x", linestyle="none", markersize=7, markeredgewidth=2,
                           label="diverged"),
                    Line2D([], [], color="0.2", marker="o", markerfacecolor="none", linestyle="none",
                           label="still running"),
                    Line2D([], [], color="0.2", marker="^", linestyle="none", label="off the scale")]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)
    return fig


def compute_scatter(table: pd.DataFrame, metric: str | None = None) -> Figure:
    """Quality against compute: each run's final value against its GFLOP at that evaluation, one
    point per run, one colour per method, one panel per suite (its headline metric, or ``metric``);
    an x marks a diverged run, the teacher's value is a dashed line. BadInput when no run has cost figures."""
    pairs = list(results.metric_per_suite(table, metric).items())
    palette = _palette(table["method"].unique())
    finals = {suite: results.final_values(table[(table["suite"] == suite) & (table["metric"] == m)
                                                & (table["method"] != results.TEACHER)]).dropna(subset=["gflop"])
              for suite, m in pairs}
    if all(f.empty for f in finals.values()):
        raise BadInput("no run carries GFLOP figures (run directories written before cost accounting)")
    with matplotlib.rc_context(STYLE), sns.axes_style("whitegrid", {"axes.spines.top": False,
                                                                      "axes.spines.right": False}):
        fig = Figure(figsize=(4.2 * len(pairs), 3.4), layout="constrained")
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (suite, m) in zip(axes, pairs):
            f = finals[suite]
            ok = f[~f["status"].isin(["diverged", "failed"])]
            sns.scatterplot(data=ok, x="gflop", y="value", hue="method", palette=palette, s=36, ax=ax, legend=False)
            lost = f[f["status"].isin(["diverged", "failed"])]
            ax.scatter(lost["gflop"], lost["value"], color=[palette.get(k, "k") for k in lost["method"]],
                       **DIVERGED_MARKER)
            _teacher_line(ax, table, suite, m)
            if len(f) and (f["gflop"] > 0).all():
                ax.set_xscale("log")
            if _log_helps(f["value"], m):
                ax.set_yscale("log")
            n = f["n_samples"].min() if len(f) else None
            ax.set_ylabel(results.metric_label(m, None if n is pd.NA else n))
            ax.set_xlabel("total training GFLOP")
            ax.set_title(f"{_text(suite)} · final value vs compute")
        handles = [Line2D([], [], color=palette[k], marker="o", linestyle="none", label=_text(k)) for k in palette]
        handles += [Line2D([], [], color="0.35", linestyle="--", label="teacher (multi-step)"),
                    Line2D([], [], color="0.2", marker="x", linestyle="none", markersize=7, markeredgewidth=2,
                           label="diverged")]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), frameon=False)
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure encoded as ``fmt`` (png, svg or pdf)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format=fmt, dpi=130, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def _figure_format(output: str) -> str:
    fmt = Path(output).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise BadInput(f"-o {output}: use a .png, .svg or .pdf file name")
    return fmt


def cli_plot_compute(args) -> int:
    """``bench plot compute DIR -o figure.png|.svg [--metric M]``: the quality-versus-compute scatter."""
    out, fmt = Path(args.output), _figure_format(args.output)
    data = figure_bytes(compute_scatter(results.load(args.results_dir), args.metric), fmt)
    results.write_atomic(out, lambda p: Path(p).write_bytes(data))
    print(out)
    return 0


def cli_plot_robustness(args) -> int:
    """``bench plot robustness DIR -o figure.png|.svg [--metric M] [--x kimg|gflop|wall]``."""
    out, fmt = Path(args.output), _figure_format(args.output)
    data = figure_bytes(robustness_figure(results.load(args.results_dir), args.metric, x=args.x), fmt)
    results.write_atomic(out, lambda p: Path(p).write_bytes(data))
    print(out)
    return 0
