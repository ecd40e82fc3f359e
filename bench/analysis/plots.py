"""Robustness figures from the results table, in the layout of the SIM paper (matplotlib, Agg).

One row per (suite, metric): the suite's headline metric, then IS where it was measured. One panel per
generator learning rate: the metric against training kimg, one line per method (its best
configuration at that learning rate), bands of one standard error over seeds, an x where a run
diverged, the teacher's multi-step value as a dashed line. For lower-is-better metrics the y axis stops
at ten times the worst starting value; a curve that leaves it gets a ^ on the top edge. The last panel
of a row sums the row up: final value against learning rate per method (an x on the top edge where
every seed diverged).

Every method has one style (colour, marker, line style) in every figure: ``method_styles``. The
figure comes whole (``robustness_figure``, one legend above the panels) or as one small figure per
panel plus a legend figure (``robustness_panels``, ``legend_figure``), which a page can wrap.
``figure_bytes`` saves with a tight bounding box, so nothing drawn falls outside the canvas, and
names the text a reader must see (SVG ids ``ticklabel-*``, ``label-*``, ``legend-*``) so a browser
test can check it stays inside.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib import ticker
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
import numpy as np
import pandas as pd

from ..errors import BadInput
from ..metrics import registry as metric_registry
from ..rundir import TEACHER, write_atomic
from .leaderboard import best_configs, config_summaries, metric_per_suite
from .styles import STYLE, TEACHER_STYLE, legend, method_styles, plain_text
from .table import AXES, AXIS_LABELS, curves, direction, final_values, load, metric_label
from .text import lr_text


SECOND_ROW_METRICS = ("is",)


DIVERGED_MARKER = dict(marker="x", s=60, linewidths=2.0, zorder=5)


PANEL_SIZE = (3.0, 2.5)  # inches: four panels side by side fit a 1264 px column at 96 px per inch


def _rows(table: pd.DataFrame, metric: str | None) -> list[tuple[str, str]]:
    """(suite, metric) pairs to draw: the chosen metric, then IS where measured."""
    rows = []
    for suite, m in metric_per_suite(table, metric).items():
        rows.append((suite, m))
        measured = set(table.loc[table["suite"] == suite, "metric"])
        rows += [(suite, extra) for extra in SECOND_ROW_METRICS if extra in measured and extra != m]
    return rows


def _selected(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of each method's best configuration per learning rate (leaderboard rule)."""
    t = table[(table["metric"] == metric) & (table["method"] != TEACHER)]
    if t.empty:
        return t
    best = best_configs(config_summaries(final_values(t), metric), metric, ["method", "lr_g"])
    return t[t["config_id"].isin(best["config_id"])]


def _log_helps(values: pd.Series, metric: str) -> bool:
    values = values.dropna()
    return (metric_registry.info(metric).positive and len(values) > 0 and (values > 0).all()
            and values.max() / values.min() > 10)


def _cap(data: pd.DataFrame, metric: str) -> float:
    """Upper y limit of a lower-is-better row: 10x the worst starting value, so a blow-up cannot squash
    every other curve into a flat line (clipped curves get a ^ on the top edge)."""
    if direction(metric) != "lower" or data.empty:
        return math.inf
    rows = curves(data)
    starts = rows[rows["kimg"] == rows.groupby("run_id")["kimg"].transform("min")]["value"]
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


def _log_ticks(ax) -> None:
    """Few, plain log-axis labels (40, not 4x10^1): the densest of 1-2-3-4-5-6-8, 1-2-3-5, 1-2-5, 1-3,
    1 per decade that puts at most six labels on the axis; unlabelled minor ticks between."""
    lo, hi = ax.get_ylim()
    for subs in ((1, 2, 3, 4, 5, 6, 8), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        n = sum(lo <= s * 10.0**d <= hi for d in decades for s in subs)
        if n <= 6:
            break
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=subs, numticks=99))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(ticker.LogLocator(subs=np.arange(1, 10), numticks=99))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def _teacher_line(ax, table: pd.DataFrame, suite: str, metric: str) -> None:
    t = table[(table["suite"] == suite) & (table["metric"] == metric) & (table["method"] == TEACHER)]
    if len(t):
        ax.axhline(final_values(t)["value"].mean(), color=TEACHER_STYLE.color,
                   linestyle=TEACHER_STYLE.linestyle, linewidth=1.2, zorder=1)


def _mean_sem(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    g = frame.groupby(x)["value"]
    out = pd.DataFrame({"mean": g.mean(), "sem": g.std(ddof=1) / np.sqrt(g.count())}).reset_index()
    return out.fillna({"sem": 0.0})


def _under(styles: dict, method: str) -> int:
    """How many methods are drawn over this one: earlier lines are drawn wider, with bigger markers, so
    two methods with the same values (DMD and DMD2 often) both stay visible."""
    return len(styles) - 1 - list(styles).index(method)


def _curves_panel(ax, data: pd.DataFrame, styles: dict, metric: str, x: str = "kimg") -> None:
    col = AXES[x]
    rows = curves(data).dropna(subset=[col])
    if rows.empty:
        ax.text(0.5, 0.5, "no evaluations" if x == "kimg" else f"no {x} figures", transform=ax.transAxes,
                ha="center", color="0.5")
        return
    for method, g in rows.groupby("method", sort=True):
        style, m, under = styles[method], _mean_sem(g, col), _under(styles, method)
        ax.plot(m[col], m["mean"], markersize=3.5 + 0.6 * under, linewidth=1.3 + 0.25 * under, **style.line())
        ax.fill_between(m[col], m["mean"] - m["sem"], m["mean"] + m["sem"], color=style.color, alpha=0.18,
                        linewidth=0)
    for run_id, g in rows[rows["status"] == "diverged"].groupby("run_id"):
        last = g.sort_values(col).iloc[-1]
        at = last["diverged_kimg"] if x == "kimg" and not math.isnan(last["diverged_kimg"]) else last[col]
        ax.scatter([at], [last["value"]], color=styles[last["method"]].color, **DIVERGED_MARKER)
    for run_id, g in rows[rows["status"] == "running"].groupby("run_id"):
        last = g.sort_values(col).iloc[-1]
        ax.scatter([last[col]], [last["value"]], facecolors="none", edgecolors=styles[last["method"]].color,
                   s=40, linewidths=1.2, zorder=5)


def _summary_panel(ax, data: pd.DataFrame, styles: dict, lrs: list[float]) -> None:
    finals = final_values(data)
    ok = finals[~finals["status"].isin(["diverged", "failed"])]
    for method, g in ok.groupby("method", sort=True):
        m = _mean_sem(g, "lr_g")
        under = _under(styles, method)
        ax.errorbar(m["lr_g"], m["mean"], yerr=m["sem"], markersize=4.5 + 0.8 * under, linewidth=1.3 + 0.25 * under,
                    capsize=2.5, **styles[method].line())
    lost = finals.groupby(["method", "lr_g"]).filter(lambda g: g["status"].isin(["diverged", "failed"]).all())
    for (method, lr), _ in lost.groupby(["method", "lr_g"]):
        ax.scatter([lr], [1.0], transform=ax.get_xaxis_transform(), color=styles[method].color,
                   clip_on=False, **DIVERGED_MARKER)
    ax.set_xscale("log")
    if lrs:  # a tick per learning rate of the grid, written 1e-4, with room either side
        ax.set_xlim(min(lrs) / 3, max(lrs) * 3)
        ax.xaxis.set_major_locator(ticker.FixedLocator(lrs))
        ax.xaxis.set_major_formatter(ticker.FixedFormatter([lr_text(lr) for lr in lrs]))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("generator learning rate")
    ax.set_title("final value vs learning rate")


@dataclass
class _Row:
    suite: str
    metric: str
    label: str
    sel: pd.DataFrame
    cap: float
    log: bool
    lrs: list
    batch: int | None = None  # the row's batch size when rows are split by batch size


def _plan(table: pd.DataFrame, metric: str | None, by_batch: bool = False) -> list[_Row]:
    """One row per suite and metric, or with ``by_batch`` one per batch size too (teacher rows in each)."""
    plan = []
    for suite, m in _rows(table, metric):
        part = table[table["suite"] == suite]
        one_step = part["method"] != TEACHER
        batches = sorted(int(b) for b in part.loc[one_step, "batch"].dropna().unique()) if by_batch else [None]
        for batch in batches:
            rows = part if batch is None else part[~one_step | (part["batch"] == batch)]
            sel = _selected(rows, m)
            n = sel["n_samples"].min() if len(sel) else None
            cap = _cap(sel, m)
            lrs = sorted(rows.loc[rows["method"] != TEACHER, "lr_g"].dropna().unique())
            plan.append(_Row(suite, m, metric_label(m, None if n is pd.NA else n), sel, cap,
                             _log_helps(sel["value"].clip(upper=cap), m), [float(lr) for lr in lrs], batch))
    return plan


def _draw_row(axes: list, row: _Row, table: pd.DataFrame, styles: dict, x: str = "kimg") -> None:
    """Draw one row's panels into ``axes`` (one per learning rate, then the summary), wherever they live."""
    for ax, lr in zip(axes, row.lrs):
        _curves_panel(ax, row.sel[row.sel["lr_g"] == lr], styles, row.metric, x)
        batch = "" if row.batch is None else f" · batch {row.batch}"
        ax.set_title(f"{plain_text(row.suite)}{batch} · lr = {lr_text(lr)}")
        ax.set_xlabel(AXIS_LABELS[x])
    _summary_panel(axes[-1], row.sel, styles, row.lrs)
    for i, ax in enumerate(axes):
        _teacher_line(ax, table, row.suite, row.metric)
        ax.set_ylabel(row.label)
        if row.log:
            ax.set_yscale("log")
    curve_axes = axes[:-1]
    if curve_axes:  # one y range per row, so learning rates compare at a glance
        lo = min(a.get_ylim()[0] for a in curve_axes)
        hi = max(a.get_ylim()[1] for a in curve_axes)
        for a in curve_axes:
            a.set_ylim(lo, hi)
    for a in axes:
        _clip_top(a, row.cap)
        if row.log:
            _log_ticks(a)


def robustness_figure(table: pd.DataFrame, metric: str | None = None, x: str = "kimg",
                      by_batch: bool = False) -> Figure:
    """The robustness figure (see the module docstring): every panel, one legend above; BadInput when
    there is nothing to draw. ``x`` is the curves' axis: "kimg" (generator images), "gflop" (training
    FLOPs, one-off costs included) or "wall" (seconds in the update phases). ``by_batch``: a row of
    panels per batch size (otherwise each method's best configuration over batch sizes)."""
    if x not in AXES:
        raise BadInput(f"unknown x axis {x!r} (known: {', '.join(AXES)})")
    plan = _plan(table, metric, by_batch)
    styles = method_styles(table["method"].unique())
    ncols = max(len(r.lrs) for r in plan) + 1
    width = PANEL_SIZE[0] * ncols
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, PANEL_SIZE[1] * len(plan) + 0.9), layout="constrained")
        axes = fig.subplots(len(plan), ncols, squeeze=False)
        for r, row in enumerate(plan):
            used = list(axes[r][:len(row.lrs)]) + [axes[r][-1]]
            for ax in axes[r][len(row.lrs):-1]:
                ax.set_visible(False)
            _draw_row(used, row, table, styles, x)
        legend(fig, styles, width)
    return fig


def robustness_panels(table: pd.DataFrame, metric: str | None = None, by_batch: bool = False) -> list[dict]:
    """The same panels as separate figures, for a page that wraps them: per row ``{"suite", "metric",
    "label", "batch", "panels": [Figure, ...]}`` (the learning rates, then the summary). Legend:
    ``legend_figure``."""
    plan = _plan(table, metric, by_batch)
    styles = method_styles(table["method"].unique())
    out = []
    with matplotlib.rc_context(STYLE):
        for row in plan:
            figs = [Figure(figsize=PANEL_SIZE, layout="constrained") for _ in range(len(row.lrs) + 1)]
            _draw_row([f.add_subplot() for f in figs], row, table, styles)
            out.append({"suite": row.suite, "metric": row.metric, "label": row.label, "batch": row.batch,
                        "panels": figs})
    return out


def _name_text(fig: Figure) -> None:
    """SVG ids for the text a reader must see, so a browser can check it lies inside the canvas."""
    fig.draw_without_rendering()  # creates the tick labels the locators will draw
    for a, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        for axis in ("x", "y"):
            for i, label in enumerate(getattr(ax, f"get_{axis}ticklabels")()):
                label.set_gid(f"ticklabel-{a}-{axis}{i}")
        ax.title.set_gid(f"label-{a}-title")
        ax.xaxis.label.set_gid(f"label-{a}-x")
        ax.yaxis.label.set_gid(f"label-{a}-y")
    for i, box in enumerate(fig.legends):
        box.set_gid(f"legend-{i}")


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """The figure encoded as ``fmt`` (png, svg or pdf), cropped to what is drawn (nothing clipped)."""
    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        _name_text(fig)
        fig.savefig(buf, format=fmt, dpi=130, bbox_inches="tight", pad_inches=0.06,
                    metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def compute_scatter(table: pd.DataFrame, metric: str | None = None) -> Figure:
    """Quality against compute: each run's final value against its GFLOP at that evaluation, one
    point per run, one colour per method, one panel per suite (its headline metric, or ``metric``);
    an x marks a diverged run, the teacher's value is a dashed line. BadInput when no run has cost figures."""
    pairs = list(metric_per_suite(table, metric).items())
    styles = method_styles(table["method"].unique())
    finals = {suite: final_values(table[(table["suite"] == suite) & (table["metric"] == m)
                                                & (table["method"] != TEACHER)]).dropna(subset=["gflop"])
              for suite, m in pairs}
    if all(f.empty for f in finals.values()):
        raise BadInput("no run carries GFLOP figures (run directories written before cost accounting)")
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(PANEL_SIZE[0] * 1.3 * len(pairs), PANEL_SIZE[1] + 0.6), layout="constrained")
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (suite, m) in zip(axes, pairs):
            f = finals[suite]
            lost = f["status"].isin(["diverged", "failed"])
            for method, g in f[~lost].groupby("method", sort=True):
                ax.scatter(g["gflop"], g["value"], color=styles[method].color, marker=styles[method].marker, s=36,
                           zorder=4)
            ax.scatter(f.loc[lost, "gflop"], f.loc[lost, "value"],
                       color=[styles[k].color for k in f.loc[lost, "method"]], **DIVERGED_MARKER)
            _teacher_line(ax, table, suite, m)
            if len(f) and (f["gflop"] > 0).all():
                ax.set_xscale("log")
            if _log_helps(f["value"], m):
                ax.set_yscale("log")
            n = f["n_samples"].min() if len(f) else None
            ax.set_ylabel(metric_label(m, None if n is pd.NA else n))
            ax.set_xlabel("total training GFLOP")
            ax.set_title(f"{plain_text(suite)} · final value vs compute")
        legend(fig, styles, PANEL_SIZE[0] * 1.3 * len(pairs))
    return fig


def has_few_step_runs(table: pd.DataFrame) -> bool:
    """Whether some method was run at more than one number of network evaluations per sample."""
    runs = table[table["method"] != TEACHER].drop_duplicates("run_id")
    return bool(len(runs)) and bool((runs.groupby(["suite", "method"])["sample_nfe"].nunique() > 1).any())


def nfe_figure(table: pd.DataFrame, metric: str | None = None) -> Figure:
    """Quality against sampling cost: per method, the final value of its best configuration at each
    number of network evaluations per sample (mean and standard error over seeds), the teacher's
    sampler at its step counts as a dashed curve; one panel per suite, NFE on a log axis."""
    from .leaderboard import leaderboard

    pairs = list(metric_per_suite(table, metric).items())
    boards = {suite: leaderboard(table[table["suite"] == suite], m, per_nfe=True) for suite, m in pairs}
    if all(b["sample_nfe"].isna().all() for b in boards.values()):
        raise BadInput("no run carries its sampler's NFE (run directories written before cost accounting)")
    styles = method_styles(table["method"].unique())
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(PANEL_SIZE[0] * 1.3 * len(pairs), PANEL_SIZE[1] + 0.6), layout="constrained")
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (suite, m) in zip(axes, pairs):
            board = boards[suite].dropna(subset=["sample_nfe", "mean"]).sort_values("sample_nfe")
            for method, g in board.groupby("method", sort=True):
                style = TEACHER_STYLE if method == TEACHER else styles[method]
                ax.errorbar(g["sample_nfe"], g["mean"], yerr=g["sem"].fillna(0), color=style.color,
                            marker=style.marker or "s", linestyle=style.linestyle, linewidth=1.6, markersize=6,
                            capsize=2, zorder=2 if method == TEACHER else 4)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            if _log_helps(board["mean"], m):
                ax.set_yscale("log")
            n = board["n_samples"].min() if len(board) else None
            ax.set_ylabel(metric_label(m, None if n is pd.NA else n))
            ax.set_xlabel("network evaluations per sample (NFE)")
            ax.set_title(f"{plain_text(suite)} · final value vs NFE")
        legend(fig, styles, PANEL_SIZE[0] * 1.3 * len(pairs))
    return fig


def cli_plot_nfe(args) -> int:
    """``bench plot nfe DIR -o figure.png|.svg [--metric M]``: quality against network evaluations per sample."""
    out, fmt = Path(args.output), _figure_format(args.output)
    data = figure_bytes(nfe_figure(load(args.results_dir), args.metric), fmt)
    write_atomic(out, lambda p: Path(p).write_bytes(data))
    print(out)
    return 0


def _figure_format(output: str) -> str:
    fmt = Path(output).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise BadInput(f"-o {output}: use a .png, .svg or .pdf file name")
    return fmt


def cli_plot_compute(args) -> int:
    """``bench plot compute DIR -o figure.png|.svg [--metric M]``: the quality-versus-compute scatter."""
    out, fmt = Path(args.output), _figure_format(args.output)
    data = figure_bytes(compute_scatter(load(args.results_dir), args.metric), fmt)
    write_atomic(out, lambda p: Path(p).write_bytes(data))
    print(out)
    return 0


def cli_plot_robustness(args) -> int:
    """``bench plot robustness DIR -o figure.png|.svg [--metric M] [--x kimg|gflop|wall] [--by-batch]``."""
    out, fmt = Path(args.output), _figure_format(args.output)
    data = figure_bytes(robustness_figure(load(args.results_dir), args.metric, x=args.x,
                                          by_batch=args.by_batch), fmt)
    write_atomic(out, lambda p: Path(p).write_bytes(data))
    print(out)
    return 0
