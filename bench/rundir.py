"""The run directory (Contract 2): atomic JSON files and append-only, flushed JSONL logs."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that readers see either the old or the new file, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_torch_atomic(path: Path, obj) -> None:
    """``torch.save`` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file, skipping a torn (unparseable) last line."""
    rows = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return rows
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise
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
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    return str(value)
