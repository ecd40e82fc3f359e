"""Small shared helpers for configuration: ``--set KEY=VALUE`` parsing and device choice."""
from __future__ import annotations

import yaml

from .errors import BadInput


def parse_value(text: str):
    """A ``--set`` value as YAML scalar: ``1e-4`` -> float, ``true`` -> bool, ``l2`` -> str."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise BadInput(f"malformed value {text!r}") from None
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" as a string; users mean a number
            return float(value)
        except ValueError:
            return value
    return value


def parse_sets(items: list[str]) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; BadInput on an item without ``=``."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"malformed --set {item!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(text.strip())
    return out


def pick_device(name: str = "auto"):
    """``auto``: CUDA when present, else CPU. BadInput when CUDA is asked for and absent."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda asked for, but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise BadInput(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device(name)
