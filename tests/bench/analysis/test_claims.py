"""The failure rule, the stable edge and the SIM paper's two claims, on hand-built runs with known answers."""
import math

import numpy as np
import pytest
from rundirs import measure, table_of, write_run

from bench.analysis import claims
from bench.analysis.robustness import analyse, run_matrix, stable_edge
from bench.analysis.verdict import verdict
from bench.results import load


# --- the failure rule, on run directories ------------------------------------------------------------

@pytest.mark.parametrize("curve, status, failed", [
    ({0.0: 100.0, 1.0: 20.0, 2.0: 10.0}, "done", False),   # improved and stayed
    ({0.0: 100.0, 1.0: 10.0, 2.0: 19.0}, "done", False),   # lost some ground, but less than 2x its best
    ({0.0: 100.0, 1.0: 10.0, 2.0: 25.0}, "done", True),    # collapsed: more than 2x worse than its best
    ({0.0: 100.0, 1.0: 90.0, 2.0: 150.0}, "done", True),   # ends worse than it started
    ({0.0: 100.0, 1.0: 60.0}, "diverged", True),           # non-finite: diverged
])
def test_failure_rule_on_run_directories(tmp_path, curve, status, failed):
    write_run(tmp_path, method="sim", samples=False, evals=tuple(curve), status=status,
              diverged_at=1.5 if status == "diverged" else None, values=lambda k: {"fid": curve[k]})
    runs = run_matrix(load(tmp_path), "digits", "fid")
    assert runs["failed"].tolist() == [failed]
    assert runs["final"].iloc[0] == (curve[0.0] if status == "diverged" else curve[2.0])


def test_failure_reads_the_training_count_and_final_the_final_count(tmp_path):
    """Start, best and end on the 2k curve; the final value is the 10k one, as a leaderboard shows it."""
    write_run(tmp_path, method="sim", samples=False, evals=(0.0, 1.0, 2.0), n_samples=2000,
              values=lambda k: {"fid": {0.0: 100.0, 1.0: 10.0, 2.0: 12.0}[k]})
    run_dir = next(tmp_path.rglob("metrics.jsonl"))
    with run_dir.open("a") as log:  # the final evaluation's larger count, lower as FID's bias is
        log.write('{"kimg": 2.0, "metric": "fid", "value": 30.0, "n_samples": 10000, "ema": true}\n')
    runs = run_matrix(load(tmp_path), "digits", "fid")
    assert runs["final"].tolist() == [30.0]  # the 10k value
    assert runs["failed"].tolist() == [False]  # 12 against its best 10 on the 2k curve: not collapsed


# --- the stable edge ---------------------------------------------------------------------------------

def test_stable_edge_of_hand_built_failures():
    lrs = np.array([1e-5, 1e-4, 1e-3, 1e-2])
    failed = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0], [1, 1, 1]], dtype=float)  # [cells, seeds]
    everyone = np.array([[0, 1, 2]])
    assert stable_edge(lrs, failed, everyone).tolist() == [1e-4]  # seed 1 failed at 1e-3
    assert stable_edge(lrs, failed, np.array([[0, 2, 2]])).tolist() == [1e-3]  # a resample without seed 1
    assert stable_edge(lrs, np.zeros((4, 3)), everyone).tolist() == [math.inf]  # bounded by the grid
    assert stable_edge(lrs, np.ones((4, 3)), everyone).tolist() == [0.0]  # below the grid
    gap = failed.copy()
    gap[2] = np.nan  # a cell nobody ran is not a failure
    assert stable_edge(lrs, gap, everyone).tolist() == [1e-3]


def _up_to_failure(edge_of):
    """Runs of sim, sid and di at batch 64 whose runs fail above ``edge_of[method]`` (one seed fails first)."""
    for method, edge in edge_of.items():
        for lr in (1e-5, 1e-4, 1e-3, 1e-2):
            for seed in range(3):
                fails = lr > edge * 1.01 or (lr > edge / 1.01 and seed == 0 and method != "sim")
                end = 150.0 if fails else 10.0 * (1 + abs(math.log10(lr) + 4) / 4) + seed
                yield method, lr, 64, seed, {}, "done", {0: 100.0, 1: 2 * end if not fails else 80.0, 2: end}


def test_stable_edge_measure_and_the_higher_lr_claim():
    a = analyse(table_of(_up_to_failure({"sim": 1e-2, "sid": 1e-3, "di": 1e-4})), n_boot=400)[0]
    assert measure(a, "sim", "all", "edge")["value"] == math.inf  # nothing failed
    assert measure(a, "sid", "all", "edge")["value"] == 1e-4  # seed 0 failed at 1e-3
    assert measure(a, "di", "all", "edge")["value"] == 1e-5
    sid = measure(a, "sid", "all", "edge")
    assert sid["lo"] == 1e-4 and sid["hi"] == 1e-3  # resamples without seed 0 reach 1e-3
    assert measure(a, "sid", "all", "failure")["value"] == pytest.approx((1 + 3) / 12)
    text = verdict(a)
    assert "Stable edge (the largest learning rate at which no seed failed): sim none failed" in text
    assert "Claim 2, robustness to higher learning rates: holds at batch 64 (stable edge sim none failed, " \
           "sid 1e-4, di 1e-5" in text
    reverse = verdict(analyse(table_of(_up_to_failure({"sim": 1e-4, "sid": 1e-2, "di": 1e-2})), n_boot=200)[0])
    assert "Claim 2, robustness to higher learning rates: does not hold at batch 64" in reverse


# --- the convergence claim ---------------------------------------------------------------------------

def _converging(sim_rate):
    """sim, sid, di at batch 256, lr 1e-4 and 1e-5: FID = 10 + 90 exp(-rate * kimg), DI run twice as far."""
    for method, rate in (("sim", sim_rate), ("sid", 0.5), ("di", 0.5)):
        span = 8 if method == "di" else 4
        for lr in (1e-4, 1e-5):
            for seed in range(3):
                curve = {k: 10 + 90 * math.exp(-rate * k) + 0.2 * seed for k in range(span + 1)}
                yield method, lr, 256, seed, {}, "done", curve


def test_convergence_claim_at_matched_kimg():
    a = analyse(table_of(_converging(1.0)), n_boot=300)[0]
    conv = claims.convergence(a)
    assert set(conv["other"]) == {"sid", "di"} and (conv["kimg"] == 4).all()  # DI read at SIM's last kimg
    row = conv[(conv["lr"] == 1e-4) & (conv["other"] == "di")].iloc[0]
    expected = 90 * (math.exp(-4.0) - math.exp(-2.0))
    assert row["value_diff"] == pytest.approx(expected) and row["value_hi"] < 0
    text = verdict(a)
    assert "Claim 1, faster convergence (SIM against SiD and DI at batch 256, lr 1e-4 and 1e-5): holds" in text
    slower = verdict(analyse(table_of(_converging(0.25)), n_boot=300)[0])
    assert "Claim 1, faster convergence (SIM against SiD and DI at batch 256, lr 1e-4 and 1e-5): does not hold" in slower


def test_definitions_of_the_claims_are_printed(tmp_path, capsys):
    from bench.cli import main

    for seed in (0, 1):
        write_run(tmp_path, method="sim", seed=seed, samples=False)
    assert main(["robustness", str(tmp_path), "--boot", "50"]) == 0
    out = capsys.readouterr().out
    assert claims.DEFINITIONS["convergence"] in out and "stable edge" in out
