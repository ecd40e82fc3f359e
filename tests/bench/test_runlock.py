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


def test_a_killed_holder_is_seen_as_dead(tmp_path):
    script = "import sys, time; from bench.runlock import RunLock; RunLock(sys.argv[1]).acquire(); " \
             "print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    assert owner(tmp_path) == ("live", owner(tmp_path)[1]) and owner(tmp_path)[1]["pid"] == proc.pid
    proc.send_signal(signal.SIGKILL)  # what the kernel's OOM killer does
    proc.wait()
    state, record = owner(tmp_path)
    assert state == "dead" and record["pid"] == proc.pid
    lock = RunLock(tmp_path)
    assert lock.acquire()["pid"] == proc.pid  # the next owner is told who died holding it
    lock.release()
