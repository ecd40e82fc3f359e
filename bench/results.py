"""The results table (Contract 3) and the views derived from it: leaderboards and robustness scores.

``load(dir)`` reads every run directory under ``dir`` (any depth; a run directory is one holding
``config.json``) into one tidy long DataFrame, one row per measurement in ``metrics.jsonl``:

    suite, run_id, method, lr_g, lr_fake, batch, seed, kimg, metric, value, n_samples, ema, status,
    impl, images_seen, eval_time_s, wall_time_s, kimg_done, kimg_budget, diverged_kimg,
    config_id, config, hp_<name> for every method hyperparameter (the teacher's sampler and steps too)

``images_seen`` is ``kimg * 1000`` generator images at that evaluation; ``wall_time_s``, ``kimg_done``
and ``diverged_kimg`` are the run's totals from ``manifest.json``; ``config_id`` names a configuration
(suite options, method hyperparameters, learning rates, batch; every seed shares it) and ``config``
spells it for readers. Runs still in progress (status ``running``), diverged runs and a torn last JSONL
line are all fine; a run without ``metrics.jsonl`` simply has no rows (``load_runs`` still lists it).

Everything here is pandas on that table: no training code, no torch, so a copied results folder can be
summarised anywhere.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import BadInput
from .rundir import read_jsonl, write_atomic

HP_PREFIX = "hp_"
TEACHER = "teacher"
STATUSES = ("done", "running", "diverged", "failed")

# Which way is better, per metric name of the run directory contract.
DIRECTIONS = {
    "fid": "lower", "kid": "lower", "frechet": "lower", "sliced_wasserstein": "lower",
    "is": "higher", "precision": "higher", "recall": "higher",
    "aesthetic": "higher", "image_reward": "higher", "pickscore_raw": "higher",
}
LABELS = {
    "fid": "FID", "kid": "KID", "frechet": "Fréchet", "sliced_wasserstein": "Sliced W.", "is": "IS",
    "precision": "Precision", "recall": "Recall", "aesthetic": "Aesthetic", "image_reward": "ImageReward",
    "pickscore_raw": "PickScore",
}
# The first of these that a suite measures heads its leaderboard, plots and report section.
HEADLINE = ("fid", "frechet", "image_reward", "pickscore_raw", "aesthetic", "is")
# Metrics that are always positive: their robustness spread is a ratio (in decades), not a difference.
POSITIVE = frozenset({"fid", "frechet", "sliced_wasserstein", "is", "aesthetic", "pickscore_raw"})

RUN_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "status", "kimg_budget",
               "kimg_done", "wall_time_s", "diverged_kimg", "diverged_step", "diverged_reason", "started",
               "ended", "git_hash", "config_id", "config", "path"]
TABLE_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "kimg", "metric", "value",
                 "n_samples", "ema", "status", "impl", "images_seen", "eval_time_s", "wall_time_s", "kimg_done",
                 "kimg_budget", "diverged_kimg", "config_id", "config"]


# --- reading run directories ------------------------------------------------------------------------

def _read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        warnings.warn(f"{path}: unparseable JSON, ignored")
        return None
    return obj if isinstance(obj, dict) else None


def find_runs(results_dir) -> list[Path]:
    """Every run directory (holding ``config.json``) under ``results_dir``, hidden folders skipped."""
    root = Path(results_dir)
    if not root.is_dir():
        raise BadInput(f"results folder {str(results_dir)!r} does not exist")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "config.json" in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []  # a run directory's subfolders (samples/) hold no runs
    return found


def _number(value):
    """A finite float, or NaN for None and anything that is not a number."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def config_label(hparams: dict, lr_g, lr_fake, batch) -> str:
    """A configuration spelt out for readers: hyperparameters, learning rates, batch."""
    parts = [f"{k}={v}" for k, v in sorted(hparams.items())]
    if not _isnan(lr_g):
        parts.append(f"lr={lr_text(lr_g)}" if lr_fake == lr_g or _isnan(lr_fake)
                     else f"lr={lr_text(lr_g)}/{lr_text(lr_fake)}")
    if not _isnan(batch):
        parts.append(f"batch={int(batch)}")
    return ", ".join(parts)


def lr_text(lr: float) -> str:
    """A learning rate as papers write it: 1e-4, 2.5e-4, 0.5."""
    if lr == 0 or 0.1 <= abs(lr) < 1e3:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _run_record(directory: Path) -> dict | None:
    config = _read_json(directory / "config.json")
    if config is None:
        return None
    manifest = _read_json(directory / "manifest.json") or {}
    hparams = config.get("hparams") or {}
    if not isinstance(hparams, dict):
        hparams = {}
    in_use = config.get("hparams_in_use")  # defaults resolved for the data (SIM's huber_c), for readers
    shown = {**hparams, **in_use} if isinstance(in_use, dict) else hparams
    diverged = manifest.get("diverged") or {}
    if not isinstance(diverged, dict):
        diverged = {}
    lr_g, lr_fake, batch = _number(config.get("lr_g")), _number(config.get("lr_fake")), _number(config.get("batch"))
    key = json.dumps([config.get("suite"), config.get("suite_options"), config.get("method"), hparams,
                      config.get("lr_g"), config.get("lr_fake"), config.get("batch")], sort_keys=True, default=str)
    status = manifest.get("status")
    record = dict(
        suite=str(config.get("suite", directory.parent.name)), run_id=str(config.get("run_id", directory.name)),
        method=str(config.get("method", "?")), lr_g=lr_g, lr_fake=lr_fake, batch=batch,
        seed=_number(config.get("seed")), status=str(status) if status else "unknown",
        kimg_budget=_number(config.get("kimg")), kimg_done=_number(manifest.get("kimg_done")),
        wall_time_s=_number(manifest.get("wall_time_s")), diverged_kimg=_number(diverged.get("kimg")),
        diverged_step=_number(diverged.get("step")), diverged_reason=diverged.get("reason"),
        started=manifest.get("started"), ended=manifest.get("ended"), git_hash=manifest.get("git_hash"),
        config_id=hashlib.sha1(key.encode()).hexdigest()[:8],
        config=config_label(shown, lr_g, lr_fake, batch), path=str(directory),
    )
    record.update({HP_PREFIX + str(k): v for k, v in shown.items()})
    record["_config"], record["_manifest"] = config, manifest
    return record


def _runs_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    hp = sorted(c for c in frame.columns if c.startswith(HP_PREFIX))
    frame = frame[RUN_COLUMNS + hp + ["_config", "_manifest"]]
    for col in ("batch", "seed", "diverged_step"):
        frame[col] = frame[col].astype("Int64")
    return frame


def load_runs(results_dir, *, full: bool = False) -> pd.DataFrame:
    """One row per run directory (config and manifest summary, ``hp_`` columns).

    With ``full=True`` the parsed ``config.json`` and ``manifest.json`` ride along in the columns
    ``_config`` and ``_manifest`` (dicts), for the report's configuration and provenance sections.
    BadInput when the folder is missing or holds no run directory.
    """
    records = [r for r in map(_run_record, find_runs(results_dir)) if r is not None]
    if not records:
        raise BadInput(f"no run directories (folders with config.json) under {str(results_dir)!r}")
    frame = _runs_frame(records)
    return frame if full else frame.drop(columns=["_config", "_manifest"])


def load(results_dir, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The long results table of Contract 3 (see the module docstring for its columns).

    ``runs``, a ``load_runs`` table of the same folder, saves reading the run directories again.
    """
    runs = load_runs(results_dir) if runs is None else runs
    hp = [c for c in runs.columns if c.startswith(HP_PREFIX)]
    rows = []
    for base in runs.drop(columns=["_config", "_manifest"], errors="ignore").to_dict("records"):
        for m in read_jsonl(Path(base["path"]) / "metrics.jsonl"):
            if "metric" not in m or "kimg" not in m:
                continue
            kimg = _number(m.get("kimg"))
            rows.append({**base, "kimg": kimg, "metric": str(m["metric"]), "value": _number(m.get("value")),
                         "n_samples": _number(m.get("n_samples")), "ema": bool(m.get("ema", False)),
                         "impl": m.get("impl"), "images_seen": kimg * 1000, "eval_time_s": _number(m.get("time_s"))})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS + hp)
    table["n_samples"] = table["n_samples"].astype("Int64")
    table["batch"] = table["batch"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    table["ema"] = table["ema"].astype(bool)
    for col in ("kimg", "value", "lr_g", "lr_fake", "images_seen", "eval_time_s", "wall_time_s"):
        table[col] = table[col].astype(float)
    return table


def load_stats(results_dir, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every run's ``stats.jsonl`` as one table: suite, run_id, method, lr_g, seed, status + logged columns."""
    runs = load_runs(results_dir) if runs is None else runs
    frames = []
    for run in runs.to_dict("records"):
        rows = read_jsonl(Path(run["path"]) / "stats.jsonl")
        if rows:
            frame = pd.DataFrame(rows)
            for col in ("status", "seed", "lr_g", "method", "run_id", "suite"):
                frame.insert(0, col, run[col])
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["suite", "run_id", "method", "lr_g", "seed", "status"])


# --- derived views --------------------------------------------------------------------------------

def _prefer_ema(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and metric, the EMA rows where the run has any, otherwise its raw rows."""
    has_ema = table.groupby(["run_id", "metric"])["ema"].transform("any")
    return table[table["ema"] == has_ema]


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, metric, kimg): the scheduled evaluation (EMA preferred; the first row written)."""
    t = _prefer_ema(table.dropna(subset=["kimg"]))
    return t.groupby(["run_id", "metric", "kimg"], sort=False).head(1).sort_values(["run_id", "metric", "kimg"])


def final_values(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, metric): the last evaluation (EMA preferred; most samples, then latest row)."""
    t = _prefer_ema(table.dropna(subset=["kimg"])).copy()
    t["_order"] = np.arange(len(t))
    t = t.sort_values(["run_id", "metric", "kimg", "n_samples", "_order"], na_position="first")
    return t.groupby(["run_id", "metric"], sort=False).tail(1).drop(columns="_order")


def direction(metric: str) -> str:
    """"lower" or "higher" is better; BadInput for a metric this project does not know."""
    try:
        return DIRECTIONS[metric]
    except KeyError:
        raise BadInput(f"unknown metric {metric!r} (known: {', '.join(sorted(DIRECTIONS))})") from None


def samples_label(n) -> str:
    """1000 -> "1k", 50000 -> "50k", 256 -> "256"."""
    if _isnan(n) or n is pd.NA:
        return "?"
    n = int(n)
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def metric_label(metric: str, n_samples=None) -> str:
    """A metric's display name with its sample count, e.g. "FID-1k"."""
    name = LABELS.get(metric, metric)
    return name if n_samples is None or n_samples is pd.NA else f"{name}-{samples_label(n_samples)}"


def headline_metrics(table: pd.DataFrame) -> dict[str, str]:
    """Each suite's headline metric: the first of HEADLINE it measures (else its first known metric)."""
    out = {}
    for suite, t in table.groupby("suite", sort=True):
        measured = set(t["metric"])
        known = [m for m in HEADLINE if m in measured] + sorted(m for m in measured if m in DIRECTIONS)
        if known:
            out[suite] = known[0]
    return out


def _sem(values: pd.Series) -> float:
    values = values.dropna()
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


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
                   runs=len(g), **{s: int(counts.get(s, 0)) for s in STATUSES}, config_id=config_id)
        row.update({c: first[c] for c in hp})
        out.append(row)
    return pd.DataFrame(out)


def best_configs(summaries: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per group, the configuration with the fewest diverged runs, then the best mean over seeds."""
    s = summaries.copy()
    s["_diverged_frac"] = s["diverged"] / s["runs"]
    s["_key"] = s["mean"] if direction(metric) == "lower" else -s["mean"]
    s = s.sort_values(["_diverged_frac", "_key"], na_position="last", kind="stable")
    return s.groupby(by, sort=True, dropna=False).head(1).drop(columns=["_diverged_frac", "_key"])


def _check_metric(table: pd.DataFrame, metric: str) -> None:
    direction(metric)
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


def leaderboard(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per suite: each method's best configuration and its final value (mean, sem, n over seeds).

    The best configuration (hyperparameters, learning rates, batch) has the fewest diverged runs, then
    the best mean over seeds of the final value. Columns: suite, metric, label ("FID-1k"), direction,
    method, config, lr_g, lr_fake, batch, mean, sem, n, n_samples (fewest behind any seed), kimg and
    images_seen at the final evaluation, wall_time_s, runs and one count per status (of that
    configuration), config_id, method_runs and method_diverged (over all the method's configurations), hp_*.
    The teacher's multi-step row is there too (method "teacher"). Rows are sorted best first.
    ``metric=None`` takes each suite's headline metric; an unknown or unmeasured metric is BadInput.
    """
    boards = []
    for suite, m in metric_per_suite(table, metric).items():
        finals = final_values(table[(table["suite"] == suite) & (table["metric"] == m)])
        best = best_configs(config_summaries(finals, m), m, ["suite", "method"])
        best = best.sort_values("mean", ascending=direction(m) == "lower", na_position="last", kind="stable")
        best.insert(2, "direction", direction(m))
        best.insert(2, "label", [metric_label(m, n) for n in best["n_samples"]])
        per_method = finals.groupby("method")
        best["method_runs"] = best["method"].map(per_method["run_id"].nunique())
        best["method_diverged"] = best["method"].map(
            finals[finals["status"] == "diverged"].groupby("method")["run_id"].nunique()).fillna(0).astype(int)
        boards.append(best)
    board = pd.concat(boards, ignore_index=True)
    hp = [c for c in board.columns if c.startswith(HP_PREFIX)]
    return board[[c for c in board.columns if c not in hp] + [c for c in hp if board[c].notna().any()]]


def spread(values, metric: str) -> float:
    """Worst against best of ``values``: log10 of their ratio for positive metrics, else their difference."""
    values = np.asarray([v for v in values if not _isnan(v)], dtype=float)
    if len(values) < 2:
        return math.nan
    if metric in POSITIVE and (values > 0).all():
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


def robustness(table: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """A robustness score per (suite, method) that a reader can sort by; see ROBUSTNESS_DEFINITION.

    Columns: suite, metric, method, score, spread_unit ("decades" or the metric), diverged (fraction
    of the method's runs), runs, best_lr, best_value, worst_lr, worst_value, lrs (how many were scored),
    and one column per learning rate ``lr=<value>`` with the value used. The score covers the learning
    rates at which every method of the suite has a value (each method's own grid when fewer than two
    are shared), so scores compare like with like. Sorted most robust first.
    """
    out = []
    for suite, m in metric_per_suite(table, metric).items():
        t = table[(table["suite"] == suite) & (table["metric"] == m) & (table["method"] != TEACHER)]
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
        lower = direction(m) == "lower"
        for method, g in per_lr.groupby("method"):
            scored = g[g["lr_g"].isin(common)] if len(common) >= 2 else g
            best = scored.loc[scored["mean"].idxmin() if lower else scored["mean"].idxmax()] if len(scored) else None
            worst = scored.loc[scored["mean"].idxmax() if lower else scored["mean"].idxmin()] if len(scored) else None
            row = dict(suite=suite, metric=m, method=method, score=spread(scored["mean"], m),
                       spread_unit="decades" if m in POSITIVE and (scored["mean"] > 0).all() else LABELS.get(m, m),
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


# --- text output ----------------------------------------------------------------------------------

def fmt(value, sem=None) -> str:
    """A number for people: about four significant digits, "± sem" when given; "–" for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    a = abs(value)
    if a == 0:
        return "0"
    text = f"{value:.1f}" if a >= 100 else f"{value:.2f}" if a >= 1 else f"{value:.3g}" if a >= 1e-3 else f"{value:.2e}"
    if sem is not None and sem is not pd.NA and not _isnan(sem):
        text += f" ± {float(sem):.2g}"
    return text


def runs_text(row) -> str:
    """A configuration's runs by status, e.g. "2 done, 1 diverged"."""
    return ", ".join(f"{row[s]} {s}" for s in STATUSES if row[s]) or "–"


def fmt_kimg(kimg) -> str:
    """Training progress in kimg: 4 -> "4", 2.048 -> "2.05"."""
    return "–" if _isnan(kimg) else f"{kimg:.3g}"


def fmt_duration(seconds) -> str:
    """12.3 -> "12 s", 4000 -> "1.1 h"."""
    if _isnan(seconds):
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of strings (no tabulate dependency)."""
    cells = [[str(c) for c in frame.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(frame.columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def leaderboard_view(board: pd.DataFrame) -> pd.DataFrame:
    """The columns of a leaderboard a reader wants, formatted as strings."""
    return pd.DataFrame({
        "method": board["method"],
        "config": board["config"],
        board["label"].iloc[0] if len(set(board["label"])) == 1 else "value": [
            fmt(m, s) for m, s in zip(board["mean"], board["sem"])],
        "seeds": board["n"],
        "samples": [samples_label(n) for n in board["n_samples"]],
        "kimg": [fmt_kimg(k) for k in board["kimg"]],
        "wall time": [fmt_duration(w) for w in board["wall_time_s"]],
        "runs of this config": [runs_text(r) for r in board.to_dict("records")],
        "diverged, all configs": [f"{r.method_diverged}/{r.method_runs}" for r in board.itertuples()],
    })


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Object columns mixing types (a hyperparameter that is None here, 0.1 there) as strings."""
    table = table.copy()
    for col in table.columns[table.dtypes == object]:
        kinds = {type(v) for v in table[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 or (kinds and not kinds <= {str}):
            table[col] = [None if v is None else str(v) for v in table[col]]
    return table


def cli_results(args) -> int:
    """``bench results DIR [-o table.parquet|table.csv]``: write the table, or print a summary."""
    out = Path(args.output) if args.output else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise BadInput(f"-o {args.output}: use a .parquet or .csv file name")
    table = load(args.results_dir)
    if out is not None:
        if out.suffix == ".parquet":
            write_atomic(out, lambda p: _parquet_safe(table).to_parquet(p, index=False))
        else:
            write_atomic(out, lambda p: table.to_csv(p, index=False))
        print(f"{len(table)} measurements from {table['run_id'].nunique()} runs -> {out}")
        return 0
    runs = load_runs(args.results_dir)
    counts = runs.groupby(["suite", "method"])["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in (*STATUSES, "unknown") if s in counts.columns])
    metrics = table.groupby(["suite", "method"])["metric"].agg(lambda s: ", ".join(sorted(set(s))))
    summary = counts.join(metrics.rename("metrics")).fillna({"metrics": "–"}).reset_index()
    print(f"{args.results_dir}: {len(runs)} runs, {len(table)} measurements\n")
    print(markdown(summary))
    return 0


def cli_leaderboard(args) -> int:
    """``bench leaderboard DIR [--metric M] [--format md|csv]``: one table per suite, best first."""
    board = leaderboard(load(args.results_dir), args.metric)
    if args.format == "csv":
        print(board.to_csv(index=False), end="")
        return 0
    for (suite, metric), b in board.groupby(["suite", "metric"], sort=False):
        print(f"## {suite}: {LABELS.get(metric, metric)} ({direction(metric)} is better)\n")
        print(markdown(leaderboard_view(b)))
        print()
    return 0
