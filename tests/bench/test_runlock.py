import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.runlock import RunBusy, RunLock, owner

REPO = Path(__file__).resolve().parents[2]


def test_second_holder_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path) as first:
        assert first.acquire() is None
        assert owner(tmp_path)[0] == "live"
        with pytest.raises(RunBusy, match=f"pid {os.getpid()} on "):
            RunLock(tmp_path).acquire()
    assert owner(tmp_path) == ("none", None)  # a clean release leaves no holder behind
    assert RunLock(tmp_path).acquire() is None


def test_wait_blocks_until_the_holder_releases(tmp_path, capsys):
    first = RunLock(tmp_path)
    first.acquire()
    timer = threading.Timer(1.0, first.release)
    timer.start()
    second = RunLock(tmp_path)
    t0 = time.time()
    assert second.acquire(wait=True) is None
    assert time.time() - t0 > 0.9
    assert "waiting for pid" in capsys.readouterr().err
    second.release()
    timer.join()


def test_a_killed_holder_is_seen_as_dead(tmp_path, capsys):
    import rundirs

    from bench.cli import main

    run_dir = rundirs.write_run(tmp_path / "results", status="running")
    script = "import sys, time; from bench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); " \
             "print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    state, record = owner(run_dir)
    assert state == "live" and record["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)  # what the kernel's OOM killer does
    proc.wait()
    state, record = owner(run_dir)
    assert state == "dead" and record["pid"] == proc.pid
    assert main(["results", str(tmp_path / "results")]) == 0
    assert f"1 run(s) marked running have no live process (killed, perhaps for memory): {run_dir.name}" \
        in capsys.readouterr().out
    lock = RunLock(run_dir)
    assert lock.acquire()["pid"] == proc.pid  # the next owner is told who died holding it
    lock.release()


def _bench(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


@pytest.mark.slow
def test_two_concurrent_runs_of_one_configuration_never_duplicate_a_row(tmp_path):
    from bench_helpers import read_jsonl, tiny_run_args

    args = tiny_run_args(tmp_path, method="sid", kimg="2",
                         extra=["--set", "suite.width=256", "--set", "suite.depth=2", "--set", "train.tick_kimg=0.064"])
    first = _bench(*args)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("gaussian/*/stats.jsonl")):
        time.sleep(0.02)
    run_dir = next(tmp_path.glob("gaussian/*"))
    assert owner(run_dir)[0] == "live"
    second = _bench(*args)  # the same configuration while the first trains
    waiting = _bench(*args, "--wait")
    _, err = second.communicate(timeout=300)
    out_first, err_first = first.communicate(timeout=300)
    out_waiting, err_waiting = waiting.communicate(timeout=300)
    assert first.returncode == 0, err_first
    if second.returncode == 2:  # refused, naming the holder
        assert f"is in use by pid {first.pid} on" in err and len(err.strip().splitlines()) == 1
    else:  # it started after the first had finished, and found nothing to do
        assert second.returncode == 0 and "Traceback" not in err
    assert waiting.returncode == 0, err_waiting  # waited, then found the run finished
    assert out_waiting.strip().splitlines()[-1] == out_first.strip().splitlines()[-1]
    metrics = [(r["kimg"], r["metric"], r["n_samples"]) for r in read_jsonl(run_dir / "metrics.jsonl")]
    stats = [r["kimg"] for r in read_jsonl(run_dir / "stats.jsonl")]
    assert len(metrics) == len(set(metrics)) and len(stats) == len(set(stats))
    assert max(stats) == 2.048  # one run's rows, to the end of the budget (32 steps of 64)
