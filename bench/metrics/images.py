"""Images as the metrics see them: uint8 NCHW tensors, one quantisation, folders, .npz, grids."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..rundir import write_atomic

IMAGE_SUFFIXES = (".png",)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] (NCHW) to uint8, exactly as EDM quantises before FID.

    ``(x * 127.5 + 128).clip(0, 255)`` then truncation: the rounding every reported FID in the
    EDM/SiD/SIM line of work uses. Every caller in the project goes through this function.
    """
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise BadInput(f"to_uint8 expects a float tensor in [-1, 1], got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4:
        raise BadInput(f"to_uint8 expects NCHW images, got shape {tuple(x.shape)}")
    return (x * 127.5 + 128).clip(0, 255).to(torch.uint8)



def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images back to floats in [-1, 1], at the centre of each quantisation bin."""
    return (images.float() - 127.5) / 127.5

def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """Validate a uint8 NCHW batch with 1 or 3 channels; returns it, or raises BadInput."""
    if not torch.is_tensor(images):
        raise BadInput(f"{name}: expected a torch tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        if images.is_floating_point():
            hint = " (quantise float images in [-1, 1] with bench.metrics.images.to_uint8)"
        elif images.numel():
            hint = f" (values in [{int(images.min())}, {int(images.max())}]; uint8 holds 0..255)"
        else:
            hint = ""
        raise BadInput(f"{name}: expected dtype uint8, got {images.dtype}{hint}")
    if images.ndim != 4:
        raise BadInput(f"{name}: expected shape N x C x H x W, got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise BadInput(f"{name}: expected 1 or 3 channels, got {images.shape[1]} (shape {tuple(images.shape)}; "
                       "NHWC arrays must be transposed to NCHW)")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise BadInput(f"{name}: empty image batch {tuple(images.shape)}")
    return images


def _hwc_or_chw_to_nchw(array: np.ndarray, source: str) -> torch.Tensor:
    if array.dtype != np.uint8:
        raise BadInput(f"{source}: expected a uint8 array, got {array.dtype}")
    if array.ndim == 3:  # N x H x W grayscale
        array = array[:, None]
    if array.ndim != 4:
        raise BadInput(f"{source}: expected an N x H x W x C or N x C x H x W array, got shape {array.shape}")
    if array.shape[1] not in (1, 3) and array.shape[3] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    return check_images(torch.from_numpy(np.ascontiguousarray(array)), source)


def load_images(path: str | os.PathLike) -> torch.Tensor:
    """A uint8 NCHW tensor from a folder of PNGs (sorted by name) or an .npz holding one image array.

    In an .npz the array named ``images``, ``samples``, ``arr_0`` or the only array is used; NHWC
    and NCHW layouts are both accepted.
    """
    from PIL import Image

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise BadInput(f"{path}: folder holds no PNG images")
        arrays = []
        for f in files:
            with Image.open(f) as im:
                a = np.asarray(im.convert("L") if im.mode in ("L", "I", "I;16", "1") else im.convert("RGB"))
            arrays.append(a if a.ndim == 3 else a[:, :, None])
        shapes = {a.shape for a in arrays}
        if len(shapes) != 1:
            raise BadInput(f"{path}: images differ in size or channels: {sorted(shapes)[:3]}")
        return _hwc_or_chw_to_nchw(np.stack(arrays), str(path))
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.keys())
                key = next((k for k in ("images", "samples", "arr_0") if k in keys), keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise BadInput(f"{path}: several arrays {keys}; name the image array 'images'")
                array = data[key]
        except (ValueError, OSError) as exc:
            raise BadInput(f"{path}: not a readable .npz file ({exc})") from None
        return _hwc_or_chw_to_nchw(array, str(path))
    raise BadInput(f"{path}: expected a folder of PNG images or an .npz file")


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1) -> torch.Tensor:
    """Tile a uint8 NCHW batch into one C x H x W image (near-square by default)."""
    check_images(images)
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.zeros(c, ncol * (h + padding) + padding, nrow * (w + padding) + padding, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, y:y + h, x:x + w] = images[i]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Write a uint8 NCHW batch as one PNG grid, atomically (no half-written file on failure)."""
    from PIL import Image

    grid = make_grid(images.cpu(), nrow).permute(1, 2, 0).numpy()
    path = Path(path)
    image = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
    return path

