"""One place where option values are checked: every bad value is a one-line BadInput naming the option.

Suites, run configs and the CLI call these; methods check their own hyperparameters (they know
nothing of ``bench``) and their ValueError becomes BadInput in ``bench.train.runconfig``.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import BadInput


def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(name: str, value, *, low: float | None = None, strict: bool = True, integer: bool = False,
           optional: bool = False):
    """``value`` as a float (or int when ``integer``), above ``low`` (or at least it when not ``strict``).

    ``optional`` lets None through. BadInput naming ``name`` otherwise.
    """
    if value is None and optional:
        return None
    ok = is_number(value) and (not integer or float(value).is_integer())
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        kind = "an integer" if integer else "a number"
        if low == 0:
            kind = f"a {'positive' if strict else 'non-negative'} {'integer' if integer else 'number'}"
        elif low is not None:
            kind += f" {'>' if strict else '>='} {low:g}"
        raise BadInput(f"{name} must be {kind}{' or null' if optional else ''}, got {value!r}")
    return int(value) if integer else float(value)


def positive(name: str, value, integer: bool = False, optional: bool = False):
    """A finite number > 0 (an int when ``integer``)."""
    return number(name, value, low=0, integer=integer, optional=optional)


def non_negative(name: str, value, integer: bool = False, optional: bool = False):
    """A finite number >= 0 (an int when ``integer``)."""
    return number(name, value, low=0, strict=False, integer=integer, optional=optional)


def fraction(name: str, value, upper_open: bool = False, optional: bool = False):
    """A number in [0, 1] (or [0, 1) with ``upper_open``); BadInput naming ``name`` otherwise."""
    if value is None and optional:
        return None
    if not (is_number(value) and 0 <= value and (value < 1 if upper_open else value <= 1)):
        raise BadInput(f"{name} must be a number in [0, 1{')' if upper_open else ']'}, got {value!r}")
    return value


MAX_SEED = 2**31 - 1  # runs derive further seeds by adding offsets; torch and numpy take 32 bits
MAX_LR = 3.4e38  # float32's largest value: a larger rate is inf in the networks' arithmetic


def learning_rate(name: str, value) -> float:
    """A positive learning rate that float32 can hold."""
    value = positive(name, value)
    if value > MAX_LR:
        raise BadInput(f"{name} must be below {MAX_LR:g} (float32's largest value), got {value!r}")
    return value


def seed(name: str, value) -> int:
    """A seed in [0, 2**31 - 1]."""
    value = non_negative(name, value, integer=True)
    if value > MAX_SEED:
        raise BadInput(f"{name} must be at most {MAX_SEED} (2**31 - 1), got {value!r}")
    return value


def sample_count(name: str, value, optional: bool = False):
    """A number of samples to evaluate: an integer of at least 2 (a Frechet distance needs a covariance)."""
    if value is None and optional:
        return None
    if not (is_number(value) and float(value).is_integer() and value >= 2):
        raise BadInput(f"{name} must be an integer of at least 2 (an evaluation needs a covariance), got {value!r}")
    return int(value)


def boolean(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise BadInput(f"{name} must be true or false, got {value!r}")
    return value


def choice(name: str, value, options) -> Any:
    if value not in options:
        raise BadInput(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def like_default(name: str, value, default):
    """``value``, checked against the type of an option's ``default``: bool, int, float, list, or
    anything when the default is None or a string (paths, names: checked where they are used).

    The value is returned as given (``2`` stays ``2`` for a float option), so configs and the run
    ids hashed from them do not change.
    """
    if isinstance(default, bool):
        boolean(name, value)
    elif isinstance(default, int):
        number(name, value, integer=True)
    elif isinstance(default, float):
        number(name, value)
    elif isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise BadInput(f"{name} must be a list, got {value!r}")
    return value
