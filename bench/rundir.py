"""The run directory (Contract 2): atomic JSON files, append-only flushed JSONL logs, and a run's
lifecycle in its manifest (running, done, diverged, failed; stop requests by signal).

Imports nothing heavy: the results, plots and report modules read run directories through it.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import signal
import shutil
import tempfile
import warnings
from pathlib import Path

from .errors import BadInput, BenchWarning

FINISHED = ("done", "diverged")  # a run in one of these states is skipped when asked again
TEACHER = "teacher"  # the pseudo-method of a run that evaluates the teacher's own multi-step sampler
EXTERNAL = "external:"  # method prefix of a generator scored from a file (bench eval --generator): external:<stem>


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


def write_folder_atomic(path: Path, fill) -> None:
    """``fill(tmp_folder)`` then rename it to ``path`` (absent or an empty folder): readers never see half a
    folder, and a failure leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        fill(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is not what shared results want
        if path.exists():
            path.rmdir()  # callers check it is empty beforehand
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_run_json(path: Path, what: str = "") -> dict:
    """A run directory's JSON object file; BadInput naming it when it is missing, unreadable or not an object."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path} is missing{what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path} is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                       f"{what}") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path} is not a JSON object{what}")
    return obj


def read_json_or_none(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing, not an object, or unparseable (with a warning)."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        warnings.warn(f"{path}: unparseable JSON, ignored", BenchWarning)
        return None
    return obj if isinstance(obj, dict) else None


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
                warnings.warn(f"{path}:{i + 1}: unparseable line skipped", BenchWarning)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class JsonlLog:
    """An append-only JSONL file; every row is flushed and fsynced as it is written.

    ``listeners`` are called with each appended row, as the file holds it, once it is written
    (the loggers of ``bench.train.mirrors``).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.touch(exist_ok=True)
        self.listeners = []

    def size(self) -> int:
        return self.path.stat().st_size

    def truncate(self, size: int) -> None:
        """Drop rows written after a checkpoint (on resume) so no row is duplicated. A log already
        shorter than ``size`` lost rows: it is kept as it is (truncating would pad it with zeros)."""
        if self.size() < size:
            warnings.warn(f"{self.path} is shorter than at the checkpoint (rows were lost); kept as it is", BenchWarning)
            return
        with open(self.path, "r+b") as f:
            f.truncate(size)

    def append(self, row: dict) -> None:
        line = json.dumps(row, default=_jsonable)
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.listeners:
            written = json.loads(line)
            for listener in self.listeners:
                listener(written)

    def replace(self, rows: list[dict], key: tuple[str, ...]) -> None:
        """Write ``rows`` in place of the rows with the same ``key`` values (re-scoring), atomically.

        Kept lines stay byte for byte, in order (a checkpoint's recorded size still marks the same
        rows); the new rows go at the end.
        """
        new = {tuple(r.get(k) for k in key) for r in rows}
        kept = []
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a torn line: dropped, as readers skip it
                continue
            if isinstance(row, dict) and tuple(row.get(k) for k in key) in new:
                continue
            kept.append(line if line.endswith("\n") else line + "\n")
        text = "".join(kept) + "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows)

        def write(tmp):
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

        write_atomic(self.path, write)


def _jsonable(value):
    if hasattr(value, "item") and hasattr(value, "numel"):  # a tensor
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)


def check_writable(path, what: str, file: bool = False) -> None:
    """BadInput unless ``path`` (a folder, or with ``file`` a file) can be created or written.

    Probes by creating a file in the nearest existing folder, so read-only mounts and immutable
    folders are caught whoever runs the command (root too); a path under a file is named as such.
    """
    target = Path(path)
    if file and target.is_dir():
        raise BadInput(f"{what} {path} is a folder; give a file name")
    existing = target.parent if file else target
    while not existing.exists() and existing.parent != existing:
        if existing.is_symlink():  # exists() is False for a dangling link and for a loop
            try:
                os.stat(existing)
            except OSError as exc:
                kind = "a symbolic link loop" if exc.errno == errno.ELOOP else \
                    f"a symbolic link to {os.readlink(existing)}, which does not exist"
                raise BadInput(f"{what} {path}: {existing} is {kind}") from None
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == target else f"is under {existing}, which is a file"
        raise BadInput(f"{what} {path} {where}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise BadInput(f"{what} {path}: cannot write in {existing} ({exc.strerror or exc})") from None


def check_output_arg(args) -> None:
    """``-o FILE`` of results, plot and report: writable before any work is done (CLI pre-check)."""
    if getattr(args, "output", None):
        check_writable(args.output, "-o", file=True)


# --- the lifecycle ------------------------------------------------------------------------------
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def finished_status(directory: Path) -> str | None:
    """``done`` or ``diverged`` when the run in ``directory`` has finished, else None (also when the
    manifest is missing or unreadable: resuming from the checkpoint rebuilds it)."""
    manifest = read_json_or_none(Path(directory) / "manifest.json") or {}
    status = manifest.get("status")
    return status if status in FINISHED else None


def start_run(directory: Path, config: dict, provenance: dict) -> None:
    """Write config.json and mark the manifest ``running`` (keeping its first start time)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / "config.json", config)
    path = directory / "manifest.json"
    manifest = read_json_or_none(path) or {}  # a damaged manifest is rebuilt
    manifest.update(run_id=config["run_id"], status="running", started=manifest.get("started", _now()),
                    ended=None, diverged=None, **provenance)
    manifest.setdefault("metrics", {})
    write_json_atomic(path, manifest)


def end_run(directory: Path, status: str, diverged: dict | None, kimg_done: float, wall_time_s: float,
            cost: dict | None = None) -> None:
    """Record how a session ended and the run's cumulative ``cost``; an interrupted run stays ``running``."""
    path = Path(directory) / "manifest.json"
    manifest = read_json_or_none(path) or {}
    interrupted = status == "interrupted"
    manifest.update(status="running" if interrupted else status, ended=None if interrupted else _now(),
                    diverged=diverged, kimg_done=round(kimg_done, 6), wall_time_s=wall_time_s)
    if cost is not None:
        manifest["cost"] = cost
    write_json_atomic(path, manifest)


def record_metric_impls(directory: Path) -> None:
    """Copy each metric's implementation string from metrics.jsonl into the manifest."""
    directory = Path(directory)
    manifest = read_json_or_none(directory / "manifest.json") or {}
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
