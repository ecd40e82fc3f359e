"""One self-contained HTML report of a results folder: leaderboards, robustness, samples, runs, provenance.

The page reads at any width: figures come as one small SVG per panel under one shared legend and wrap
(rather than shrink) on a narrow screen; wide tables turn each row into a card when their box is
narrow (container queries), keeping the key cells first. The page is rendered by Jinja2 with autoescaping from ``templates/report.html.j2``; every string taken
from a run directory goes through it as text (nothing is marked safe). Figures are embedded as base64
``<img>`` data URIs (SVG and PNG), so an SVG can never run script inside the page; tables sort with a few
lines of plain JavaScript; nothing is loaded from the network.
"""
from __future__ import annotations

import base64
import datetime
import io
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import jinja2
import pandas as pd

from . import plots, robustness, verdict
from .beside import beside_headline
from .leaderboard import (LEADERBOARD_COLUMNS, ROBUSTNESS_DEFINITION, VALUE, best_configs, budget_text,
                          config_summaries, leaderboard, lr_robustness, noise_floor, value_header)
from .styles import legend_figure
from .table import direction_text, final_values, headline_metrics, load, load_runs, load_stats, metric_label
from .text import fmt, fmt_duration, fmt_kimg, lr_text
from .. import __version__
from ..errors import BadInput
from ..rundir import TEACHER, write_atomic

TEMPLATES = Path(__file__).parent / "templates"
STATUS_ORDER = ("done", "running", "diverged", "failed", "unknown")


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _num(value) -> str:
    """A cell's sort key: the number as text, or "" when missing (sorted last)."""
    return "" if _missing(value) else repr(float(value))


def _int(value) -> str:
    return "–" if _missing(value) else str(int(value))


def _cell(text, sort=None, cls="") -> dict:
    return {"text": text, "sort": text if sort is None else sort, "cls": cls}


def _leaderboard_table(board: pd.DataFrame) -> dict:
    """A leaderboard as the page shows it: a rank, then ``LEADERBOARD_COLUMNS``."""
    metric = board["metric"].iloc[0]
    label = value_header(board)
    columns = LEADERBOARD_COLUMNS
    head = ["#"] + [label.replace("-", "\u2011") if c.header == VALUE else c.header for c in columns]
    # How each kind of column looks; "key" cells lead a row shown as a card, "wide" ones take a line.
    classes = {"num": "num", "strong": "num strong key", "method": "method key", "config": "config wide",
               "runs": "runs"}
    rows = []
    for i, r in enumerate(board.to_dict("records"), 1):
        teacher = r["method"] == TEACHER
        cells = [_cell(str(i), _num(i), "num key")]
        for c in columns:
            cls = classes[c.kind] + (" teacher-name" if teacher and c.kind == "method" else "")
            cells.append(_cell(c.text(r), None if c.key is None else _num(c.key(r)), cls))
        rows.append({"cls": "teacher" if teacher else "", "cells": cells})
    return {"metric": metric, "label": label, "direction": direction_text(metric), "head": head,
            "rows": rows, "cards": True, "budget": budget_text(board)}


def _cost_section(t: pd.DataFrame, metric: str) -> dict | None:
    """Equal-compute leaderboard, robustness against GFLOP and the quality-versus-compute scatter of a
    suite; None when its runs carry no cost figures (written before cost accounting)."""
    if not t.loc[t["method"] != TEACHER, "gflop"].notna().any():
        return None
    try:
        board = _leaderboard_table(leaderboard(t, metric, at="gflop"))
    except BadInput:  # a method without cost figures: no common budget
        board = None
    svg = lambda fig: _uri(plots.figure_bytes(fig, "svg"), "image/svg+xml")  # noqa: E731
    return {"board": board, "figure": svg(plots.robustness_figure(t, metric, x="gflop")),
            "scatter": svg(plots.compute_scatter(t, metric))}


def _nfe_section(t: pd.DataFrame, metric: str) -> dict | None:
    """The per-NFE leaderboard and the quality-versus-NFE figure; None unless a method ran at several NFE."""
    if not plots.has_few_step_runs(t):
        return None
    return {"board": _leaderboard_table(leaderboard(t, metric, per_nfe=True)),
            "figure": _uri(plots.figure_bytes(plots.nfe_figure(t, metric), "svg"), "image/svg+xml")}


def _beside_table(t: pd.DataFrame, suite: str, metric: str) -> dict | None:
    """Coverage, density, Vendi and class balance beside the headline metric, per leaderboard row."""
    board = beside_headline(t, suite, metric)
    if board is None:
        return None
    others = board.attrs["metrics"]
    head = ["method", f"{metric_name(metric)}"] + [metric_name(m) for m in others]
    rows = []
    for r in board.to_dict("records"):
        cells = [_cell(r["method"], cls="method key" + (" teacher-name" if r["method"] == TEACHER else "")),
                 _cell(fmt(r["mean"], r["sem"] if r["n"] > 1 else None), _num(r["mean"]), "num strong key")]
        cells += [_cell(fmt(r[f"{m}_mean"], r[f"{m}_sem"] if r["n"] > 1 else None), _num(r[f"{m}_mean"]), "num")
                  for m in others]
        rows.append({"cls": "teacher" if r["method"] == TEACHER else "", "cells": cells})
    return {"head": head, "rows": rows, "cards": True,
            "directions": ", ".join(f"{metric_name(m)} {direction_text(m)}" for m in [metric, *others])}


def _robustness_table(rob: pd.DataFrame) -> dict:
    lr_cols = [c for c in rob.columns if c.startswith("lr=") and rob[c].notna().any()]
    metric = rob["metric"].iloc[0]
    head = ["method", "score", "unit", "lrs scored", "diverged", "best lr", "worst lr"] + [
        f"{metric_name(metric)} at lr={lr_text(float(c[3:]))}" for c in lr_cols]
    rows = []
    for r in rob.to_dict("records"):
        rows.append({"cls": "", "cells": [
            _cell(r["method"], cls="method key"),
            _cell(fmt(r["score"]) if r["lrs"] > 1 else "needs ≥ 2 lrs", _num(r["score"]), "num strong key"),
            _cell(r["spread_unit"]),
            _cell(str(r["lrs"]), _num(r["lrs"]), "num"),
            _cell(f"{100 * r['diverged']:.0f}% of {r['runs']}", _num(r["diverged"]), "num"),
            _cell(f"{lr_text(r['best_lr'])} → {fmt(r['best_value'])}" if r["lrs"] else "–",
                  _num(r["best_value"]), "num"),
            _cell(f"{lr_text(r['worst_lr'])} → {fmt(r['worst_value'])}" if r["lrs"] else "–",
                  _num(r["worst_value"]), "num"),
        ] + [_cell(fmt(r[c]), _num(r[c]), "num") for c in lr_cols]})
    return {"head": head, "rows": rows, "cards": True}


def _study(t: pd.DataFrame, metric: str) -> dict | None:
    """The robustness measures with bootstrap intervals over seeds and the verdict they generate."""
    try:
        analysis = robustness.analyse(t, metric, n_boot=1000)[0]
    except BadInput:  # only teacher rows, or a metric the measures are not defined for
        return None
    flat = verdict.flatness_view(analysis)
    return {"verdict": verdict.verdict(analysis), "measures": _arm_table(verdict.measures_view(analysis)),
            "flatness": _arm_table(flat) if len(flat) else None}


def _arm_table(view: pd.DataFrame) -> dict:
    """A robustness view (arm, batch, then interval strings) as a card table."""
    rows = [{"cls": "", "cells": [_cell(r["arm"], cls="method key"), _cell(str(r["batch"]))]
             + [_cell(str(r[c]), cls="interval") for c in view.columns[2:]]} for r in view.to_dict("records")]
    return {"head": list(view.columns), "rows": rows, "cards": True}


def metric_name(metric: str) -> str:
    """The display name of a metric (FID, IS, ...)."""
    return metric_label(metric)


def _latest_grid(path: str) -> tuple[Path, float] | None:
    """The run's last sample grid and its kimg (from the file name), or None."""
    pngs = sorted((Path(path) / "samples").glob("kimg*.png"))
    if not pngs:
        return None
    try:
        kimg = float(pngs[-1].stem[4:])
    except ValueError:
        kimg = math.nan
    return pngs[-1], kimg


def _caption(run, kimg: float, value, metric: str) -> dict:
    """A sample grid's caption in two short lines: the value, then seed, kimg and (unless done) status."""
    detail = f"seed {run.seed} · kimg {fmt_kimg(kimg)}" + ("" if run.status == "done" else f" · {run.status}")
    return {"value": f"{metric_name(metric)} {fmt(value)}" if value is not None else "", "detail": detail}


def _final_value(finals: pd.DataFrame, run_id: str):
    value = finals.loc[finals["run_id"] == run_id, "value"]
    return float(value.iloc[0]) if len(value) else None


def _sample_grid(table: pd.DataFrame, runs: pd.DataFrame, suite: str, metric: str) -> dict | None:
    """The teacher's latest grid, then per learning rate each method's best configuration's latest grid
    (first seed with one): ``{"teacher": cell | None, "groups": [{"lr", "cells"}]}``."""
    t = table[(table["suite"] == suite) & (table["metric"] == metric)]
    finals = final_values(t)
    best = best_configs(config_summaries(finals, metric), metric, ["method", "lr_g"]) if len(finals) else finals
    cells = {}
    for b in best.itertuples():
        for run in runs[runs["config_id"] == b.config_id].sort_values("seed").itertuples():
            found = _latest_grid(run.path)
            if found is None:
                continue
            cells[(b.method, b.lr_g)] = {"method": b.method, "src": _uri(found[0].read_bytes(), "image/png"),
                                         "run_id": run.run_id,
                                         **_caption(run, found[1], _final_value(finals, run.run_id), metric)}
            break
    if not cells:
        return None
    teacher = next((c for (m, _), c in cells.items() if m == TEACHER), None)
    lrs = sorted({lr for m, lr in cells if m != TEACHER})
    groups = [{"lr": f"lr = {lr_text(lr)}",
               "cells": [c for (m, l), c in sorted(cells.items()) if l == lr and m != TEACHER]} for lr in lrs]
    return {"teacher": teacher, "groups": groups}


GRID_SIDE = 8  # the runner's sample grids: the first 64 samples, 8 by 8, one pixel apart


def _first_grid_row(png: Path) -> tuple[bytes, int]:
    """The top row of a sample grid (its first eight latents) as PNG, and a display width in CSS px that
    enlarges it by a whole factor (at most 640 px wide); the whole grid, at most 160 px high, if it is not
    8 by 8."""
    from PIL import Image

    with Image.open(png) as image:
        width, height = image.size
        if width != height or (width - 1) % GRID_SIDE:
            return png.read_bytes(), width * max(1, min(8, 160 // height))
        buf = io.BytesIO()
        image.crop((0, 0, width, (width - 1) // GRID_SIDE + 1)).save(buf, format="PNG")
    return buf.getvalue(), width * max(1, min(8, 640 // width))


def _side_by_side(table: pd.DataFrame, runs: pd.DataFrame, suite: str, metric: str) -> dict | None:
    """One row per method (its leaderboard configuration, the teacher first), all from one seed's
    latent bank, so each column is the same latent through every method."""
    t = table[(table["suite"] == suite) & (table["metric"] == metric)]
    finals = final_values(t)
    board = leaderboard(t, metric)
    candidates = {}
    for b in board.itertuples():
        with_grid = {int(r.seed): r for r in runs[runs["config_id"] == b.config_id].itertuples()
                     if r.seed is not pd.NA and _latest_grid(r.path) is not None}
        if with_grid:
            candidates[b.method] = (b, with_grid)
    if not candidates:
        return None
    seeds = Counter(seed for _, with_grid in candidates.values() for seed in with_grid)
    seed = min(seeds, key=lambda s: (-seeds[s], s))  # the seed most methods have
    rows = []
    for method, (b, with_grid) in candidates.items():
        if seed not in with_grid:
            continue
        run = with_grid[seed]
        png, kimg = _latest_grid(run.path)
        strip, width = _first_grid_row(png)
        value = _final_value(finals, run.run_id)
        setting = "multi-step sampler" if method == TEACHER else (
            f"lr = {lr_text(b.lr_g)}" if not math.isnan(b.lr_g) else "")
        rows.append({"method": method, "teacher": method == TEACHER, "setting": setting,
                     "src": _uri(strip, "image/png"), "width": width, "run_id": run.run_id,
                     **_caption(run, kimg, value, metric)})
    rows.sort(key=lambda r: not r["teacher"])  # the teacher on top, then the leaderboard's order
    missing = sorted(set(candidates) - {r["method"] for r in rows})
    return {"seed": seed, "rows": rows, "missing": missing}


def _svg(fig) -> str:
    return _uri(plots.figure_bytes(fig, "svg"), "image/svg+xml")


def _figures(table: pd.DataFrame, metric: str) -> dict:
    """The robustness panels as SVGs, row by row, and their shared legend."""
    one_step = table[table["method"] != TEACHER]
    rows = plots.robustness_panels(table, metric, by_batch=one_step["batch"].nunique() > 1)
    return {"legend": _svg(legend_figure(table["method"].unique())),
            "rows": [{"label": r["label"] + ("" if r["batch"] is None else f", batch {r['batch']}"),
                      "panels": [_svg(f) for f in r["panels"]]} for r in rows]}


def _compute_table(runs: pd.DataFrame, stats: pd.DataFrame, suite: str) -> dict:
    """Per method: runs, kimg trained, wall time, median images/s and peak memory from stats.jsonl."""
    r = runs[runs["suite"] == suite]
    s = stats[stats["suite"] == suite] if len(stats) else stats
    head = ["method", "runs", "kimg trained (total)", "wall time (total)", "images/s (median tick)", "peak memory"]
    rows = []
    for method, g in r.groupby("method"):
        st = s[s["method"] == method] if len(s) else s
        ips = st["images_per_s"].median() if "images_per_s" in st else math.nan
        mem = st["peak_mem_mb"].max() if "peak_mem_mb" in st else math.nan
        rows.append({"cls": "", "cells": [
            _cell(method), _cell(str(len(g)), _num(len(g)), "num"),
            _cell(fmt_kimg(g["kimg_done"].sum()), _num(g["kimg_done"].sum()), "num"),
            _cell(fmt_duration(g["wall_time_s"].sum()), _num(g["wall_time_s"].sum()), "num"),
            _cell(fmt(ips), _num(ips), "num"),
            _cell("–" if math.isnan(mem) else f"{mem:,.0f} MB", _num(mem), "num")]})
    return {"head": head, "rows": rows}


def _whole_batches(done: float, budget: float, batch) -> bool:
    """Whether ``done`` overshoots ``budget`` only because training takes whole batches."""
    if _missing(done) or _missing(budget) or _missing(batch) or done <= budget:
        return False
    return done * 1000 <= math.ceil(budget * 1000 / int(batch)) * int(batch) + 1e-6


def _runs_table(runs: pd.DataFrame) -> dict:
    """Every run with its settings; ``overshoot`` explains a run that trained a little past its budget."""
    head = ["run", "suite", "method", "status", "lr gen / fake", "batch", "seed", "kimg done / budget",
            "wall time", "diverged at", "hyperparameters in use"]
    rows, overshoot = [], None
    for r in runs.sort_values(["suite", "method", "lr_g", "seed", "run_id"]).to_dict("records"):
        config = r["_config"]
        hp = {**(config.get("hparams") or {}), **(config.get("hparams_in_use") or {})}
        lr = "–" if math.isnan(r["lr_g"]) else f"{lr_text(r['lr_g'])} / {lr_text(r['lr_fake'])}"
        kimg = f"{fmt_kimg(r['kimg_done'])} / {fmt_kimg(r['kimg_budget'])}"
        if _whole_batches(r["kimg_done"], r["kimg_budget"], r["batch"]):
            kimg += " †"
            overshoot = overshoot or (r["kimg_budget"], int(r["batch"]), r["kimg_done"])
        div = ("–" if math.isnan(r["diverged_kimg"]) else
               f"kimg {r['diverged_kimg']:g}, step {_int(r['diverged_step'])}: {r['diverged_reason']}")
        status = r["status"] if r["status"] in STATUS_ORDER else "unknown"
        rows.append({"cls": "", "config_json": json.dumps(config, indent=2, sort_keys=True, default=str), "cells": [
            _cell(r["run_id"], cls="mono key"), _cell(r["suite"]), _cell(r["method"], cls="method key"),
            _cell(r["status"], cls=f"status status-{status}"),
            _cell(lr, _num(r["lr_g"]), "num"),
            _cell(_int(r["batch"]), _num(r["batch"]), "num"),
            _cell(_int(r["seed"]), _num(r["seed"]), "num"),
            _cell(kimg, _num(r["kimg_done"]), "num"),
            _cell(fmt_duration(r["wall_time_s"]), _num(r["wall_time_s"]), "num"),
            _cell(div, _num(r["diverged_kimg"])),
            _cell(", ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "–", cls="config wide"),
        ]})
    note = None
    if overshoot:
        budget, batch, done = overshoot
        note = (f"† Training takes whole batches, so a run stops at the first step that reaches its budget: "
                f"{fmt_kimg(budget)} kimg at batch {batch} is {math.ceil(budget * 1000 / batch)} steps, "
                f"{done * 1000:.0f} images ({fmt_kimg(done)} kimg).")
    return {"head": head, "rows": rows, "cards": True, "note": note}


def _provenance(runs: pd.DataFrame) -> list[dict]:
    """What produced the numbers: each distinct value with the number of runs that recorded it."""
    counters = defaultdict(Counter)
    for manifest in runs["_manifest"]:
        counters["git hash"][str(manifest.get("git_hash") or "unknown")] += 1
        for package, version in sorted((manifest.get("versions") or {}).items()):
            counters[f"version: {package}"][str(version)] += 1
        hardware = manifest.get("hardware") or {}
        for key in sorted(hardware):
            value = hardware[key]
            counters[f"hardware: {key}"][", ".join(map(str, value)) if isinstance(value, list) else str(value)] += 1
        for metric, impl in sorted((manifest.get("metrics") or {}).items()):
            counters[f"metric: {metric}"][str(impl)] += 1
    return [{"item": item, "seen": [{"value": v or "–", "runs": n} for v, n in c.most_common()]}
            for item, c in counters.items()]


def context(results_dir) -> dict:
    """Everything the template shows, as plain strings, numbers and data URIs."""
    runs = load_runs(results_dir, full=True)
    table = load(results_dir, runs)
    stats = load_stats(results_dir, runs)
    if table.empty:
        raise BadInput(f"the runs under {str(results_dir)!r} have no measurements yet (no metrics.jsonl rows)")
    headline = headline_metrics(table)
    suites = []
    for suite, metric in headline.items():
        t = table[table["suite"] == suite]
        boards = [_leaderboard_table(leaderboard(t, metric))]
        for other in sorted(set(t["metric"]) - {metric}):  # unregistered ones too, labelled so
            boards.append(_leaderboard_table(leaderboard(t, other)))
        try:
            rob = _robustness_table(lr_robustness(t, metric))
        except BadInput:  # only teacher rows: nothing to score
            rob = None
        suites.append({
            "name": suite, "metric": metric, "metric_name": metric_name(metric), "boards": boards,
            "robustness": rob, "figures": _figures(t, metric),
            "samples": _sample_grid(table, runs, suite, metric),
            "side_by_side": _side_by_side(table, runs, suite, metric), "compute": _compute_table(runs, stats, suite),
            "runs": int((runs["suite"] == suite).sum()), "cost": _cost_section(t, metric),
            "study": _study(t, metric), "noise_floor": noise_floor(t, suite), "nfe": _nfe_section(t, metric),
            "beside": _beside_table(t, suite, metric),
        })
    status = runs["status"].value_counts()
    return {
        "title": f"distill-bench report: {Path(results_dir).resolve().name}",
        "results_dir": str(Path(results_dir).resolve()),
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "n_runs": len(runs), "n_measurements": len(table),
        "status_counts": [{"status": s, "n": int(status.get(s, 0))} for s in STATUS_ORDER if status.get(s, 0)],
        "suites": suites, "runs": _runs_table(runs), "provenance": _provenance(runs),
        "robustness_definition": ROBUSTNESS_DEFINITION,
        "study_definitions": list(robustness.DEFINITIONS.values()),
        "kid_measured": "kid" in set(table["metric"]),
    }


def render(ctx: dict) -> str:
    """The HTML page of a context (autoescaped)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**ctx)


def build_report(results_dir, output) -> Path:
    """Write the report of ``results_dir`` to ``output`` (atomically); returns its path."""
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise BadInput(f"-o {output}: the report is one .html file")
    html = render(context(results_dir))
    write_atomic(output, lambda p: Path(p).write_text(html, encoding="utf-8"))
    return output


def cli_report(args) -> int:
    """``bench report DIR -o reports/NAME/index.html``."""
    print(build_report(args.results_dir, args.output))
    return 0
