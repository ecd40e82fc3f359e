"""The run directory (Contract 2): atomic JSON files, append-only flushed JSONL logs, and a run's
lifecycle in its manifest (running, done, diverged, failed; stop requests by signal).

Imports nothing heavy: the results, plots and report modules read run directories through it.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import tempfile
import warnings
from pathlib import Path

FINISHED = ("done", "diverged")  # a run in one of these states is skipped when asked again


def write_atomic(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what shared results want
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON atomically and durably."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())

    write_atomic(path, write)


def save_torch_atomic(path: Path, obj) -> None:
    """``torch.save`` through a temporary file and a rename."""
    import torch

    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line is skipped silently, any other bad line with a warning."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                warnings.warn(f"{path}:{i + 1}: unparseable line skipped")
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class JsonlLog:
    """An append-only JSONL file; every row is flushed and fsynced as it is written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.touch(exist_ok=True)

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, size: int) -> None:
        """Drop rows written after a checkpoint (on resume) so no row is duplicated."""
        with open(self.path, "r+b") as f:
            f.truncate(size)

    def append(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _jsonable(value):
    if hasattr(value, "item") and hasattr(value, "numel"):  # a tensor
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)


# --- the lifecycle ------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def finished_status(directory: Path) -> str | None:
    """``done`` or ``diverged`` when the run in ``directory`` has finished, else None."""
    path = Path(directory) / "manifest.json"
    if not path.exists():
        return None
    status = read_json(path)["status"]
    return status if status in FINISHED else None


def start_run(directory: Path, config: dict, provenance: dict) -> None:
    """Write config.json and mark the manifest ``running`` (keeping its first start time)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "config.json", config)
    path = directory / "manifest.json"
    manifest = read_json(path) if path.exists() else {}
    manifest.update(run_id=config["run_id"], status="running", started=manifest.get("started", _now()),
                    ended=None, diverged=None, **provenance)
    manifest.setdefault("metrics", {})
    write_json_atomic(path, manifest)


def end_run(directory: Path, status: str, diverged: dict | None, kimg_done: float, wall_time_s: float) -> None:
    """Record how a session ended; an interrupted run stays ``running`` (it resumes)."""
    path = Path(directory) / "manifest.json"
    manifest = read_json(path)
    interrupted = status == "interrupted"
    manifest.update(status="running" if interrupted else status, ended=None if interrupted else _now(),
                    diverged=diverged, kimg_done=round(kimg_done, 6), wall_time_s=wall_time_s)
    write_json_atomic(path, manifest)


def record_metric_impls(directory: Path) -> None:
    """Copy each metric's implementation string from metrics.jsonl into the manifest."""
    directory = Path(directory)
    manifest = read_json(directory / "manifest.json")
    impls = {row["metric"]: row.get("impl", "") for row in read_jsonl(directory / "metrics.jsonl")}
    if impls != manifest.get("metrics"):
        manifest["metrics"] = impls
        write_json_atomic(directory / "manifest.json", manifest)


@contextlib.contextmanager
def stop_requests():
    """While inside, SIGTERM and SIGINT ask the run to stop at its next step instead of killing it.

    Yields a function returning the signal received, or None.
    """
    received = {"signal": None}
    handlers = {}

    def request_stop(signum, frame):
        received["signal"] = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError):  # not in the main thread
            handlers[sig] = signal.signal(sig, request_stop)
    try:
        yield lambda: received["signal"]
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
