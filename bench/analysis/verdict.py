"""The robustness analysis in words and tables: the verdict generated from the measures and their
intervals, the measures and flatness views, and ``bench robustness``."""

from __future__ import annotations


import numpy as np
import pandas as pd

from ..metrics import registry as metric_registry
from . import claims
from .robustness import DEFINITIONS, FLAT, MEASURES, Analysis, analyse, interval
from .table import direction, load, up_to_gflop
from .text import fmt, lr_text, markdown


BETTER_HIGHER = {"tolerance": True, "spread": False, "failure": False, "edge": True}


def _higher_is_better(measure: str, metric: str) -> bool:
    return BETTER_HIGHER.get(measure, direction(metric) == "higher")


def _unit(measure: str, metric: str) -> str:
    return {"tolerance": " decades", "spread": " decades" if metric_registry.info(metric).positive else "",
            "failure": ""}.get(measure, "")


def _ci(value, lo, hi, unit="") -> str:
    return f"{fmt(value)}{unit} [{fmt(lo)}, {fmt(hi)}]"


def verdict(analysis: Analysis) -> str:
    """The short paragraph a report opens with, every sentence generated from the numbers."""
    a, label = analysis, metric_registry.info(analysis.metric).label
    m = a.measures[(a.measures["batch"] == "all") & a.measures["arm"].isin(a.base_arms)]
    lrs = int(m["lrs"].max()) if len(m) else 0
    sentences = [f"{a.suite}, {label}, {len(a.base_arms)} methods over {lrs} learning rates and "
                 f"{len(a.batches)} batch size{'s' if len(a.batches) > 1 else ''}, "
                 f"{len(a.seeds)} seed{'s' if len(a.seeds) > 1 else ''}; "
                 + ("95% bootstrap intervals over seeds." if len(a.seeds) > 1 else
                    "one seed gives no interval, so no difference below counts as resolved.")]
    names = {"tolerance": f"learning-rate tolerance (within {a.factor:g}x of its own best)", "best": f"best {label}",
             "spread": "spread across the grid", "area": f"area under the {label}-vs-budget curve",
             "failure": "failure rate"}
    for measure in MEASURES:
        if measure == "edge":  # a grid position, not a score: the robustness claim and the edge sentence read it
            continue
        g = m[m["measure"] == measure].dropna(subset=["value"])
        if len(g) < 2:
            continue
        g = g.sort_values("value", ascending=not _higher_is_better(measure, a.metric), kind="stable")
        first, second = g.iloc[0], g.iloc[1]
        unit = _unit(measure, a.metric)
        if first["value"] == second["value"]:
            tied = ", ".join(g.loc[g["value"] == first["value"], "arm"])
            sentences.append(f"On {names[measure]}, {tied} tie at {fmt(first['value'])}{unit}.")
            continue
        lo, hi = interval(a.replicates[(first["arm"], "all")][measure] - a.replicates[(second["arm"], "all")][measure])
        resolved = len(a.seeds) > 1 and (lo > 0 or hi < 0)  # one seed: a zero-width "interval" resolves nothing
        overlap = not (first["lo"] > second["hi"] or first["hi"] < second["lo"])
        extra = f" at lr {lr_text(first['best_lr'])}, batch {first['best_batch']}" if measure == "best" else ""
        sentences.append(
            f"On {names[measure]}, {first['arm']} leads with {_ci(first['value'], first['lo'], first['hi'], unit)}{extra}, "
            f"ahead of {second['arm']} at {_ci(second['value'], second['lo'], second['hi'], unit)}; the paired difference "
            f"is {_ci(first['value'] - second['value'], lo, hi, unit)} "
            + (f"({'resolved' if resolved else 'not resolved: its interval includes 0'}; "
               f"the two intervals {'overlap' if overlap else 'do not overlap'})." if len(a.seeds) > 1
               else "(one seed: not resolved)."))
    sentences.append(_edge_sentence(a))
    sentences.append(claims.convergence_sentence(a))
    sentences.append(claims.higher_lr_sentence(a))
    sentences.append(_flatness_sentence(a))
    return " ".join(s for s in sentences if s)


def _edge_sentence(a: Analysis) -> str:
    """Each method's stable edge per batch size, with its interval, and the failure rule's count."""
    m = a.measures[(a.measures["measure"] == "edge") & a.measures["arm"].isin(a.base_arms)]
    if m.empty:
        return ""
    per_batch = m[m["batch"] != "all"] if (m["batch"] != "all").any() else m
    parts = []
    for batch, g in per_batch.groupby(per_batch["batch"].astype(str), sort=True):
        edges = ", ".join(f"{r.arm} {claims.edge_text(r.value)} [{claims.edge_text(r.lo)}, {claims.edge_text(r.hi)}]"
                          for r in g.sort_values(["value", "arm"], ascending=[False, True]).itertuples())
        parts.append(f"{'' if batch == 'all' else f'at batch {batch}, '}{edges}")
    failed = int(a.runs["failed"].sum()) if a.runs is not None else 0
    return (f"Stable edge (the largest learning rate at which no seed failed): {'; '.join(parts)}. "
            f"{failed} of {len(a.runs)} runs failed.")


def _flatness_sentence(a: Analysis) -> str:
    f = a.flatness[a.flatness["arm"].isin(a.base_arms) & a.flatness["relative"]]
    if f.empty:
        return ""
    def listing(rows):
        return "; ".join(f"{arm} (batch {', '.join(str(b) for b in g['batch'])})" for arm, g in rows.groupby("arm", sort=True))
    known = f[np.isfinite(f["change"].astype(float))]
    flat, moving = known[known["flat"]], known[~known["flat"]].sort_values("change", ascending=False)
    unknown = f[~f.index.isin(known.index)]
    text = (f"At each method's best learning rate, over the last {FLAT['last']:.0%} of the budget (by each run's late "
            "trend), "
            + (f"the curves had flattened (within {FLAT['within']:.0%}) for {listing(flat)}" if len(flat) else
               "no curve had flattened")
            + (f"; they were still changing for {', '.join(f'{r.arm} at batch {r.batch} ({_pct(r.change, r.lo, r.hi)})' for r in moving.itertuples())}"
               if len(moving) else "")
            + (f"; too few evaluations to tell for {listing(unknown)}" if len(unknown) else "") + ".")
    return text


def _pct(value, lo, hi) -> str:
    return f"{value:+.0%} [{lo:+.0%}, {hi:+.0%}]" if np.isfinite(value) else "–"


def flatness_view(analysis: Analysis) -> pd.DataFrame:
    """The flatness table as strings: arm, batch, change over the last quarter [interval], flattened."""
    f = analysis.flatness
    return pd.DataFrame({
        "arm": f["arm"], "batch": f["batch"].astype(str),
        "best lr": [lr_text(x) for x in f["lr"]],
        f"trend over the last {FLAT['last']:.0%}": [
            _pct(c, lo, hi) if rel else _ci(c, lo, hi) for c, lo, hi, rel in zip(f["change"], f["lo"], f["hi"], f["relative"])],
        "flattened": ["yes" if x else "no" for x in f["flat"]], "seeds": f["n_seeds"]})


def measures_view(analysis: Analysis) -> pd.DataFrame:
    """The measures as a wide table of strings: one row per (arm, batch), a 'value [lo, hi]' column per measure."""
    m = analysis.measures
    rows = []
    for (arm, batch), g in m.groupby(["arm", m["batch"].astype(str)], sort=False):
        by = g.set_index("measure")
        row = {"arm": arm, "batch": batch, "lrs": int(by["lrs"].iloc[0]), "seeds": int(by["n_seeds"].iloc[0])}
        for name in MEASURES:
            r = by.loc[name]
            row[name] = (f"{claims.edge_text(r['value'])} [{claims.edge_text(r['lo'])}, {claims.edge_text(r['hi'])}]"
                         if name == "edge" else _ci(r["value"], r["lo"], r["hi"]))
        row["best lr"] = f"{lr_text(by.loc['best', 'best_lr'])} (batch {by.loc['best', 'best_batch']})"
        rows.append(row)
    return pd.DataFrame(rows)


def cli_robustness(args) -> int:
    """``bench robustness RESULTS_DIR [--metric M] [--factor F] [--pairwise] [--upto-gflop G] [--flatness]``:
    measures and the verdict, or with ``--flatness`` only whether the budget was long enough."""
    table = load(args.results_dir)
    if args.upto_gflop is not None:
        table = up_to_gflop(table, args.upto_gflop)
        print(f"(every run read up to its last evaluation at or before {args.upto_gflop:g} GFLOP)\n")
    for a in analyse(table, args.metric, factor=args.factor, n_boot=args.boot):
        if args.flatness:  # only whether the budget was long enough
            print(f"## {a.suite}: {metric_registry.info(a.metric).label}, flatness\n")
            print(markdown(flatness_view(a)) + "\n\n" + _flatness_sentence(a) + "\n")
            continue
        print(f"## {a.suite}: {metric_registry.info(a.metric).label} ({direction(a.metric)} is better), "
              f"tolerance within {a.factor:g}x\n")
        print(markdown(measures_view(a)))
        if args.pairwise and len(a.pairwise):
            p = a.pairwise
            print("\n" + markdown(pd.DataFrame({
                "batch": p["batch"], "lr": [lr_text(x) for x in p["lr"]], "A": p["arm_a"], "B": p["arm_b"],
                "A - B": [_ci(d, lo, hi) for d, lo, hi in zip(p["diff"], p["lo"], p["hi"])], "seeds": p["n_seeds"]})))
        if len(a.flatness):
            print("\n" + markdown(flatness_view(a)))
        print("\n" + verdict(a) + "\n")
    shown = [DEFINITIONS["flatness"]] if args.flatness else [*DEFINITIONS.values(), *claims.DEFINITIONS.values()]
    print("Definitions (bench/analysis/robustness.py):\n\n" + "\n".join(f"- {text}" for text in shown))
    return 0
