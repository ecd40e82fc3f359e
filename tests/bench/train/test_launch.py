import json
from pathlib import Path

import pytest

SWEEP = """
suite: gaussian
suite_options: {width: 32, depth: 1, dim: 4, n_eval: 128}
grid: {method: [sid, di], lr: [1.0e-3, 1.0e-4], batch: [32], seed: [0]}
fixed: {kimg: 0.2, eval_every: 0.1, checkpoint_every: 0.1}
method_hparams: {sid: {alpha: [1.2, 0.5]}}
quick: {grid: {method: [di], lr: [1.0e-3]}, fixed: {kimg: 0.1}}
"""


def write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def statuses(results):
    return {p.parent.name: json.loads(p.read_text())["status"] for p in Path(results).rglob("manifest.json")}


def test_expand_crosses_grid_and_method_hparams(tmp_path):
    from bench.train.launch import expand, load_sweep

    configs = expand(load_sweep(write(tmp_path, SWEEP)))
    methods = [c["method"] for c in configs]
    assert methods.count("teacher") == 1 and methods.count("sid") == 4 and methods.count("di") == 2
    assert {c["hparams"]["alpha"] for c in configs if c["method"] == "sid"} == {1.2, 0.5}
    assert len({c["run_id"] for c in configs}) == len(configs)
    quick = expand(load_sweep(write(tmp_path, SWEEP), quick=True))
    assert [c["method"] for c in quick] == ["teacher", "di"] and quick[1]["kimg"] == 0.1


def test_steps_as_a_grid_axis_adds_the_teacher_at_each_step_count(tmp_path):
    from bench.errors import BadInput
    from bench.train.launch import expand, load_sweep

    text = SWEEP.replace("seed: [0]}", "seed: [0], steps: [1, 2, 4]}")
    configs = expand(load_sweep(write(tmp_path, text)))
    runs = [c for c in configs if c["method"] != "teacher"]
    assert sorted(c["train"].get("steps", 1) for c in runs if c["method"] == "di") == [1, 1, 2, 2, 4, 4]
    teachers = [c["hparams"]["steps"] for c in configs if c["method"] == "teacher"]
    assert sorted(teachers) == [1, 2, 4, 18]  # the teacher's own 18 Heun steps, and the generators' counts
    one = expand(load_sweep(write(tmp_path, SWEEP)))
    ids = {c["run_id"] for c in configs}
    assert {c["run_id"] for c in one} <= ids  # steps 1 are the one-step runs of the same sweep without the axis
    with pytest.raises(BadInput, match="steps"):
        load_sweep(write(tmp_path, SWEEP.replace("seed: [0]}", "seed: [0], steps: [two]}")))


def test_gflop_budget_in_fixed(tmp_path):
    from bench.train.launch import expand, load_sweep

    text = SWEEP.replace("fixed: {kimg: 0.2,", "fixed: {gflop: 5.0,")
    configs = [c for c in expand(load_sweep(write(tmp_path, text))) if c["method"] != "teacher"]
    assert all(c["gflop"] == 5.0 and c["kimg"] is None for c in configs)
    quick = expand(load_sweep(write(tmp_path, text), quick=True))[1]  # the quick kimg replaces the gflop budget
    assert quick["kimg"] == 0.1 and "gflop" not in quick
    both = SWEEP.replace("fixed: {kimg: 0.2,", "fixed: {kimg: 0.2, gflop: 5.0,")
    with pytest.raises(Exception, match="alternative budgets"):
        load_sweep(write(tmp_path, both))


@pytest.mark.slow
def test_local_sweep_with_two_jobs_then_skips_finished_runs(tmp_path, cli):
    path = write(tmp_path, SWEEP)
    code, out, _ = cli("sweep", path, "--jobs", "2", "--results", str(tmp_path / "r"), "--quick")
    assert code == 0, out
    assert set(statuses(tmp_path / "r").values()) == {"done"} and len(statuses(tmp_path / "r")) == 2
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("metrics.jsonl")}
    code, out, _ = cli("sweep", path, "--results", str(tmp_path / "r"), "--quick")
    assert code == 0 and "2 done" in out
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "r").rglob("metrics.jsonl")} == mtimes


@pytest.mark.slow
def test_full_sweep_runs_every_config(tmp_path, cli):
    code, out, _ = cli("sweep", write(tmp_path, SWEEP), "--results", str(tmp_path / "r"))
    assert code == 0, out
    assert list(statuses(tmp_path / "r").values()).count("done") == 7


@pytest.mark.parametrize("text, word", [
    ("suite: gaussian\ngrid: {method: [sid]\n", "malformed YAML"),
    ("- a\n- b\n", "mapping"),
    ("suite: gaussian\ngrid: {method: [sid]}\nbogus: 1\n", "bogus"),
    ("suite: gaussian\ngrid: {lr: [1.0e-4]}\n", "method"),
    ("suite: gaussian\ngrid: {method: [sid], lrr: [1]}\n", "lrr"),
    ("suite: gaussian\ngrid: {method: [sid, nope]}\n", "nope"),
    ("suite: gaussian\ngrid: {method: [sid], lr: [-1.0]}\n", "grid.lr"),
])
def test_bad_sweeps_exit_2_and_run_nothing(tmp_path, cli, text, word):
    code, _, err = cli("sweep", write(tmp_path, text), "--results", str(tmp_path / "r"))
    assert code == 2 and word in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_missing_sweep_file(tmp_path, cli):
    code, _, err = cli("sweep", str(tmp_path / "nope.yaml"))
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
def test_submitit_local_executor(tmp_path, cli, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.delenv("BENCH_SUBMITIT_CLUSTER", raising=False)
    code, out, _ = cli("sweep", write(tmp_path, SWEEP), "--launcher", "slurm", "--local-test", "--quick",
                       "--results", str(tmp_path / "r"))
    assert code == 0, out
    assert out.count("submitted 1 jobs (local)") == 2  # --jobs 1: one process at a time
    assert set(statuses(tmp_path / "r").values()) == {"done"}


LONG_SWEEP = """
suite: gaussian
suite_options: {width: 32, depth: 1, dim: 4, n_eval: 128}
grid: {method: [sid], batch: [32], seed: [0, 1, 2, 3, 4, 5]}
fixed: {kimg: 400, eval_every: 100, checkpoint_every: 100}
teacher: false
"""


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_stops_the_sweep_starts_no_new_run_and_exits_130(tmp_path, jobs):
    """SIGINT to the sweep's process: running runs checkpoint and stop, queued ones never start."""
    import os
    import signal
    import subprocess
    import sys
    import time

    results = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "sweep", write(tmp_path, LONG_SWEEP), "--jobs", str(jobs),
                             "--results", str(results)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    deadline = time.monotonic() + 120
    while len(list(results.rglob("stats.jsonl"))) < jobs:  # every job slot is training
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    started = statuses(results)  # an interrupted run stays "running", with a checkpoint to resume from
    assert len(started) == jobs and set(started.values()) == {"running"}, (started, out, err)
    assert all((results / "gaussian" / name / "state.pt").is_file() for name in started)
    assert out.count("interrupted by signal 2") == jobs and "not run: stopped by signal 2" in out and "sweep did not finish every run" in err
    assert err.strip().splitlines()[-1].count("-s") == 6  # every run named, interrupted or not run


def test_busy_runs_make_the_sweep_exit_1_naming_them(tmp_path, cli):
    from bench.runlock import RunLock
    from bench.train import runconfig
    from bench.train.launch import expand, load_sweep

    path = write(tmp_path, SWEEP)
    configs = expand(load_sweep(path, quick=True))
    held = runconfig.run_dir(tmp_path / "r", configs[1])
    held.mkdir(parents=True)
    with RunLock(held) as lock:
        lock.acquire()
        code, out, err = cli("sweep", path, "--quick", "--results", str(tmp_path / "r"))
    assert code == 1 and "busy" in out
    assert err.strip().splitlines()[-1] == f"bench: sweep did not finish every run: busy: {held.name}"
