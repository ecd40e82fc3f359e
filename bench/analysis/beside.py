"""Coverage and diversity beside the headline metric: one row per leaderboard entry, its other numbers.

A low FID can hide a generator that drops modes; coverage, density, Vendi and class balance at the
same configuration (the one the headline leaderboard picked, mean over the same seeds' final
evaluations) show it. Pandas only: this is the results side.
"""
from __future__ import annotations

import pandas as pd

from .leaderboard import config_summaries, leaderboard
from .table import final_values

# what is shown beside the headline, in this order, where measured
BESIDE = ("coverage", "density", "prdc_recall", "vendi", "class_balance")


def beside_headline(table: pd.DataFrame, suite: str, headline: str, metrics=BESIDE) -> pd.DataFrame | None:
    """The headline leaderboard of ``suite`` (method, config_id, mean, sem, n) with ``<metric>_mean`` and
    ``<metric>_sem`` columns for each of ``metrics`` it measures; None when it measures none of them."""
    t = table[table["suite"] == suite]
    measured = [m for m in metrics if m in set(t["metric"])]
    if not measured:
        return None
    board = leaderboard(t, headline)[["method", "config_id", "mean", "sem", "n", "n_samples"]].reset_index(drop=True)
    for m in measured:
        summary = config_summaries(final_values(t[t["metric"] == m]), m).set_index("config_id")
        board[f"{m}_mean"] = board["config_id"].map(summary["mean"])
        board[f"{m}_sem"] = board["config_id"].map(summary["sem"])
    board.attrs["metrics"] = measured
    return board
