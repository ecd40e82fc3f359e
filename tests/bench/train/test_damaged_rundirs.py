"""Damaged run directories: ``bench run`` recovers what can be rebuilt, ``bench eval`` recovers or
refuses in one line, ``bench results`` skips with a warning; no file is padded, no abandoned row kept."""
import json
import shutil

import pytest
from bench_helpers import TINY, cli_caller, read_jsonl

RUN = ["run", "--suite", "gaussian", "--method", "sid", "--kimg", "0.25", "--batch", "64", "--eval-every", "0.25",
       "--checkpoint-every", "0.25", "--quiet", *TINY]


def _running(d):
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))


# (id, damage, what `bench eval` says before `bench run` repairs it: None = it evaluates)
DAMAGE = [
    ("manifest-invalid", lambda d: (d / "manifest.json").write_text("{bad"), "has not finished"),
    ("manifest-empty", lambda d: (d / "manifest.json").write_text(""), "has not finished"),
    ("manifest-a-list", lambda d: (d / "manifest.json").write_text("[1, 2]"), "has not finished"),
    ("manifest-missing", lambda d: (d / "manifest.json").unlink(), "has not finished"),
    ("config-invalid", lambda d: (d / "config.json").write_text("{bad"), "config.json is unreadable"),
    ("config-a-list", lambda d: (d / "config.json").write_text("[]"), "not a JSON object"),
    ("config-missing", lambda d: (d / "config.json").unlink(), "not a run directory"),
    ("stats-emptied", lambda d: (d / "stats.jsonl").write_text(""), None),
    ("metrics-emptied", lambda d: (d / "metrics.jsonl").write_text(""), None),
    ("checkpoints-deleted", lambda d: [p.unlink() for p in d.glob("state*.pt")], "no state.pt"),
    ("running-checkpoints-deleted", lambda d: ([p.unlink() for p in d.glob("state*.pt")], _running(d)),
     "no state.pt"),
    ("running-metrics-emptied", lambda d: ((d / "metrics.jsonl").write_text(""), _running(d)), "has not finished"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from bench.cli import main

    root = tmp_path_factory.mktemp("finished")
    assert main([*RUN, "--results", str(root)]) == 0
    return next((root / "gaussian").iterdir())


@pytest.fixture
def cli(capsys):
    return cli_caller(capsys)


@pytest.mark.filterwarnings("ignore:.*(unparseable|shorter than):UserWarning")
@pytest.mark.parametrize("case, damage, eval_says", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_damaged_run_directory(tmp_path, finished, cli, case, damage, eval_says):
    results = tmp_path / "r"
    run_dir = results / "gaussian" / finished.name
    shutil.copytree(finished, run_dir)
    config = json.loads((finished / "config.json").read_text())
    damage(run_dir)

    code, out, err = cli("eval", str(run_dir), "--n", "64")
    if eval_says is None:
        assert code == 0, err
    else:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and eval_says in lines[0] and "Traceback" not in err, err

    code, out, err = cli(*RUN, "--results", str(results))
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((run_dir / "config.json").read_text()) == config  # rebuilt when damaged
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"
    for log in ("stats.jsonl", "metrics.jsonl"):
        assert b"\0" not in (run_dir / log).read_bytes()  # never padded
    rows = [(r["kimg"], r["metric"], r["n_samples"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    assert len(rows) == len(set(rows))  # no row twice: not the abandoned attempt's, not a re-scored final
    if "checkpoints-deleted" in case and "running" in case:  # started over: exactly a fresh run's rows
        assert rows == [(r["kimg"], r["metric"], r["n_samples"]) for r in read_jsonl(finished / "metrics.jsonl")]

    code, out, err = cli("results", str(results))
    assert code == 0, err

