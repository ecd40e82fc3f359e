"""One process at a time in a run directory: an exclusive ``fcntl.flock`` on ``<run>/lock``.

While held, the lock file names its holder (pid, host, start time, command) as JSON; a clean release
empties it. The kernel drops a flock when its process dies, however it dies (SIGKILL, the OOM
killer, a lost node), so a lock file that still names a holder but can be taken was left by a
process that died: the next owner says so. Imports nothing heavy.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import BadInput

LOCK_NAME = "lock"


class RunBusy(BadInput):
    """The run directory is held by another live process."""


def describe(holder: dict | None) -> str:
    """"pid 123 on host-a since 2026-01-01T10:00:00+00:00" (or "another process" without a record)."""
    if not holder:
        return "another process"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('started', '?')}"


def _try_lock(fd: int, attempts: int = 5) -> bool:
    """Take the lock without blocking; a few short retries ride over ``holder()``'s momentary probes."""
    for attempt in range(attempts):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.02 * (attempt + 1))
    return False


def _read(fd: int) -> dict | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode(errors="replace").strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?"}
    return record if isinstance(record, dict) else None


class RunLock:
    """The exclusive lock of one run directory (created if missing).

    ``acquire`` returns the record of a holder that died holding it (None after a clean release);
    raises RunBusy naming the live holder, or with ``wait`` blocks until it is free.
    """

    def __init__(self, directory: str | Path):
        self.path = Path(directory) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> dict | None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except IsADirectoryError:
            raise BadInput(f"{self.path} is a folder, not the run's lock file; remove it (rmdir) and run again") from None
        try:
            if not _try_lock(fd):
                holder = _read(fd)
                if not wait:
                    raise RunBusy(f"{self.path.parent} is in use by {describe(holder)}; "
                                  f"run again when it ends, or add --wait") from None
                print(f"bench: waiting for {describe(holder)} to release {self.path.parent}", file=sys.stderr,
                      flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
            dead = _read(fd)
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      "command": " ".join(sys.argv)[:500]}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, (json.dumps(record) + "\n").encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return dead

    def release(self) -> None:
        """Empty the record (a clean end) and drop the lock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def owner(directory: str | Path) -> tuple[str, dict | None]:
    """("live", holder) while a process holds the run; ("dead", record) when its holder died holding it;
    ("none", None) otherwise. A probe: it takes the lock for an instant only when nobody holds it."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError):  # a folder there is refused when the run is next started
        return "none", None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return "live", _read(fd)
        record = _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return ("dead", record) if record else ("none", None)
    finally:
        os.close(fd)
