"""Robustness measures, bootstrap intervals and the verdict, on hand-built data with known answers."""
import math

import numpy as np
import pandas as pd
import pytest
from rundirs import measure, table_of, write_run

from bench.analysis import robustness
from bench.cli import main
from bench.analysis.text import fmt
from bench.results import load
from bench.analysis.robustness import analyse, tolerance_width
from bench.analysis.table import up_to_gflop
from bench.analysis.verdict import verdict

LRS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


# --- tolerance width -------------------------------------------------------------------------------

def test_tolerance_width_of_a_v_shaped_curve_is_exact():
    """log10 FID = log10 5 + 0.8 |x + 4|: within 2x of the best where |x + 4| <= log10(2) / 0.8."""
    x = np.array([-5.0, -4.5, -4.0, -3.5, -3.0])
    y = (math.log10(5) + 0.8 * np.abs(x + 4))[:, None]
    assert tolerance_width(x, y, math.log10(2))[0] == pytest.approx(2 * math.log10(2) / 0.8, rel=1e-12)
    # every point within: the whole grid; the best at an edge: only one side counts
    assert tolerance_width(x, y, 2.0)[0] == pytest.approx(2.0)
    edge = (math.log10(5) + 0.8 * np.abs(x + 5))[:, None]
    assert tolerance_width(x, edge, math.log10(2))[0] == pytest.approx(math.log10(2) / 0.8, rel=1e-12)


def test_tolerance_width_of_a_u_shaped_curve_approaches_the_continuous_one():
    """log10 FID = a (x - c)^2 on a fine grid: width 2 sqrt(log10(F) / a)."""
    a, c, factor = 0.9, -4.1, 3.0
    x = np.linspace(-5, -3, 401)
    y = np.stack([a * (x - c) ** 2, a * (x - c) ** 2 + 1.0], axis=1)  # a constant offset changes nothing
    widths = tolerance_width(x, y, math.log10(factor))
    assert widths == pytest.approx([2 * math.sqrt(math.log10(factor) / a)] * 2, rel=1e-3)


def test_tolerance_width_skips_missing_points():
    x = np.array([-5.0, -4.0, -3.0])
    y = np.array([[0.0], [np.nan], [0.0]])
    assert tolerance_width(x, y, 0.1)[0] == 0.0  # a gap is never "within"


# --- bootstrap intervals ---------------------------------------------------------------------------

def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    """100 simulated studies of one cell, 12 seeds of N(20, 3): the interval of the best value (the
    mean over seeds) covers 20 in about 95% of them (the percentile bootstrap runs a little under)."""
    rng = np.random.default_rng(1)
    covered = []
    for _ in range(100):
        values = 20 + 3 * rng.standard_normal(12)
        a = analyse(table_of(("sid", 1e-4, 64, s, {}, "done", {0: 80.0, 1: v}) for s, v in enumerate(values)),
                    n_boot=300)[0]
        row = measure(a, "sid", "all", "best")
        assert row["value"] == pytest.approx(values.mean())
        covered.append(row["lo"] <= 20 <= row["hi"])
    assert 0.85 <= np.mean(covered) <= 0.99


def test_intervals_are_paired_across_arms():
    """Two methods whose seeds move together: wide intervals each, a narrow paired difference."""
    offsets = [-5.0, 0.0, 5.0, 10.0]
    runs = [(m, 1e-4, 64, s, {}, "done", {0: 80.0, 1: base + off})
            for m, base in (("sim", 10.0), ("sid", 12.0)) for s, off in enumerate(offsets)]
    a = analyse(table_of(runs))[0]
    p = a.pairwise.iloc[0]
    assert (p["arm_a"], p["arm_b"], p["diff"], p["lo"], p["hi"]) == ("sid", "sim", 2.0, 2.0, 2.0)
    sim = measure(a, "sim", "all", "best")
    assert sim["hi"] - sim["lo"] > 5
    assert "the paired difference is -2.00 [-2.00, -2.00] (resolved; the two intervals overlap)" in verdict(a)


# --- measures on run directories -------------------------------------------------------------------

def final_fid(method, lr, batch, seed):
    """A V in log10 lr: SIM's minimum at 1e-4 and flat (0.25 decades of FID per decade of lr), SiD steeper."""
    slope = {"sim": 0.25, "sid": 1.0}[method]
    return (5.0 if batch == 64 else 6.0) * 10 ** (slope * abs(math.log10(lr) + 4)) + 0.5 * seed


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for method in ("sim", "sid"):
        for lr in LRS:
            for batch in (64, 256):
                for seed in (0, 1, 2):
                    diverged = (method, lr, batch, seed) == ("sid", 1e-3, 256, 2)
                    end = final_fid(method, lr, batch, seed)
                    write_run(root, method=method, lr=lr, batch=batch, seed=seed, samples=False,
                              evals=(0.0, 1.0) if diverged else (0.0, 1.0, 2.0),
                              status="diverged" if diverged else "done", diverged_at=1.5 if diverged else None,
                              values=lambda k, end=end: {"fid": {0.0: 60.0, 1.0: 2 * end, 2.0: end}[k]})
    for seed in (0, 1, 2):  # SIM without d(y) at the SIM figure's settings only
        for lr in (1e-4, 1e-5):
            write_run(root, method="sim", lr=lr, batch=256, seed=seed, samples=False,
                      hparams={"distance": "pseudo_huber", "huber_c": 0.03, "weighting": "paper", "d_term": False},
                      values=lambda k, lr=lr: {"fid": 10.0 if lr == 1e-4 else 40.0})
    write_run(root, method="teacher", seed=0, hparams={"sampler": "heun", "steps": 18}, evals=(0.0,),
              values=lambda k: {"fid": 3.0}, samples=False)
    return analyse(load(root), n_boot=500)[0]


def test_arms_name_the_hyperparameters_that_differ(study):
    assert study.base_arms == ["sid", "sim"]
    assert set(study.measures["arm"]) == {"sid", "sim", "sim d_term=False"}


def test_measures_have_their_known_values(study):
    mean_seed = 0.5  # mean of 0.5 * seed over seeds 0, 1, 2
    sim = {b: [final_fid("sim", lr, b, 0) + mean_seed for lr in LRS] for b in (64, 256)}
    best = measure(study, "sim", 64, "best")
    assert (best["value"], best["best_lr"], best["best_batch"]) == (pytest.approx(5.5), 1e-4, 64)
    assert measure(study, "sim", 64, "spread")["value"] == pytest.approx(math.log10(max(sim[64]) / min(sim[64])))
    assert measure(study, "sim", "all", "spread")["value"] == pytest.approx(
        math.log10(max(sim[256]) / min(sim[64])))
    # SiD at batch 64 without seed noise would be within 2x over 2 log10(2) decades; the +0.5 shifts it a little
    tol = measure(study, "sid", 64, "tolerance")
    assert tol["value"] == pytest.approx(2 * math.log10(2), abs=0.05) and tol["lo"] <= tol["value"] <= tol["hi"]
    assert measure(study, "sim", 64, "tolerance")["value"] == pytest.approx(2.0)  # the whole grid
    # area: trapezoids over (0, 60), (1, 2 end), (2, end) divided by 2 kimg
    end = final_fid("sim", 1e-4, 64, 1)
    areas = [(60 + 2 * final_fid("sim", lr, 64, s)) / 4 + 3 * final_fid("sim", lr, 64, s) / 4
             for lr in LRS for s in (0, 1, 2)]
    assert measure(study, "sim", 64, "area")["value"] == pytest.approx(np.mean(areas)) and end > 0


def test_a_diverged_run_fails_and_counts_with_its_start_value(study):
    # SiD at batch 256 ends at 60, 60.5, 61 (seeds 0-2) at lr 1e-3 and 1e-5, against a start of 60: seeds 1
    # and 2 end worse than they started, and seed 2 at 1e-3 diverged too
    assert measure(study, "sid", 256, "failure")["value"] == pytest.approx(4 / 15)
    assert measure(study, "sid", "all", "failure")["value"] == pytest.approx(4 / 30)
    assert measure(study, "sim", "all", "failure")["value"] == 0
    row = study.pairwise[(study.pairwise["lr"] == 1e-3) & (study.pairwise["batch"] == 256)
                         & (study.pairwise["arm_a"] == "sid") & (study.pairwise["arm_b"] == "sim")].iloc[0]
    sid = [final_fid("sid", 1e-3, 256, 0), final_fid("sid", 1e-3, 256, 1), 60.0]  # the diverged seed: its start
    sim = [final_fid("sim", 1e-3, 256, s) for s in (0, 1, 2)]
    assert row["diff"] == pytest.approx(np.mean(np.subtract(sid, sim))) and row["n_seeds"] == 3


def test_variant_is_measured_on_its_own_cells(study):
    row = measure(study, "sim d_term=False", "all", "spread")  # one batch size: its only row
    assert row["lrs"] == 2 and row["value"] == pytest.approx(math.log10(4.0))
    assert set(study.measures.loc[study.measures["arm"] == "sim d_term=False", "batch"]) == {"all"}


def test_late_trend_is_the_slope_of_the_second_half():
    x = np.linspace(0, 20, 11)  # kimg
    line = 10 ** (2 - x / 20)  # log10 falls by 1 over the budget: 0.25 over its last quarter
    assert robustness.late_trend(x, line, positive=True) == pytest.approx(-0.25)
    bent = np.where(x < 10, 500.0, line)  # only the second half is fitted
    assert robustness.late_trend(x, bent, positive=True) == pytest.approx(-0.25)
    assert robustness.late_trend(x, 3 - x, positive=False) == pytest.approx(-5.0)  # not logged: 20 kimg x 0.25
    assert math.isnan(robustness.late_trend(x[:1], line[:1], positive=True))


def test_flatness_is_the_change_over_the_last_quarter(study):
    f = study.flatness.set_index(["arm", "batch"])
    # every base run falls 60 -> 2 end -> end at kimg 0, 1, 2: its second half halves over half the budget,
    # so the trend over the last quarter is a factor sqrt(2): +41%
    for arm in ("sim", "sid"):
        for batch in (64, 256):
            row = f.loc[(arm, batch)]
            assert row["change"] == pytest.approx(math.sqrt(2) - 1) and row["lo"] == pytest.approx(math.sqrt(2) - 1)
            assert row["n_seeds"] == 3 and not row["flat"]
    assert f.loc[("sim d_term=False", 256), "change"] == pytest.approx(0, abs=1e-12) and f.loc[("sim d_term=False", 256), "flat"]
    assert set(study.flatness["arm"]) == {"sim", "sid", "sim d_term=False"}  # lr 1e-4 only: one row per batch
    assert len(study.flatness) == 5
    text = verdict(study)
    assert "(by each run's late trend), no curve had flattened; they were still changing for " in text
    assert "sid at batch 64 (+41% [+41%, +41%])" in text


def test_verdict_is_generated_from_the_numbers(study):
    text = verdict(study)
    assert text.startswith("digits, FID, 2 methods over 5 learning rates and 2 batch sizes, 3 seeds")
    assert "On learning-rate tolerance (within 2x of its own best), sim leads with 2.00 decades" in text
    assert "On best FID, sid, sim tie at 5.50." in text  # both V's bottom out at 5 + 0.5 (mean seed offset)
    gap = measure(study, "sim", "all", "tolerance")["value"] - measure(study, "sid", "all", "tolerance")["value"]
    assert gap == pytest.approx(2 - 2 * math.log10(2), abs=0.05)  # sid's seed offsets widen its V a little
    assert f"the paired difference is {fmt(gap)} decades [" in text and "(resolved; the two intervals do not overlap)" in text
    assert "was not measured here" in text  # no DI runs: the SIM paper's claim cannot be checked
    for measure_name in ("spread across the grid", "area under the FID-vs-budget curve", "failure rate"):
        assert f"On {measure_name}, sim leads" in text
    assert "On failure rate, sim leads with 0 [0, 0], ahead of sid at 0.133 [" in text


def test_one_seed_resolves_nothing():
    """A single seed gives zero-width "intervals": the verdict must not call any difference resolved."""
    runs = [(method, lr, 256, 0, {}, "done", {0: 70.0, 1: 2 * end, 2: end})
            for method, end in (("sim", 5.0), ("sid", 9.0), ("di", 8.0)) for lr in (1e-4, 1e-5)]
    text = verdict(analyse(table_of(runs), n_boot=100)[0])
    assert "1 seed; one seed gives no interval" in text
    assert "(one seed: not resolved)" in text and "(resolved" not in text
    assert "Claim 1, faster convergence (SIM against SiD and DI at batch 256, lr 1e-4 and 1e-5): is not resolved" in text


# --- command line ----------------------------------------------------------------------------------

def test_cli_prints_measures_and_verdict(tmp_path, capsys):
    for seed in (0, 1):
        for lr in (1e-4, 1e-5):
            write_run(tmp_path, method="sim", lr=lr, seed=seed, samples=False)
            write_run(tmp_path, method="sid", lr=lr, seed=seed, samples=False)
    assert main(["robustness", str(tmp_path), "--pairwise", "--boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "| arm" in out and "| A - B" in out and "On learning-rate tolerance" in out
    assert robustness.DEFINITIONS["tolerance"] in out


def test_cli_flatness_up_to_a_budget(tmp_path, capsys):
    """``--flatness --upto-gflop``: only the flatness table, of the runs read up to that compute."""
    for seed in (0, 1):  # FID 60 -> 2 end -> end at kimg 0, 1, 2 (write_run's default curve shape here)
        write_run(tmp_path, method="sim", seed=seed, samples=False, evals=(0.0, 1.0, 2.0), gflop_per_kimg=10.0,
                  values=lambda k: {"fid": {0.0: 60.0, 1.0: 20.0, 2.0: 10.0}[k]})
    assert main(["robustness", str(tmp_path), "--flatness", "--boot", "100"]) == 0
    whole = capsys.readouterr().out
    assert "+41% [+41%, +41%]" in whole  # 20 -> 10 over the second half: sqrt(2) over a quarter
    assert "On learning-rate tolerance" not in whole and robustness.DEFINITIONS["flatness"] in whole
    assert robustness.DEFINITIONS["tolerance"] not in whole
    assert main(["robustness", str(tmp_path), "--flatness", "--boot", "100", "--upto-gflop", "10"]) == 0
    cut = capsys.readouterr().out  # up to kimg 1: the last two evaluations, 60 -> 20: 3 ** 0.25 a quarter
    assert "at or before 10 GFLOP" in cut and "+32% [+32%, +32%]" in cut
    assert main(["robustness", str(tmp_path), "--flatness", "--boot", "100", "--upto-gflop", "5"]) == 0
    start = capsys.readouterr().out  # one evaluation each: no trend, and no claim either way
    assert "no curve had flattened; too few evaluations to tell for sim (batch 64)." in start


def test_cli_bad_factor_is_bad_input(tmp_path, capsys):
    write_run(tmp_path, method="sim", samples=False)
    assert main(["robustness", str(tmp_path), "--factor", "0.5"]) == 2
    assert "--factor" in capsys.readouterr().err


def test_definitions_are_in_the_module_docstring():
    assert all(text in robustness.__doc__ for text in robustness.DEFINITIONS.values())


def test_up_to_gflop_reads_runs_as_if_they_had_stopped_there():
    """A run evaluated at 0, 100, 200, 300 GFLOP, read up to 250: its final value is the one at 200."""
    rows = []
    for seed in (0, 1):
        for gflop, fid in ((0, 400.0), (100, 50.0), (200, 20.0), (300, 10.0)):
            rows.append(dict(method="sim", lr=1e-4, batch=64, seed=seed, gflop=float(gflop), fid=fid + seed))
    table = pd.DataFrame([dict(suite="digits", run_id=f"sim-s{r['seed']}", method="sim", lr_g=1e-4, lr_fake=1e-4,
                               batch=64, seed=r["seed"], kimg=r["gflop"] / 50, gflop=r["gflop"], metric="fid",
                               value=r["fid"], n_samples=1000, ema=True, status="done") for r in rows])
    teacher = table.iloc[:1].assign(method="teacher", run_id="teacher-s0", gflop=math.nan, value=3.0)
    cut = up_to_gflop(pd.concat([table, teacher], ignore_index=True), 250)
    assert "teacher-s0" in set(cut["run_id"]) and cut.loc[cut["method"] == "sim", "gflop"].max() == 200
    runs = robustness.run_matrix(cut, "digits", "fid")
    assert sorted(runs["final"]) == [20.0, 21.0]
    # the trend at the cut: over its second half (kimg 2 and 4) 50 -> 20, times a quarter over a half
    assert sorted(runs["trend"]) == [pytest.approx(math.log10(20 / 50) / 2), pytest.approx(math.log10(21 / 51) / 2)]
    with pytest.raises(robustness.BadInput, match="--upto-gflop"):
        up_to_gflop(table, 0)
    with pytest.raises(robustness.BadInput, match="cost accounting"):
        up_to_gflop(table.assign(gflop=math.nan), 100)
