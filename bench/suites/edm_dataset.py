"""Real images in the format EDM's ``dataset_tool.py`` writes: a zip or a folder of image files.

The images are every file with an image extension, in sorted order of their paths inside the zip
or folder (``/``-separated). ``dataset.json`` at the top holds ``{"labels": [[path, class], ...]}``,
or ``{"labels": null}`` for an unlabelled dataset. Images are decoded when drawn, so a dataset of
any size costs only its file listing in memory.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadInput

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class EDMDataset:
    """Draws ``(images in [-1, 1], one-hot labels or None)`` from an EDM-format dataset at ``path``.

    ``shape`` is the ``(channels, height, width)`` every image must have; ``label_dim`` > 0 needs
    labels in ``dataset.json`` below ``label_dim``. Problems are ``BadInput`` naming the path.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], label_dim: int = 0):
        self.path, self.shape, self.label_dim = Path(path).expanduser(), tuple(shape), int(label_dim)
        if self.path.is_dir():
            names = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        elif self.path.is_file() and zipfile.is_zipfile(self.path):
            names = self._zip().namelist()
        else:
            raise BadInput(f"dataset {self.path}: not a folder or zip made by EDM's dataset_tool.py")
        self.files = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise BadInput(f"dataset {self.path}: no images")
        self.labels = self._labels(set(names))
        got = self._load(0).shape
        if got != self.shape:
            raise BadInput(f"dataset {self.path}: images are {tuple(got)} (C, H, W), this suite needs {self.shape}")

    def __len__(self) -> int:
        return len(self.files)

    def _zip(self) -> zipfile.ZipFile:
        # One handle per process: a handle inherited over fork would share its file offset.
        if getattr(self, "_handle_pid", None) != os.getpid():
            self._handle, self._handle_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._handle

    def _read(self, name: str) -> bytes:
        if self.path.is_dir():
            return (self.path / name).read_bytes()
        return self._zip().read(name)

    def _labels(self, names: set) -> np.ndarray | None:
        if not self.label_dim:
            return None
        table = json.loads(self._read("dataset.json")).get("labels") if "dataset.json" in names else None
        if table is None:
            raise BadInput(f"dataset {self.path}: no labels in dataset.json, and this suite is class-conditional")
        by_name = dict(table)
        missing = [f for f in self.files if f not in by_name]
        if missing:
            raise BadInput(f"dataset {self.path}: dataset.json has no label for {missing[0]}")
        labels = np.array([by_name[f] for f in self.files], dtype=np.int64)
        if labels.min() < 0 or labels.max() >= self.label_dim:
            raise BadInput(f"dataset {self.path}: labels must be in [0, {self.label_dim}), got {labels.min()}..{labels.max()}")
        return labels

    def _load(self, index: int) -> torch.Tensor:
        """Image ``index`` as uint8 ``[C, H, W]``."""
        from PIL import Image

        with Image.open(io.BytesIO(self._read(self.files[index]))) as im:
            array = np.asarray(im)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))

    def sample(self, n: int, generator: torch.Generator | None = None):
        """``n`` images drawn uniformly with replacement, in [-1, 1], and their one-hot labels (or None)."""
        index = torch.randint(len(self.files), (n,), generator=generator)
        images = torch.stack([self._load(int(i)) for i in index]).to(torch.float32) / 127.5 - 1
        if self.labels is None:
            return images, None
        labels = torch.from_numpy(self.labels[index.numpy()])
        return images, F.one_hot(labels, self.label_dim).to(torch.float32)
