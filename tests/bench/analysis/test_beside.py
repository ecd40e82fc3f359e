"""Coverage beside FID: the headline leaderboard's configurations with their coverage and diversity."""
import pytest

import rundirs
from bench.analysis import report
from bench.analysis.beside import beside_headline
from bench.analysis.table import load


def with_coverage(method, lr, seed):
    def values(kimg):
        fid = rundirs.fid_curve(method, lr, seed, kimg)
        return {"fid": fid, "coverage": 1 / (1 + fid), "vendi": 5.0 + seed, "class_balance": 0.9}
    return values


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for method in ("sim", "sid"):
        for lr in (1e-4, 1e-5):
            for seed in (0, 1):
                rundirs.write_run(root, method=method, lr=lr, seed=seed, values=with_coverage(method, lr, seed))
    rundirs.write_run(root, method="teacher", seed=0, evals=[0.0],
                      values=lambda k: {"fid": 1.0, "coverage": 0.9, "vendi": 6.0, "class_balance": 1.0})
    return root


def test_values_at_the_leaderboards_configuration(results):
    board = beside_headline(load(results), "digits", "fid")
    assert board.attrs["metrics"] == ["coverage", "vendi", "class_balance"]
    assert board["method"].iloc[0] == "teacher" or board["mean"].is_monotonic_increasing
    for r in board.to_dict("records"):
        if r["method"] == "teacher":
            assert r["coverage_mean"] == 0.9 and r["vendi_mean"] == 6.0
            continue
        # the same runs behind both: coverage is 1/(1+fid) per run, vendi the mean of 5 and 6 over the seeds
        assert r["vendi_mean"] == pytest.approx(5.5) and r["class_balance_mean"] == pytest.approx(0.9)
        assert 1 / (1 + r["mean"]) == pytest.approx(r["coverage_mean"], rel=0.05)


def test_none_without_coverage_metrics(tmp_path):
    root = tmp_path / "results"
    rundirs.write_run(root, method="sim")
    assert beside_headline(load(root), "digits", "fid") is None


def test_the_report_shows_coverage_beside_fid(results, tmp_path):
    ctx = report.context(results)
    beside = ctx["suites"][0]["beside"]
    assert beside["head"] == ["method", "FID", "Coverage", "Vendi", "Class balance"]
    assert len(beside["rows"]) == 3 and "Coverage higher is better" in beside["directions"]
    html = report.render(ctx)
    assert "Coverage beside FID" in html and 'id="beside-1"' in html
    assert "Coverage beside" not in report.render(report.context(_plain(tmp_path)))


def _plain(tmp_path):
    root = tmp_path / "plain"
    rundirs.write_run(root, method="sim")
    return root
