"""A sweep file read and checked as a whole, before any run starts: one schema, one-line errors.

Checked here, without torch: duplicate keys (YAML would keep the last silently), unknown keys at
every level with a did-you-mean (a misspelt key under ``quick:`` would otherwise run the full
budget), and the type and range of every grid and fixed value (a string is never read as a
boolean). The names that need the registries (methods, their hyperparameters, suite options) are
checked when the sweep is expanded (``bench.train.launch.expand``), also before the first run.
"""
from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from .. import validate
from ..errors import BadInput

GRID_KEYS = ("method", "lr", "lr_fake", "batch", "seed", "steps", "guidance")
FIXED_KEYS = ("kimg", "gflop", "eval_every", "checkpoint_every", "batch_gpu", "precision", "lr_fake", "steps")
TOP_KEYS = ("suite", "suite_options", "grid", "fixed", "method_hparams", "train", "optim", "teacher", "quick",
            "slurm", "results", "logger")
QUICK_KEYS = ("grid", "fixed")
MAPPINGS = ("suite_options", "grid", "fixed", "method_hparams", "train", "optim", "quick", "slurm")
PRECISIONS = ("fp32", "bf16", "tf32")


def _value_check(key: str):
    """The check of one grid or fixed value of ``key``."""
    return {
        "method": lambda n, v: v if isinstance(v, str) else _bad(n, "a method name", v),
        "lr": validate.learning_rate, "lr_fake": validate.learning_rate,
        "batch": lambda n, v: validate.positive(n, v, integer=True),
        "batch_gpu": lambda n, v: validate.positive(n, v, integer=True),
        "seed": validate.seed,
        "steps": lambda n, v: validate.positive(n, v, integer=True),
        "guidance": validate.positive,  # a conditional suite's guidance scale (its suite.guidance)
        "kimg": validate.positive, "gflop": validate.positive,
        "eval_every": validate.positive, "checkpoint_every": validate.positive,
        "precision": lambda n, v: validate.choice(n, v, PRECISIONS),
    }[key]


def _bad(name, kind, value):
    raise BadInput(f"{name} must be {kind}, got {value!r}")


def unknown_key(path, where: str, key, known) -> BadInput:
    """``unknown key`` naming where it sits, the close matches and what is known there."""
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return BadInput(f"{path}: unknown key {where}{key!r}{hint} (known: {', '.join(known)})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise BadInput(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}; first on line {seen[key]}): "
                           "YAML would keep only the last")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path):
    """The YAML document of ``path``; BadInput for a missing, binary, malformed or duplicate-keyed file."""
    if path.is_dir():
        raise BadInput(f"{path} is a folder; give the sweep's YAML file (e.g. configs/digits-robustness.yaml)")
    if not path.is_file():
        raise BadInput(f"sweep file {path} does not exist")
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path} is not a UTF-8 text file (byte {exc.start}); a sweep file is YAML") from None
    except BadInput as exc:
        raise BadInput(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"malformed YAML in {path}: {str(exc).splitlines()[0]}") from None


def _check_section(path, section: str, values: dict, known: tuple) -> None:
    for key, value in values.items():
        if key not in known:
            raise unknown_key(path, f"{section}.", key, known)
        for item in value if isinstance(value, list) else [value]:
            _value_check(key)(f"{path}: {section}.{key}", item)


def _check(path, spec) -> None:
    if not isinstance(spec, dict) or "suite" not in spec:
        raise BadInput(f"{path}: a sweep file is a mapping with at least 'suite' and 'grid'")
    for key in spec:
        if key not in TOP_KEYS:
            raise unknown_key(path, "", key, TOP_KEYS)
    if not isinstance(spec["suite"], str):
        raise BadInput(f"{path}: suite must be a suite name, got {spec['suite']!r}")
    for key in MAPPINGS:
        if not isinstance(spec.get(key) or {}, dict):
            raise BadInput(f"{path}: {key!r} must be a mapping")
    if "teacher" in spec:
        validate.boolean(f"{path}: teacher", spec["teacher"])
    if "results" in spec and not isinstance(spec["results"], str):
        raise BadInput(f"{path}: results must be a folder path, got {spec['results']!r}")
    if "logger" in spec:  # a name or a list of names; every run of the sweep mirrors to them
        from .mirrors import check as check_loggers

        loggers = spec["logger"] if isinstance(spec["logger"], list) else [spec["logger"]]
        if not all(isinstance(name, str) for name in loggers):
            raise BadInput(f"{path}: logger must be a logger name or a list of them, got {spec['logger']!r}")
        try:
            check_loggers(loggers)
        except BadInput as exc:
            raise BadInput(f"{path}: logger: {exc}") from None
    _check_section(path, "grid", spec.get("grid") or {}, GRID_KEYS)
    _check_section(path, "fixed", spec.get("fixed") or {}, FIXED_KEYS)
    quick = spec.get("quick") or {}
    for key in quick:
        if key not in QUICK_KEYS:
            raise unknown_key(path, "quick.", key, QUICK_KEYS)
        if not isinstance(quick[key] or {}, dict):
            raise BadInput(f"{path}: 'quick.{key}' must be a mapping")
    _check_section(path, "quick.grid", quick.get("grid") or {}, GRID_KEYS)
    _check_section(path, "quick.fixed", quick.get("fixed") or {}, FIXED_KEYS)
    for method, hparams in (spec.get("method_hparams") or {}).items():
        if not isinstance(hparams or {}, dict):
            raise BadInput(f"{path}: method_hparams.{method} must be a mapping of hyperparameters")
        empty = [key for key, values in (hparams or {}).items() if values == []]
        if empty:
            raise BadInput(f"{path}: method_hparams {method}.{empty[0]} is an empty list, so {method} has no runs")


def load_sweep(path: str | Path, quick: bool = False) -> dict:
    """Read and check a sweep file (with ``quick``, its quick variant applied); BadInput naming the problem."""
    path = Path(path)
    spec = read_yaml(path)
    _check(path, spec)
    grid = dict(spec.get("grid") or {})
    fixed = dict(spec.get("fixed") or {})
    if quick:
        q = spec.get("quick") or {}
        grid.update(q.get("grid") or {})
        quick_fixed = q.get("fixed") or {}
        for budget, other in (("kimg", "gflop"), ("gflop", "kimg")):  # the quick budget replaces the full one
            if budget in quick_fixed:
                fixed.pop(other, None)
        fixed.update(quick_fixed)
    if "method" not in grid:
        raise BadInput(f"{path}: grid must list at least one method")
    empty = [key for key, values in grid.items() if values == []]
    if empty:
        raise BadInput(f"{path}: grid {empty[0]!r} is an empty list, so the sweep has no runs")
    if "kimg" in fixed and "gflop" in fixed:
        raise BadInput(f"{path}: fixed gives both kimg and gflop; they are alternative budgets")
    return {**spec, "grid": grid, "fixed": fixed, "path": str(path)}
