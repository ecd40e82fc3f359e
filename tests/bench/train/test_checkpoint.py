import json
from pathlib import Path

import pytest
from bench_helpers import read_jsonl, tiny_run_args

import bench.train.loop
from bench.train import checkpoint
from bench.errors import BadInput

ARGS = dict(method="sid", kimg="2", extra=["--set", "train.tick_kimg=0.128"])  # checkpoints every 0.5 kimg


def _values(run_dir):
    metrics = [(r["kimg"], r["metric"], r["value"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    stats = [(r["kimg"], r["step"], r["loss_g"], r["loss_fake"]) for r in read_jsonl(run_dir / "stats.jsonl")]
    return metrics, stats


def _crash_after(monkeypatch, nimg):
    """Make the training step fail once the run has trained past ``nimg`` images (a crash)."""
    step = bench.train.loop.training_step

    def crashing(run):
        if run.nimg >= nimg:
            raise RuntimeError("simulated crash")
        return step(run)

    monkeypatch.setattr(bench.train.loop, "training_step", crashing)


def _args(results):
    return tiny_run_args(results, **ARGS)


def test_save_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, {"progress": {"nimg": 1}})
    assert not (tmp_path / checkpoint.PREVIOUS).exists()
    checkpoint.save(tmp_path, {"progress": {"nimg": 2}})
    assert checkpoint.read(tmp_path / checkpoint.CURRENT, "cpu")["progress"]["nimg"] == 2
    assert checkpoint.read(tmp_path / checkpoint.PREVIOUS, "cpu")["progress"]["nimg"] == 1
    (tmp_path / checkpoint.CURRENT).write_bytes(b"")
    seen = []
    name, state, problems = checkpoint.load(tmp_path, "cpu", seen.append)
    assert name == checkpoint.PREVIOUS and state["progress"]["nimg"] == 1 and seen == [state]
    assert len(problems) == 1 and "state.pt is unreadable" in problems[0]
    (tmp_path / checkpoint.PREVIOUS).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(BadInput, match="no usable checkpoint"):
        checkpoint.load(tmp_path, "cpu", seen.append)


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(tmp_path, cli, monkeypatch):
    code, out, _ = cli(*_args(tmp_path / "a"))
    assert code == 0
    reference = Path(out.strip().splitlines()[-1])

    _crash_after(monkeypatch, 1800)  # checkpoints at 512, 1024 and 1536 images, then rows past the last
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli(*_args(tmp_path / "b"))
    monkeypatch.undo()
    run_dir = tmp_path / "b" / "gaussian" / reference.name
    assert max(r["kimg"] for r in read_jsonl(run_dir / "stats.jsonl")) > 1.536
    newest = run_dir / checkpoint.CURRENT
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write

    code, out, err = cli(*_args(tmp_path / "b"))
    assert code == 0, err
    assert "state.pt is unreadable" in err and "resumed from state-prev.pt at kimg 1.024" in err
    assert _values(run_dir) == _values(reference)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"


def test_no_usable_checkpoint_is_bad_input_and_keeps_the_progress(tmp_path, cli, monkeypatch):
    _crash_after(monkeypatch, 1100)
    with pytest.raises(RuntimeError):
        cli(*_args(tmp_path))
    monkeypatch.undo()
    run_dir = next((tmp_path / "gaussian").iterdir())
    for name in (checkpoint.CURRENT, checkpoint.PREVIOUS):
        (run_dir / name).write_bytes((run_dir / name).read_bytes()[:100])
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, _, err = cli(*_args(tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no usable checkpoint" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert json.loads(before["manifest.json"])["kimg_done"] > 1.0  # the progress figures survive
