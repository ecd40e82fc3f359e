"""Numbers, counts and tables as people read them: the one formatting vocabulary of every view."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def lr_text(lr: float) -> str:
    """A learning rate as papers write it: 1e-4, 2.5e-4, 0.5."""
    if lr == 0 or 0.1 <= abs(lr) < 1e3:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def is_missing(x) -> bool:
    """None or a float NaN: a value a run did not record."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def samples_label(n) -> str:
    """1000 -> "1k", 50000 -> "50k", 256 -> "256"."""
    if is_missing(n) or n is pd.NA:
        return "?"
    n = int(n)
    if n >= 1000 and n % 100 == 0:
        return f"{n / 1000:g}k"
    return str(n)


def fmt(value, sem=None) -> str:
    """A number for people: about four significant digits, "± sem" when given; "–" for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    a = abs(value)
    if a == 0:
        return "0"
    text = f"{value:.1f}" if a >= 100 else f"{value:.2f}" if a >= 1 else f"{value:.3g}" if a >= 1e-3 else f"{value:.2e}"
    if sem is not None and sem is not pd.NA and not is_missing(sem):
        text += f" ± {float(sem):.2g}"
    return text


def fmt_kimg(kimg) -> str:
    """Training progress in kimg: 4 -> "4", 2.048 -> "2.05"."""
    return "–" if is_missing(kimg) else f"{kimg:.3g}"


def fmt_duration(seconds) -> str:
    """12.3 -> "12 s", 4000 -> "1.1 h"."""
    if is_missing(seconds):
        return "–"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of strings (no tabulate dependency)."""
    cells = [[str(c) for c in frame.columns]] + [[str(v).replace("|", "\\|") for v in row] for row in frame.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(frame.columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
