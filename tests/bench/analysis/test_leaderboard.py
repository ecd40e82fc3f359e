"""bench.analysis.leaderboard: summaries over seeds, leaderboards (final and at a common budget), the
lr-robustness table and the leaderboard command line."""
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

import rundirs
from bench import results
from bench.cli import main
from bench_helpers import cli_caller
from bench.analysis.leaderboard import (LEADERBOARD_COLUMNS, VALUE, leaderboard, leaderboard_view, lr_robustness,
                                        noise_floor, spread, value_header)
from bench.analysis.table import headline_metrics


def mean_sem(values):
    values = np.asarray(values, dtype=float)
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


def test_leaderboard_numbers(results_dir):
    board = leaderboard(results.load(results_dir), "fid").set_index("method")
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
    board = leaderboard(table, "is").set_index("method")
    assert (board["direction"] == "higher").all()
    assert list(board.index) == ["teacher", "sim", "sid", "dmd"]
    expected = np.mean([rundirs.is_curve(rundirs.fid_curve("sim", 1e-4, s, 4.0)) for s in rundirs.SEEDS])
    assert board.loc["sim", "mean"] == pytest.approx(expected)
    assert leaderboard(table)["metric"].unique().tolist() == ["fid"]  # the headline metric


def test_a_configuration_with_a_diverged_seed_loses(tmp_path):
    for seed in (0, 1):
        rundirs.write_run(tmp_path, method="sid", lr=1e-4, seed=seed)
    rundirs.write_run(tmp_path, method="sid", lr=1e-3, seed=0, values=lambda k: {"fid": 1.0})
    rundirs.write_run(tmp_path, method="sid", lr=1e-3, seed=1, status="diverged", diverged_at=1.5,
                      evals=(0.0, 1.0), values=lambda k: {"fid": 0.5})
    row = leaderboard(results.load(tmp_path), "fid").iloc[0]
    assert row["lr_g"] == 1e-4 and row["n"] == 2


def test_failed_runs_are_counted_not_averaged(tmp_path):
    for seed in (0, 1):
        rundirs.write_run(tmp_path, method="sid", seed=seed)
    rundirs.write_run(tmp_path, method="sid", seed=2, status="failed", values=lambda k: {"fid": 0.1})
    row = leaderboard(results.load(tmp_path), "fid").iloc[0]
    assert row["failed"] == 1 and row["done"] == 2 and row["n"] == 2 and row["runs"] == 3
    assert row["mean"] == pytest.approx(np.mean([rundirs.fid_curve("sid", 1e-4, s, 4.0) for s in (0, 1)]))


def test_robustness_score(results_dir):
    rob = lr_robustness(results.load(results_dir), "fid").set_index("method")
    fid = lambda m, lr: np.mean([rundirs.fid_curve(m, lr, s, 4.0) for s in rundirs.SEEDS])  # noqa: E731
    for method in ("sim", "sid", "dmd"):  # scored on the grid all methods share: 1e-5 and 1e-4
        assert rob.loc[method, "score"] == pytest.approx(math.log10(fid(method, 1e-5) / fid(method, 1e-4)))
        assert rob.loc[method, "lrs"] == 2 and rob.loc[method, "spread_unit"] == "decades"
    assert rob.loc["dmd", "diverged"] == pytest.approx(1 / 6) and rob.loc["sim", "diverged"] == 0
    # at lr 1e-3 the diverged dmd seed counts with its starting value (80), the other seed ended at 36
    assert rob.loc["dmd", "lr=0.001"] == pytest.approx((80.0 + 36.0) / 2)
    assert list(rob.index) == sorted(rob.index, key=lambda m: rob.loc[m, "score"])


def test_spread_is_a_difference_for_metrics_that_can_be_negative():
    assert spread([0.01, -0.02, 0.03], "kid") == pytest.approx(0.05)
    assert spread([2.0, 20.0], "fid") == pytest.approx(1.0)
    assert math.isnan(spread([2.0], "fid"))


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


def test_cli_leaderboard_csv_matches_the_function(results_dir, capsys):
    code, out, _ = cli_caller(capsys)("leaderboard", str(results_dir), "--metric", "fid", "--format", "csv")
    assert code == 0
    csv = pd.read_csv(io.StringIO(out)).set_index("method")
    board = leaderboard(results.load(results_dir), "fid").set_index("method")
    assert csv.loc["sim", "mean"] == pytest.approx(board.loc["sim", "mean"])
    code, out, _ = cli_caller(capsys)("leaderboard", str(results_dir))
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
    code, out, err = cli_caller(capsys)(*[a.format(**fill) for a in argv])
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("bench: error:")
    assert not (tmp_path / "table.xlsx").exists()


COST = rundirs.COST


def fid_at_gflop(method, lr, seed, gflop):
    """The FID a costed run has at ``gflop``: the curve between evaluations, interpolated in log space."""
    kimg = (gflop - COST[method].get("oneoff_gflop", 0.0)) / COST[method]["gflop_per_kimg"]
    lo, hi = math.floor(kimg), math.ceil(kimg)
    f_lo, f_hi = rundirs.fid_curve(method, lr, seed, lo), rundirs.fid_curve(method, lr, seed, hi)
    w = kimg - lo
    return math.exp((1 - w) * math.log(f_lo) + w * math.log(f_hi)), kimg


def test_leaderboard_at_equal_gflop(costed_dir):
    board = leaderboard(results.load(costed_dir), "fid", at="gflop").set_index("method")
    budget = 40.0  # sim reached 4 kimg x 10 = 40 GFLOP, dmd 65, sid 100: 40 is what every method reached
    assert (board["budget"] == budget).all() and (board["at"] == "gflop").all()
    for method in COST:
        expected = [fid_at_gflop(method, 1e-4, seed, budget)[0] for seed in rundirs.SEEDS]
        mean, sem = mean_sem(expected)
        assert board.loc[method, "lr_g"] == 1e-4
        assert board.loc[method, "mean"] == pytest.approx(mean, rel=1e-9)
        assert board.loc[method, "sem"] == pytest.approx(sem, rel=1e-9)
        assert board.loc[method, "kimg"] == pytest.approx(fid_at_gflop(method, 1e-4, 0, budget)[1])
        assert board.loc[method, "gflop"] == pytest.approx(budget)
        assert board.loc[method, "gflop_per_kimg"] == pytest.approx(COST[method]["gflop_per_kimg"])
    # at equal kimg sid beats dmd; at equal compute dmd (cheaper per kimg) overtakes it
    final = leaderboard(results.load(costed_dir), "fid")
    assert list(final["method"]) == ["teacher", "sim", "sid", "dmd"]
    assert list(board.index) == ["teacher", "sim", "dmd", "sid"]
    assert board.loc["teacher", "mean"] == 3.0


def test_leaderboard_at_wall_and_kimg(costed_dir):
    table = results.load(costed_dir)
    wall = leaderboard(table, "fid", at="wall").set_index("method")
    assert (wall["budget"] == 80.0).all()  # sim: 4 kimg x 20 s; seconds per kimg are twice the GFLOP here
    assert wall.loc["sid", "kimg"] == pytest.approx(1.6)
    at_kimg = leaderboard(table, "fid", at="kimg")
    final = leaderboard(table, "fid")
    assert list(at_kimg["mean"]) == pytest.approx(list(final["mean"]))  # every method reached 4 kimg


def test_cli_leaderboard_at(costed_dir, capsys):
    code, out, _ = cli_caller(capsys)("leaderboard", str(costed_dir), "--metric", "fid", "--at", "gflop")
    assert code == 0
    assert "at 40.00 GFLOP, the largest budget every method reached" in out
    assert "15.00 GFLOP, 30.00 s" in out  # dmd's cost per kimg
    assert "0.07 GFLOP/image (35 NFE x 0.002)" in out  # the teacher's cost per sample
    code, _, err = cli_caller(capsys)("leaderboard", str(costed_dir), "--at", "flops")
    assert code == 2 and "--at" in err


def test_an_unregistered_metric_is_shown_not_dropped(tmp_path, capsys):
    """A metric the registry does not know still heads a suite that measures nothing else."""
    for method, floor in (("sim", 1.0), ("sid", 2.0)):
        rundirs.write_run(tmp_path, suite="toy", method=method, samples=False,
                          values=lambda k, f=floor: {"mystery": f + 1 / (1 + k)})
    table = results.load(tmp_path)
    assert headline_metrics(table) == {"toy": "mystery"}
    board = leaderboard(table)
    assert board["direction"].unique().tolist() == ["unregistered"]
    assert board["method"].tolist() == ["sim", "sid"]  # listed smallest first
    code, out, _ = cli_caller(capsys)("leaderboard", str(tmp_path))
    assert code == 0 and "unregistered metric" in out and "| sim" in out


def test_the_leaderboard_view_has_the_declared_columns(results_dir):
    board = leaderboard(results.load(results_dir), "fid")
    view = leaderboard_view(board[board["suite"] == "digits"])
    assert list(view.columns) == [value_header(board) if c.header == VALUE else c.header
                                  for c in LEADERBOARD_COLUMNS]


def _add_eval(run_dir, value, n, kimg=4.0):
    with open(run_dir / "metrics.jsonl", "a") as f:  # what `bench eval RUN_DIR --n N` writes
        f.write(json.dumps({"kimg": kimg, "metric": "fid", "value": value, "n_samples": n, "ema": True}) + "\n")


def test_leaderboard_never_ranks_different_sample_counts_together(tmp_path):
    sim = rundirs.write_run(tmp_path, method="sim")
    sid = rundirs.write_run(tmp_path, method="sid")
    _add_eval(sim, 0.5, 5000)  # only sim re-scored on more samples: both must be ranked on 1k
    board = leaderboard(results.load(tmp_path), "fid").set_index("method")
    assert board.loc["sim", "mean"] == pytest.approx(rundirs.fid_curve("sim", 1e-4, 0, 4.0))
    assert board.loc["sid", "mean"] == pytest.approx(rundirs.fid_curve("sid", 1e-4, 0, 4.0))
    assert set(board["label"]) == {"FID-1k"}
    assert any("FID-1k" in n and "5k" in n for n in board.attrs["notes"])
    _add_eval(sid, 0.75, 5000)  # now every run has 5k at its final evaluation: the larger count wins
    board = leaderboard(results.load(tmp_path), "fid").set_index("method")
    assert board.loc["sim", "mean"] == 0.5 and board.loc["sid", "mean"] == 0.75
    assert set(board["label"]) == {"FID-5k"}


def test_leaderboard_names_suites_without_the_metric(tmp_path, capsys):
    rundirs.write_run(tmp_path, method="sim")
    rundirs.write_run(tmp_path, suite="gaussian", method="sid", values=lambda k: {"frechet": 1.0 / (1 + k)})
    assert main(["leaderboard", str(tmp_path), "--metric", "fid"]) == 0
    captured = capsys.readouterr()
    assert "## digits" in captured.out and "gaussian" not in captured.out
    assert "fid was not measured in suite(s) gaussian" in captured.err


def test_noise_floor_reads_the_teachers_rows_at_their_largest_count(tmp_path, capsys):
    rundirs.write_run(tmp_path, method="sim")
    for seed, (fid, fd) in enumerate([(3.40, 0.35), (3.82, 0.55), (3.06, 0.40)]):
        d = rundirs.write_run(tmp_path, method="teacher", seed=seed,
                              values=lambda k: {"fid": 9.0, "fd_teacher": 2.0})  # the smaller count: not the floor
        with open(d / "metrics.jsonl", "a") as f:
            for metric, value in (("fid", fid), ("fd_teacher", fd)):
                f.write(json.dumps({"kimg": 0.0, "metric": metric, "value": value, "n_samples": 10000, "ema": True}) + "\n")
    floor = noise_floor(results.load(tmp_path), "digits")
    assert floor == ("Noise floor (the teacher's own rows): FID-10k 3.40, 3.82, 3.06 over sampling seeds 0, 1, 2 "
                     "(range 0.76); the teacher-vs-teacher distance FD to teacher-10k 0.35, 0.55, 0.4 over "
                     "sampling seeds 0, 1, 2 (range 0.2)")
    assert main(["leaderboard", str(tmp_path), "--metric", "fid"]) == 0
    assert floor in capsys.readouterr().out
    assert noise_floor(results.load(tmp_path), "gaussian") is None


def test_runs_that_end_worse_than_they_started_count_as_failed(tmp_path):
    rundirs.write_run(tmp_path, method="sim", lr=1e-4)
    rundirs.write_run(tmp_path, method="sim", lr=1e-2, values=lambda k: {"fid": 50.0 + k})  # worse at every step
    rundirs.write_run(tmp_path, method="sid", lr=1e-4, diverged_at=2.0, status="diverged")
    board = leaderboard(results.load(tmp_path), "fid").set_index("method")
    assert board.loc["sim", "method_failed"] == 1 and board.loc["sim", "method_diverged"] == 0
    assert board.loc["sid", "method_failed"] == 1 and board.loc["sid", "method_diverged"] == 1
    view = leaderboard_view(board.reset_index()).set_index("method")
    assert view.loc["sim", "failed, all configs"] == "1 / 2"


def test_few_step_runs_are_configurations_of_their_own_ranked_per_nfe(tmp_path):
    rundirs.write_few_step_runs(tmp_path)
    table = results.load(tmp_path)
    assert table.drop_duplicates("run_id").groupby("config_id").size().tolist() == [2, 2, 2, 1, 1]  # seeds share one
    board = leaderboard(table, "fid")
    assert "steps=4" in board.set_index("method").loc["sim", "config"]  # the best of sim's configurations
    per = leaderboard(table, "fid", per_nfe=True)
    assert [(m, n) for m, n in zip(per["method"], per["sample_nfe"])] == [
        ("teacher", 3.0), ("teacher", 35.0), ("sim", 1.0), ("sim", 2.0), ("sim", 4.0)]
    assert per["mean"].tolist()[2:] == pytest.approx([40.0 + 4, 20.0 + 4, 10.0 + 4])
    assert leaderboard_view(per)["NFE"].tolist() == ["3", "35", "1", "2", "4"]
    assert noise_floor(table, "digits").startswith("Noise floor (the teacher's own rows): FID-1k 3.00")  # its 18 steps
