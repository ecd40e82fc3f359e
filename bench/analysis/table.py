"""The results table (Contract 3): every run directory under a folder as one tidy long DataFrame.

``load(dir)`` reads every run directory under ``dir`` (any depth; a run directory is one holding
``config.json``) into one tidy long DataFrame, one row per measurement in ``metrics.jsonl``:

    suite, run_id, method, lr_g, lr_fake, batch, seed, kimg, metric, value, n_samples, ema, status,
    impl, images_seen, eval_time_s, wall_time_s, kimg_done, kimg_budget, diverged_kimg,
    config_id, config, gflop, train_s, budget, gflop_budget, gflop_done, oneoff_gflop, train_s_done,
    gflop_per_kimg, train_s_per_kimg, sample_gflop_per_image, sample_nfe,
    hp_<name> for every method hyperparameter (the teacher's sampler and steps too; a K-step
    generator's ``steps`` when K > 1)

``suite`` is the suite's name, and for a conditional suite its guidance scale too (``digits_cond w=3``:
each scale distils its own guided teacher, so the views rank each apart). ``images_seen`` is ``kimg * 1000``
generator images at that evaluation; ``wall_time_s``, ``kimg_done`` and ``diverged_kimg`` are the run's totals from ``manifest.json``; ``config_id`` names a configuration
(suite options, method hyperparameters, learning rates, batch, generator steps; every seed shares it) and ``config``
spells it for readers. The cost columns: ``gflop`` and ``train_s`` are the cumulative training GFLOP
(one-off costs such as DMD's regression pairs included) and seconds in the update phases at that
evaluation; ``budget`` says which budget the run had (``kimg`` or ``gflop``); the ``*_done`` columns are the
run's totals, ``gflop_per_kimg`` and ``train_s_per_kimg`` its rates per 1k generator images (one-off costs
left out); ``sample_gflop_per_image`` and ``sample_nfe`` what drawing one image costs (the teacher's
multi-step sampler, or the generator's K passes). A run directory written before cost accounting
has NaN there. Runs still in progress (status ``running``), diverged runs and a torn last JSONL
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

from .. import runlock
from ..errors import BadInput, BenchWarning
from ..metrics import registry as metric_registry
from ..rundir import EXTERNAL, TEACHER, read_json_or_none, read_jsonl, write_atomic
from .text import is_missing, lr_text, markdown, samples_label


HP_PREFIX = "hp_"


STATUSES = ("done", "running", "diverged", "failed")


# The cost of a run (all optional: older run directories have none of them and load with NaN).
COST_RUN_COLUMNS = ["budget", "gflop_budget", "gflop_done", "oneoff_gflop", "train_s_done", "gflop_per_kimg",
                    "train_s_per_kimg", "sample_gflop_per_image", "sample_nfe"]


RUN_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "status", "kimg_budget",
               "kimg_done", "wall_time_s", "diverged_kimg", "diverged_step", "diverged_reason", "started",
               "ended", "git_hash", "config_id", "config", "path", *COST_RUN_COLUMNS, "suite_config"]


TABLE_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "kimg", "metric", "value",
                 "n_samples", "ema", "status", "impl", "images_seen", "eval_time_s", "wall_time_s", "kimg_done",
                 "kimg_budget", "diverged_kimg", "config_id", "config", "gflop", "train_s", *COST_RUN_COLUMNS]


# The axes a run's progress is measured on: name -> column of the table.
AXES = {"kimg": "kimg", "gflop": "gflop", "wall": "train_s"}


AXIS_LABELS = {"kimg": "training kimg", "gflop": "training GFLOP", "wall": "training seconds"}


def find_runs(results_dir) -> list[Path]:
    """Every run directory (holding ``config.json``) under ``results_dir``, hidden folders skipped."""
    root = Path(results_dir)
    if root.exists() and not root.is_dir():
        raise BadInput(f"results folder {str(results_dir)!r} is a file, not a folder")
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


def is_reference(methods: pd.Series) -> pd.Series:
    """The reference rows: the teacher's sampler and external generators (``bench eval --generator``),
    evaluated once and not trained here, so they take part in no budget comparison or robustness score."""
    return (methods == TEACHER) | methods.astype(str).str.startswith(EXTERNAL)


def config_label(hparams: dict, lr_g, lr_fake, batch) -> str:
    """A configuration spelt out for readers: hyperparameters, learning rates, batch."""
    parts = [f"{k}={v}" for k, v in sorted(hparams.items())]
    if not is_missing(lr_g):
        parts.append(f"lr={lr_text(lr_g)}" if lr_fake == lr_g or is_missing(lr_fake)
                     else f"lr={lr_text(lr_g)}/{lr_text(lr_fake)}")
    if not is_missing(batch):
        parts.append(f"batch={int(batch)}")
    return ", ".join(parts)


def suite_setting(config: dict, directory: Path) -> str:
    """The ``suite`` column of a run: its suite's name, with the guidance scale of a conditional suite
    (``digits_cond w=3``). Each scale is its own guided teacher, so every view ranks the scales apart,
    as it does suites, and one results folder can hold a sweep over ``guidance``."""
    suite = str(config.get("suite", directory.parent.name))
    options = config.get("suite_options") if isinstance(config.get("suite_options"), dict) else {}
    scale = options.get("guidance")
    return f"{suite} w={scale:g}" if isinstance(scale, (int, float)) and not isinstance(scale, bool) else suite


def _run_record(directory: Path) -> dict | None:
    config = read_json_or_none(directory / "config.json")
    if config is None:
        return None
    manifest = read_json_or_none(directory / "manifest.json") or {}
    hparams = config.get("hparams") or {}
    if not isinstance(hparams, dict):
        hparams = {}
    in_use = config.get("hparams_in_use")  # defaults resolved for the data (SIM's huber_c), for readers
    shown = {**hparams, **in_use} if isinstance(in_use, dict) else hparams
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    steps = train.get("steps") if config.get("method") != TEACHER else None
    steps = steps if isinstance(steps, int) and steps > 1 else None  # a K-step generator (one step: None)
    if steps:
        shown = {**shown, "steps": steps}  # beside the teacher's own (hp_steps)
    diverged = manifest.get("diverged") or {}
    if not isinstance(diverged, dict):
        diverged = {}
    lr_g, lr_fake, batch = _number(config.get("lr_g")), _number(config.get("lr_fake")), _number(config.get("batch"))
    key = [config.get("suite"), config.get("suite_options"), config.get("method"), hparams,
           config.get("lr_g"), config.get("lr_fake"), config.get("batch")]
    key = json.dumps(key + ([steps] if steps else []), sort_keys=True, default=str)  # one-step ids unchanged
    status = manifest.get("status")
    # The teacher and evaluation a run shares with others: its suite options less those that shape only its
    # student (``Suite.student_info``, e.g. a wider generator), which join the hyperparameters it shows.
    suite_options = config.get("suite_options")
    if isinstance(suite_options, dict) and isinstance(in_use, dict):
        suite_options = {k: v for k, v in suite_options.items() if k not in in_use}
    record = dict(
        suite=suite_setting(config, directory), run_id=str(config.get("run_id", directory.name)),
        method=str(config.get("method", "?")), lr_g=lr_g, lr_fake=lr_fake, batch=batch,
        seed=_number(config.get("seed")), status=str(status) if status else "unknown",
        kimg_budget=_number(config.get("kimg")), kimg_done=_number(manifest.get("kimg_done")),
        wall_time_s=_number(manifest.get("wall_time_s")), diverged_kimg=_number(diverged.get("kimg")),
        diverged_step=_number(diverged.get("step")), diverged_reason=diverged.get("reason"),
        started=manifest.get("started"), ended=manifest.get("ended"), git_hash=manifest.get("git_hash"),
        config_id=hashlib.sha1(key.encode()).hexdigest()[:8],
        suite_config=json.dumps(suite_options, sort_keys=True, default=str),
        config=config_label(shown, lr_g, lr_fake, batch), path=str(directory),
    )
    record.update(_cost_record(config, manifest, record["kimg_done"]))
    record.update({HP_PREFIX + str(k): v for k, v in shown.items()})
    record["_config"], record["_manifest"] = config, manifest
    return record


def _cost_record(config: dict, manifest: dict, kimg_done: float) -> dict:
    """A run's budget and cost columns from its config and the manifest's ``cost`` entry."""
    cost = manifest.get("cost") if isinstance(manifest.get("cost"), dict) else {}
    sample = cost.get("sample") if isinstance(cost.get("sample"), dict) else {}
    oneoff = cost.get("oneoff_gflop") if isinstance(cost.get("oneoff_gflop"), dict) else {}
    gflop, train_s = _number(cost.get("gflop")), _number(cost.get("train_s"))
    oneoff_gflop = float(sum(_number(v) for v in oneoff.values())) if cost else math.nan
    per_kimg = kimg_done if kimg_done > 0 else math.nan
    return dict(budget="gflop" if config.get("gflop") is not None else "kimg", gflop_budget=_number(config.get("gflop")),
                gflop_done=gflop, oneoff_gflop=oneoff_gflop, train_s_done=train_s,
                gflop_per_kimg=(gflop - oneoff_gflop) / per_kimg, train_s_per_kimg=train_s / per_kimg,
                sample_gflop_per_image=_number(sample.get("gflop_per_image")), sample_nfe=_number(sample.get("nfe")))


def _runs_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    hp = sorted(c for c in frame.columns if c.startswith(HP_PREFIX))
    frame = frame[RUN_COLUMNS + hp + ["_config", "_manifest"]]
    for col in ("batch", "seed", "diverged_step"):
        frame[col] = frame[col].astype("Int64")
    return frame


def load_runs(results_dir, *, full: bool = False, every: bool = False) -> pd.DataFrame:
    """One row per run directory (config and manifest summary, ``hp_`` columns), as the views compare
    them (``comparable``); ``every=True`` keeps every run (the tidy table of ``bench results``).

    With ``full=True`` the parsed ``config.json`` and ``manifest.json`` ride along in the columns
    ``_config`` and ``_manifest`` (dicts), for the report's configuration and provenance sections.
    BadInput when the folder is missing or holds no run directory.
    """
    records = [r for r in map(_run_record, find_runs(results_dir)) if r is not None]
    if not records:
        raise BadInput(f"no run directories (folders with config.json) under {str(results_dir)!r}")
    frame = _runs_frame(records)
    if not every:
        frame = comparable(frame, results_dir)
    return frame if full else frame.drop(columns=["_config", "_manifest"])


def teacher_text(runs: pd.DataFrame, suite: str) -> str:
    """Which teacher and evaluation a suite's runs share (``comparable`` makes it one), for table headers."""
    g = runs[runs["suite"] == suite]
    options = hashlib.sha1(g["suite_config"].iloc[0].encode()).hexdigest()[:8]
    teachers = ", ".join(sorted(g.loc[g["method"] == TEACHER, "run_id"]))
    return (f"every {suite} run here distils one teacher and is scored by one evaluation (suite options {options}"
            + (f"; the teacher's own rows: {teachers})" if teachers else ")"))


def comparable(runs: pd.DataFrame, results_dir) -> pd.DataFrame:
    """The runs a view may rank together: one suite configuration (teacher and evaluation) per suite,
    and each configuration and seed once, at its largest budget.

    BadInput when a suite's runs differ in suite options (a leaderboard would rank runs of two teachers
    or two evaluations without a word); the same configuration and seed at a smaller budget (``make
    demo QUICK=1`` then ``make demo``) is set aside with a warning, not counted as another seed.
    """
    for suite, g in runs.groupby("suite", sort=False):
        options = g["suite_config"]
        if options.nunique() > 1:
            a, b = (json.loads(o) for o in options.unique()[:2])
            differ = sorted(k for k in {*a, *b} if a.get(k) != b.get(k))
            shown = ", ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in differ[:3])
            raise BadInput(f"{results_dir}: runs of suite {suite} with different suite options ({shown}) are not "
                           "comparable (another teacher or evaluation); put them in separate results folders")
    order = runs.assign(_size=runs["gflop_budget"].fillna(-1), _kimg=runs["kimg_budget"].fillna(-1))
    order = order.sort_values(["_size", "_kimg", "kimg_done"], ascending=False, kind="stable")
    keep = ~order.duplicated(["suite", "config_id", "seed"])
    if not keep.all():
        aside = order[~keep]
        warnings.warn(f"{results_dir}: {len(aside)} run(s) set aside: the same configuration and seed as another run "
                      f"at a larger budget (e.g. {aside['run_id'].iloc[0]}); give them their own results folder to "
                      "compare budgets", BenchWarning, stacklevel=2)
    return runs.loc[sorted(order[keep].index)].reset_index(drop=True)


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
                         "impl": m.get("impl"), "images_seen": kimg * 1000, "eval_time_s": _number(m.get("time_s")),
                         "gflop": _number(m.get("gflop")), "train_s": _number(m.get("train_s"))})
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS + hp)
    table["n_samples"] = table["n_samples"].astype("Int64")
    table["batch"] = table["batch"].astype("Int64")
    table["seed"] = table["seed"].astype("Int64")
    table["ema"] = table["ema"].astype(bool)
    for col in ("kimg", "value", "lr_g", "lr_fake", "images_seen", "eval_time_s", "wall_time_s", "gflop", "train_s",
                *(c for c in COST_RUN_COLUMNS if c != "budget")):
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


def _prefer_ema(table: pd.DataFrame) -> pd.DataFrame:
    """Per run and metric, the EMA rows where the run has any, otherwise its raw rows."""
    has_ema = table.groupby(["run_id", "metric"])["ema"].transform("any")
    return table[table["ema"] == has_ema]


def curves(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, metric, kimg): the scheduled evaluation (EMA preferred; the first row written)."""
    t = _prefer_ema(table.dropna(subset=["kimg"]))
    return t.groupby(["run_id", "metric", "kimg"], sort=False).head(1).sort_values(["run_id", "metric", "kimg"])


COLLAPSE = 2.0  # a run ending more than this factor worse than its own best has failed


def on_training_count(t: pd.DataFrame) -> pd.DataFrame:
    """Each run's rows at its training-time sample count (its most evaluated one): a curve on one count."""
    if t.empty or t["n_samples"].isna().all():
        return t
    counts = t.groupby(["run_id", "n_samples"]).size().rename("_evals").reset_index()
    usual = counts.sort_values(["run_id", "_evals", "n_samples"]).groupby("run_id").tail(1)
    keep = t.set_index(["run_id", "n_samples"]).index.isin(usual.set_index(["run_id", "n_samples"]).index)
    return t[keep | t["n_samples"].isna()]


def failed_by_rule(c: pd.DataFrame, metric: str) -> pd.Series:
    """Per run of ``c`` (``curves`` of one metric on the training-time count), whether it failed: it
    diverged, or it ends worse than it started, or (positive metrics) more than ``COLLAPSE`` times worse
    than the best value it reached. Start, best and end on the same latents, so sampling noise stays out."""
    by = c.groupby("run_id", sort=True)
    first, last = by["value"].first(), by["value"].last()
    lower = direction(metric) != "higher"
    worse = last > first if lower else last < first
    if metric_registry.info(metric).positive:
        worse |= last > COLLAPSE * by["value"].min() if lower else last < by["value"].max() / COLLAPSE
    return by["status"].first().eq("diverged") | worse


def final_values(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, metric): the last evaluation (EMA preferred; the latest row written).

    Values of different sample counts are never compared: per (suite, metric) every run is taken at
    one count, the largest that every run has at its final evaluation (``bench eval --n`` can add
    others). ``attrs["notes"]`` says which count was taken when there was a choice.
    """
    t = _prefer_ema(table.dropna(subset=["kimg"])).copy()
    t["_order"] = np.arange(len(t))
    t = t[t["kimg"] == t.groupby(["run_id", "metric"])["kimg"].transform("max")]
    notes, parts = [], []
    for (suite, metric), g in t.groupby(["suite", "metric"], sort=False):
        g, note = _one_sample_count(g, suite, metric)
        parts.append(g)
        notes += note
    if parts:
        t = pd.concat(parts)
    t = t.sort_values(["run_id", "metric", "_order"])
    out = t.groupby(["run_id", "metric"], sort=False).tail(1).drop(columns="_order")
    out.attrs["notes"] = notes
    return out


def _one_sample_count(finals: pd.DataFrame, suite: str, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """The rows of one sample count (see ``final_values``) and a note when other counts were left aside.

    The count is chosen among finished runs (a diverged or unfinished run never had its final
    evaluation); such a run without that count keeps its largest one.
    """
    counted = finals.dropna(subset=["n_samples"])
    done = counted[counted["status"] == "done"] if (counted["status"] == "done").any() else counted
    per_run = [set(int(n) for n in g["n_samples"]) for _, g in done.groupby("run_id")]
    every = set(int(n) for n in counted["n_samples"])
    if len(every) <= 1:
        return finals, []
    common = set.intersection(*per_run)
    if common:
        chosen = max(common)
    else:  # no count shared by all: the one most runs have (the larger on a tie)
        chosen = max(every, key=lambda n: (sum(n in r for r in per_run), n))
    missing = sum(chosen not in r for r in per_run)
    others = sorted(every - {chosen})
    note = (f"{suite}: {metric_label(metric, chosen)} compared, the largest sample count "
            f"{'every finished run has' if not missing else 'most runs have'} at its final evaluation "
            f"(also measured for some runs: {', '.join(samples_label(n) for n in others)})")
    if missing:
        note += f"; {missing} run(s) without it left out"
    has_chosen = counted.loc[counted["n_samples"] == chosen, "run_id"].unique()
    unfinished = counted[~counted["run_id"].isin(has_chosen) & (counted["status"] != "done")]
    largest = unfinished[unfinished["n_samples"] == unfinished.groupby("run_id")["n_samples"].transform("max")]
    keep = finals["n_samples"].isna() | (finals["n_samples"] == chosen) | finals.index.isin(largest.index)
    return finals[keep], [note]


def direction(metric: str) -> str:
    """"lower" or "higher" is better, or "unregistered" (then values are listed smallest first)."""
    return metric_registry.info(metric).direction


def direction_text(metric: str) -> str:
    """"lower is better", "higher is better", or that the metric is unregistered."""
    d = direction(metric)
    return f"{d} is better" if d != metric_registry.UNREGISTERED else "unregistered metric: no direction known"


def ascending(metric: str) -> bool:
    """Whether smaller values of ``metric`` rank first."""
    return direction(metric) != "higher"


def metric_label(metric: str, n_samples=None) -> str:
    """A metric's display name with its sample count, e.g. "FID-1k"."""
    name = metric_registry.info(metric).label
    return name if n_samples is None or n_samples is pd.NA else f"{name}-{samples_label(n_samples)}"


def headline_metrics(table: pd.DataFrame) -> dict[str, str]:
    """Each suite's headline metric: the best-ranked headline metric it measures, else its first
    registered metric, else its first metric (unregistered: shown, never dropped)."""
    out = {}
    for suite, t in table.groupby("suite", sort=True):
        infos = [metric_registry.info(m) for m in sorted(set(t["metric"]))]
        out[suite] = min(infos, key=lambda i: (i.headline is None, i.headline or 0, not i.registered, i.name)).name
    return out


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
    runs = load_runs(args.results_dir, every=True)  # the tidy table holds every run; the views choose
    table = load(args.results_dir, runs)
    if out is not None:
        if out.suffix == ".parquet":
            write_atomic(out, lambda p: _parquet_safe(table).to_parquet(p, index=False))
        else:
            write_atomic(out, lambda p: table.to_csv(p, index=False))
        print(f"{len(table)} measurements from {table['run_id'].nunique()} runs -> {out}")
        return 0
    counts = runs.groupby(["suite", "method"])["status"].value_counts().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in (*STATUSES, "unknown") if s in counts.columns])
    metrics = table.groupby(["suite", "method"])["metric"].agg(lambda s: ", ".join(sorted(set(s))))
    summary = counts.join(metrics.rename("metrics")).fillna({"metrics": "–"}).reset_index()
    print(f"{args.results_dir}: {len(runs)} runs, {len(table)} measurements\n")
    print(markdown(summary))
    dead = [Path(p).name for p in runs.loc[runs["status"] == "running", "path"] if runlock.owner(p)[0] == "dead"]
    if dead:
        print(f"\n{len(dead)} run(s) marked running have no live process (killed, perhaps for memory): "
              f"{', '.join(dead)}; the same command resumes them from their last checkpoint")
    return 0


def up_to_gflop(table: pd.DataFrame, gflop: float) -> pd.DataFrame:
    """The table as if every run had stopped at ``gflop`` training GFLOP: its evaluations at or before it
    (teacher rows kept). The study's question "would the verdict change at a smaller budget?" in one line."""
    if isinstance(gflop, bool) or not isinstance(gflop, (int, float)) or not gflop > 0:
        raise BadInput(f"--upto-gflop must be a positive number of GFLOP, got {gflop!r}")
    if "gflop" not in table or table["gflop"].isna().all():
        raise BadInput("--upto-gflop needs runs with cost accounting (a gflop column); these have none")
    keep = (table["method"] == TEACHER) | (table["gflop"] <= gflop * (1 + 1e-9))
    return table[keep]
