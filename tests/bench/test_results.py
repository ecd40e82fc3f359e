"""bench.results: the long table, leaderboards, robustness scores and their command lines."""
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import rundirs
from bench import results
from bench.cli import main

CONTRACT_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "kimg", "metric", "value",
                    "n_samples", "ema", "status"]


@pytest.fixture
def results_dir(tmp_path):
    return rundirs.standard_results(tmp_path / "results")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def mean_sem(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


def test_table_has_one_row_per_measurement(results_dir):
    table = results.load(results_dir)
    assert set(CONTRACT_COLUMNS) <= set(table.columns)
    # 12 done runs x 5 evaluations, 2 sim runs with huber_c=0.1 x 5, the diverged run x 3, the finished
    # lr 1e-3 dmd run x 5, the running run x 3, the teacher x 1; two metrics each; the torn line dropped
    assert len(table) == 2 * (12 * 5 + 2 * 5 + 3 + 5 + 3 + 1)
    assert set(table["metric"]) == {"fid", "is"}
    assert table["ema"].dtype == bool
    torn = table[table["run_id"].str.startswith("sid-lr0.0001-b64-s1")]
    assert len(torn) == 10 and torn["kimg"].max() == 4.0
    assert (table["images_seen"] == table["kimg"] * 1000).all()


def test_table_keeps_status_divergence_and_hyperparameters(results_dir):
    table = results.load(results_dir)
    by_status = table.groupby("status")["run_id"].nunique()
    assert by_status["running"] == 1 and by_status["diverged"] == 1 and by_status["done"] == 16
    diverged = table[table["status"] == "diverged"]
    assert set(diverged["diverged_kimg"]) == {2.5} and diverged["kimg"].max() == 2.0
    assert set(table.loc[table["method"] == "sim", "hp_huber_c"]) == {0.03, 0.1}
    assert set(table.loc[table["method"] == "sid", "hp_alpha"]) == {1.2}
    teacher = table[table["method"] == "teacher"]
    assert teacher["lr_g"].isna().all() and set(teacher["hp_steps"]) == {18}
    assert teacher["config_id"].nunique() == 1
    # seeds share a configuration id; hyperparameters and learning rates split them
    sim = table[table["method"] == "sim"]
    assert sim.groupby("config_id")["seed"].nunique().max() == 2
    assert sim["config_id"].nunique() == 4


def test_runs_without_metrics_are_listed_but_have_no_rows(results_dir):
    runs = results.load_runs(results_dir)
    table = results.load(results_dir)
    assert len(runs) == 19
    silent = set(runs["run_id"]) - set(table["run_id"])
    assert len(silent) == 1 and runs.set_index("run_id").loc[silent.pop(), "status"] == "running"


def test_hyperparameter_names_that_are_not_identifiers(tmp_path):
    rundirs.write_run(tmp_path, method="dmd2", hparams={"gan-weight": 0.003, "fake updates": 5})
    table = results.load(tmp_path)
    assert set(table["hp_gan-weight"]) == {0.003} and set(table["hp_fake updates"]) == {5}


def test_stats_table(results_dir):
    stats = results.load_stats(results_dir)
    assert list(stats.columns[:6]) == ["suite", "run_id", "method", "lr_g", "seed", "status"]
    assert len(stats) == 5 * 19 and {"loss_g", "images_per_s", "peak_mem_mb"} <= set(stats.columns)


def test_final_value_prefers_ema_and_the_last_evaluation(tmp_path):
    rundirs.write_run(tmp_path, method="sid", raw_rows=True)
    table = results.load(tmp_path)
    assert len(table) == 2 * 2 * 5  # EMA and raw rows
    final = results.final_values(table).set_index("metric")
    assert final.loc["fid", "ema"] and final.loc["fid", "kimg"] == 4.0
    assert final.loc["fid", "value"] == pytest.approx(rundirs.fid_curve("sid", 1e-4, 0, 4.0))


def test_final_value_takes_the_larger_evaluation_at_the_same_kimg(tmp_path):
    d = rundirs.write_run(tmp_path, method="sid")
    with open(d / "metrics.jsonl", "a") as f:  # what `bench eval RUN_DIR --n 5000` appends
        f.write(json.dumps({"kimg": 4.0, "metric": "fid", "value": 1.25, "n_samples": 5000, "ema": True}) + "\n")
    table = results.load(tmp_path)
    final = results.final_values(table).set_index("metric")
    assert final.loc["fid", "value"] == 1.25 and final.loc["fid", "n_samples"] == 5000
    curve = results.curves(table)
    assert curve.loc[(curve["metric"] == "fid") & (curve["kimg"] == 4.0), "n_samples"].tolist() == [1000]


def test_leaderboard_numbers(results_dir):
    board = results.leaderboard(results.load(results_dir), "fid").set_index("method")
    assert list(board.index) == ["teacher", "sim", "sid", "dmd"]  # best first, teacher included
    assert (board["direction"] == "lower").all() and (board["label"] == "FID-1k").all()
    for method in ("sim", "sid", "dmd"):  # best config: lr 1e-4 and (sim) huber_c 0.03
        mean, sem = mean_sem([rundirs.fid_curve(method, 1e-4, s, 4.0) for s in rundirs.SEEDS])
        row = board.loc[method]
        assert row["mean"] == pytest.approx(mean) and row["sem"] == pytest.approx(sem)
        assert row["n"] == 2 and row["n_samples"] == 1000 and row["lr_g"] == 1e-4 and row["kimg"] == 4.0
        assert row["images_seen"] == 4000 and row["wall_time_s"] == pytest.approx(400.5)
        assert row["runs"] == 2 and row["done"] == 2 and row["diverged"] == 0
    assert board.loc["sim", "hp_huber_c"] == 0.03
    assert board.loc["dmd", "method_diverged"] == 1 and board.loc["dmd", "method_runs"] == 6
    assert board.loc["teacher", "mean"] == 3.0 and board.loc["teacher", "n"] == 1
    assert math.isnan(board.loc["teacher", "sem"])


def test_leaderboard_higher_is_better_and_default_metric(results_dir):
    table = results.load(results_dir)
    board = results.leaderboard(table, "is").set_index("method")
    assert (board["direction"] == "higher").all()
    assert list(board.index) == ["teacher", "sim", "sid", "dmd"]
    expected = np.mean([rundirs.is_curve(rundirs.fid_curve("sim", 1e-4, s, 4.0)) for s in rundirs.SEEDS])
    assert board.loc["sim", "mean"] == pytest.approx(expected)
    assert results.leaderboard(table)["metric"].unique().tolist() == ["fid"]  # the headline metric


def test_a_configuration_with_a_diverged_seed_loses(tmp_path):
    for seed in (0, 1):
        rundirs.write_run(tmp_path, method="sid", lr=1e-4, seed=seed)
    rundirs.write_run(tmp_path, method="sid", lr=1e-3, seed=0, values=lambda k: {"fid": 1.0})
    rundirs.write_run(tmp_path, method="sid", lr=1e-3, seed=1, status="diverged", diverged_at=1.5,
                      evals=(0.0, 1.0), values=lambda k: {"fid": 0.5})
    row = results.leaderboard(results.load(tmp_path), "fid").iloc[0]
    assert row["lr_g"] == 1e-4 and row["n"] == 2


def test_failed_runs_are_counted_not_averaged(tmp_path):
    for seed in (0, 1):
        rundirs.write_run(tmp_path, method="sid", seed=seed)
    rundirs.write_run(tmp_path, method="sid", seed=2, status="failed", values=lambda k: {"fid": 0.1})
    row = results.leaderboard(results.load(tmp_path), "fid").iloc[0]
    assert row["failed"] == 1 and row["done"] == 2 and row["n"] == 2 and row["runs"] == 3
    assert row["mean"] == pytest.approx(np.mean([rundirs.fid_curve("sid", 1e-4, s, 4.0) for s in (0, 1)]))


def test_robustness_score(results_dir):
    rob = results.robustness(results.load(results_dir), "fid").set_index("method")
    fid = lambda m, lr: np.mean([rundirs.fid_curve(m, lr, s, 4.0) for s in rundirs.SEEDS])  # noqa: E731
    for method in ("sim", "sid", "dmd"):  # scored on the grid all methods share: 1e-5 and 1e-4
        assert rob.loc[method, "score"] == pytest.approx(math.log10(fid(method, 1e-5) / fid(method, 1e-4)))
        assert rob.loc[method, "lrs"] == 2 and rob.loc[method, "spread_unit"] == "decades"
    assert rob.loc["dmd", "diverged"] == pytest.approx(1 / 6) and rob.loc["sim", "diverged"] == 0
    # at lr 1e-3 the diverged dmd seed counts with its starting value (80), the other seed ended at 36
    assert rob.loc["dmd", "lr=0.001"] == pytest.approx((80.0 + 36.0) / 2)
    assert list(rob.index) == sorted(rob.index, key=lambda m: rob.loc[m, "score"])


def test_spread_is_a_difference_for_metrics_that_can_be_negative():
    assert results.spread([0.01, -0.02, 0.03], "kid") == pytest.approx(0.05)
    assert results.spread([2.0, 20.0], "fid") == pytest.approx(1.0)
    assert math.isnan(results.spread([2.0], "fid"))


def test_hyperparameters_are_shown_as_used_and_identified_as_given(tmp_path):
    for huber_c, in_use in ((None, 0.00432), (0.1, 0.1)):
        d = rundirs.write_run(tmp_path, method="sim", hparams={"distance": "pseudo_huber", "huber_c": huber_c})
        config = json.loads((d / "config.json").read_text())
        config["hparams_in_use"] = {"distance": "pseudo_huber", "huber_c": in_use}
        (d / "config.json").write_text(json.dumps(config))
    runs = results.load_runs(tmp_path).sort_values("hp_huber_c")
    assert runs["hp_huber_c"].tolist() == [0.00432, 0.1]
    assert runs["config"].tolist() == ["distance=pseudo_huber, huber_c=0.00432, lr=1e-4, batch=64",
                                       "distance=pseudo_huber, huber_c=0.1, lr=1e-4, batch=64"]
    assert runs["config_id"].nunique() == 2  # the identity still comes from the hyperparameters as given


def test_labels_and_formatting():
    assert results.metric_label("fid", 1000) == "FID-1k"
    assert results.metric_label("fid", 50000) == "FID-50k"
    assert results.metric_label("is", 256) == "IS-256"
    assert results.fmt(5.5392, 0.14725) == "5.54 ± 0.15"
    assert results.fmt(123.456) == "123.5" and results.fmt(float("nan")) == "–"


def test_cli_results_writes_parquet_and_csv(results_dir, tmp_path, capsys):
    n = len(results.load(results_dir))
    code, out, _ = run_cli(capsys, "results", str(results_dir), "-o", str(tmp_path / "t.parquet"))
    assert code == 0 and str(n) in out
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert len(back) == n and set(CONTRACT_COLUMNS) <= set(back.columns)
    code, _, _ = run_cli(capsys, "results", str(results_dir), "-o", str(tmp_path / "t.csv"))
    assert code == 0 and len(pd.read_csv(tmp_path / "t.csv")) == n


def test_cli_results_summary(results_dir, capsys):
    code, out, _ = run_cli(capsys, "results", str(results_dir))
    assert code == 0 and "19 runs" in out and "| digits" in out and "diverged" in out


def test_cli_leaderboard_csv_matches_the_function(results_dir, capsys):
    code, out, _ = run_cli(capsys, "leaderboard", str(results_dir), "--metric", "fid", "--format", "csv")
    assert code == 0
    csv = pd.read_csv(io.StringIO(out)).set_index("method")
    board = results.leaderboard(results.load(results_dir), "fid").set_index("method")
    assert csv.loc["sim", "mean"] == pytest.approx(board.loc["sim", "mean"])
    code, out, _ = run_cli(capsys, "leaderboard", str(results_dir))
    assert code == 0 and "FID-1k" in out and "5.54 ± 0.15" in out and "| teacher" in out


@pytest.mark.parametrize("argv, message", [
    (["leaderboard", "{empty}"], "no run directories"),
    (["leaderboard", "{missing}"], "does not exist"),
    (["leaderboard", "{results}", "--metric", "fdi"], "unknown metric 'fdi'"),
    (["leaderboard", "{results}", "--metric", "kid"], "was not measured"),
    (["results", "{empty}"], "no run directories"),
    (["results", "{results}", "-o", "{tmp}/table.xlsx"], ".parquet or .csv"),
])
def test_bad_input_exits_2_with_one_line(results_dir, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    fill = dict(empty=tmp_path / "empty", missing=tmp_path / "nope", results=results_dir, tmp=tmp_path)
    code, out, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("bench: error:")
    assert not (tmp_path / "table.xlsx").exists()


def test_no_measurements_yet_is_bad_input(tmp_path, capsys):
    rundirs.write_run(tmp_path, status="running", evals=(), metrics_file=False)
    code, _, err = run_cli(capsys, "leaderboard", str(tmp_path))
    assert code == 2 and "no measurements" in err


def test_results_plots_and_report_do_not_import_torch():
    code = ("import sys, bench.results, bench.plots, bench.report; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0
