"""bench.analysis.table (through Contract 3's bench.results): the long table of measurements, final
values, labels, cost columns and `bench results`."""
import json
import math

import pandas as pd
import pytest

import rundirs
from bench import results
from bench_helpers import cli_caller
from bench.analysis.leaderboard import leaderboard, leaderboard_view
from bench.analysis.table import curves, final_values, metric_label
from bench.analysis.text import fmt
from bench.errors import BadInput


CONTRACT_COLUMNS = ["suite", "run_id", "method", "lr_g", "lr_fake", "batch", "seed", "kimg", "metric", "value",
                    "n_samples", "ema", "status"]


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
    final = final_values(table).set_index("metric")
    assert final.loc["fid", "ema"] and final.loc["fid", "kimg"] == 4.0
    assert final.loc["fid", "value"] == pytest.approx(rundirs.fid_curve("sid", 1e-4, 0, 4.0))


def test_final_value_takes_the_larger_evaluation_at_the_same_kimg(tmp_path):
    d = rundirs.write_run(tmp_path, method="sid")
    with open(d / "metrics.jsonl", "a") as f:  # what `bench eval RUN_DIR --n 5000` appends
        f.write(json.dumps({"kimg": 4.0, "metric": "fid", "value": 1.25, "n_samples": 5000, "ema": True}) + "\n")
    table = results.load(tmp_path)
    final = final_values(table).set_index("metric")
    assert final.loc["fid", "value"] == 1.25 and final.loc["fid", "n_samples"] == 5000
    curve = curves(table)
    assert curve.loc[(curve["metric"] == "fid") & (curve["kimg"] == 4.0), "n_samples"].tolist() == [1000]


def test_labels_and_formatting():
    assert metric_label("fid", 1000) == "FID-1k"
    assert metric_label("fid", 50000) == "FID-50k"
    assert metric_label("is", 256) == "IS-256"
    assert fmt(5.5392, 0.14725) == "5.54 ± 0.15"
    assert fmt(123.456) == "123.5" and fmt(float("nan")) == "–"


def test_cli_results_writes_parquet_and_csv(results_dir, tmp_path, capsys):
    n = len(results.load(results_dir))
    code, out, _ = cli_caller(capsys)("results", str(results_dir), "-o", str(tmp_path / "t.parquet"))
    assert code == 0 and str(n) in out
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert len(back) == n and set(CONTRACT_COLUMNS) <= set(back.columns)
    code, _, _ = cli_caller(capsys)("results", str(results_dir), "-o", str(tmp_path / "t.csv"))
    assert code == 0 and len(pd.read_csv(tmp_path / "t.csv")) == n


def test_cli_results_summary(results_dir, capsys):
    code, out, _ = cli_caller(capsys)("results", str(results_dir))
    assert code == 0 and "19 runs" in out and "| digits" in out and "diverged" in out


def test_no_measurements_yet_is_bad_input(tmp_path, capsys):
    rundirs.write_run(tmp_path, status="running", evals=(), metrics_file=False)
    code, _, err = cli_caller(capsys)("leaderboard", str(tmp_path))
    assert code == 2 and "no measurements" in err


def test_cost_columns(costed_dir):
    table = results.load(costed_dir)
    row = table[(table["method"] == "dmd") & (table["kimg"] == 2.0) & (table["metric"] == "fid")].iloc[0]
    assert row["gflop"] == pytest.approx(5.0 + 30.0) and row["train_s"] == pytest.approx(60.0)
    assert row["gflop_per_kimg"] == pytest.approx(15.0) and row["oneoff_gflop"] == pytest.approx(5.0)
    assert row["budget"] == "kimg" and math.isnan(row["gflop_budget"])
    teacher = table[table["method"] == "teacher"].iloc[0]
    assert teacher["sample_gflop_per_image"] == pytest.approx(0.07) and teacher["sample_nfe"] == 35


def test_runs_without_cost_figures_still_load(results_dir):
    table = results.load(results_dir)
    assert table["gflop"].isna().all() and table["gflop_per_kimg"].isna().all()
    board = leaderboard(table, "fid")
    assert board["gflop_per_kimg"].isna().all()
    assert leaderboard_view(board)["cost per kimg"].eq("–").all()
    with pytest.raises(BadInput, match="predate cost accounting"):
        leaderboard(table, "fid", at="gflop")


def test_views_keep_one_budget_per_configuration_and_seed(tmp_path, capsys):
    """``make demo QUICK=1`` then ``make demo``: the quick runs are set aside, not counted as seeds."""
    from bench.analysis.table import load_runs
    from bench.cli import main
    from bench.errors import BenchWarning
    from rundirs import write_run

    for seed in (0, 1):
        write_run(tmp_path, seed=seed, evals=(0.0, 1.0, 2.0, 3.0, 4.0))
        write_run(tmp_path, seed=seed, evals=(0.0, 0.5, 1.0), run_id=f"sim-quick-s{seed}")
    with pytest.warns(BenchWarning, match="2 run\\(s\\) set aside"):
        runs = load_runs(tmp_path)
    assert sorted(runs["kimg_budget"]) == [4.0, 4.0] and len(load_runs(tmp_path, every=True)) == 4
    assert main(["robustness", str(tmp_path)]) == 0  # failed on duplicate labels before
    assert "bench: warning: " in capsys.readouterr().err


def test_views_refuse_runs_of_different_suite_options(tmp_path, capsys):
    from bench.cli import main
    from rundirs import write_run

    write_run(tmp_path, seed=0, suite_options={"res": 8, "teacher_seed": 0})
    write_run(tmp_path, seed=1, suite_options={"res": 8, "teacher_seed": 1})
    for argv in (["leaderboard", str(tmp_path)], ["robustness", str(tmp_path)],
                 ["report", str(tmp_path), "-o", str(tmp_path / "r.html")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "teacher_seed 0 vs 1" in err[0] and "not comparable" in err[0]
    assert main(["results", str(tmp_path)]) == 0  # the tidy table keeps every run


def test_guidance_scales_of_one_suite_are_ranked_apart(tmp_path, capsys):
    """A sweep over ``guidance`` fills one folder with runs of several guided teachers: each scale is a
    setting of its own (one leaderboard and teacher row per scale), not a refusal."""
    from bench.analysis.table import load_runs
    from bench.cli import main
    from rundirs import write_run

    for w in (1.5, 3.0):
        options = {"res": 8, "guidance": w}
        write_run(tmp_path / f"w{w}", suite="digits_cond", method="teacher", evals=(0.0,), suite_options=options)
        for seed in (0, 1):
            write_run(tmp_path / f"w{w}", suite="digits_cond", seed=seed, suite_options=options)
    runs = load_runs(tmp_path)
    assert sorted(set(runs["suite"])) == ["digits_cond w=1.5", "digits_cond w=3"]
    assert runs.groupby("suite")["seed"].nunique().tolist() == [2, 2]
    assert main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "digits_cond w=1.5" in out and "digits_cond w=3" in out
    # the other options still have to agree within a scale
    write_run(tmp_path / "other", suite="digits_cond", seed=2, suite_options={"res": 16, "guidance": 3.0})
    assert main(["leaderboard", str(tmp_path)]) == 2
    assert "suite digits_cond w=3 with different suite options (res 16 vs 8)" in capsys.readouterr().err


def test_suite_options_that_shape_only_the_student_keep_runs_comparable(tmp_path):
    """A wider student (``suite.student_channels``, named in the run's ``hparams_in_use`` by the suite) shares
    the teacher and the evaluation: its runs rank beside the others, as another configuration."""
    from bench.analysis.table import load_runs
    from rundirs import write_run

    write_run(tmp_path, method="dmd2", seed=0, suite_options={"res": 8})
    wide = write_run(tmp_path, method="dmd2", seed=0, suite_options={"res": 8, "student_channels": 32},
                     run_id="dmd2-wide-s0")
    config = json.loads((wide / "config.json").read_text())
    config["hparams_in_use"] = {**config["hparams"], "student_channels": 32}
    (wide / "config.json").write_text(json.dumps(config))
    runs = load_runs(tmp_path)
    assert len(runs) == 2 and runs["config_id"].nunique() == 2 and runs["suite_config"].nunique() == 1
    assert "student_channels=32" in runs.set_index("run_id").loc["dmd2-wide-s0", "config"]


def test_leaderboard_says_which_teacher_its_table_is_about(tmp_path, capsys):
    from bench.cli import main
    from rundirs import write_run

    write_run(tmp_path, method="teacher", evals=(0.0,))
    write_run(tmp_path, seed=0)
    assert main(["leaderboard", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "distils one teacher and is scored by one evaluation (suite options " in out and "teacher-s0" in out
