"""How every figure draws a method: one fixed, colour-blind-safe style per method (colour, marker and
dash), spare styles for new names, and the shared legend."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..rundir import TEACHER


STYLE = {"svg.fonttype": "none", "svg.hashsalt": "distill-bench",  # selectable text, reproducible ids
         "font.size": 9, "axes.titlesize": 9.5, "axes.spines.top": False, "axes.spines.right": False,
         "axes.grid": True, "grid.color": "0.9", "grid.linewidth": 0.8, "axes.edgecolor": "0.3",
         "axes.axisbelow": True, "legend.frameon": False}


@dataclass(frozen=True)
class Style:
    """How one method is drawn: colour, marker and line style (never colour alone)."""

    color: str
    marker: str
    linestyle: object

    def line(self) -> dict:
        return dict(color=self.color, marker=self.marker, linestyle=self.linestyle)


# One fixed mapping, colour-blind safe (Okabe & Ito), for every figure. DMD and DMD2 often overlap:
# they differ in marker and dash as well as colour.
METHOD_STYLES = {
    "sim": Style("#0072B2", "o", "-"),
    "sid": Style("#D55E00", "s", (0, (5, 2))),
    "di": Style("#009E73", "^", (0, (6, 2, 1.5, 2))),
    "dmd": Style("#CC79A7", "D", (0, (1.5, 1.5))),
    "dmd2": Style("#E69F00", "v", "-"),
    "fdistill": Style("#56B4E9", "P", (0, (5, 2))),
    "sida": Style("#882255", "X", (0, (6, 2, 1.5, 2))),
    "uni_instruct": Style("#332288", "p", (0, (1.5, 1.5))),
    "scm": Style("#44AA99", "h", "-"),
    "rcm": Style("#88CCEE", "*", (0, (5, 2))),
    "tdm": Style("#999933", "<", (0, (1.5, 1.5))),
    "ddmd": Style("#117733", ">", "-"),
    "snoopi": Style("#AA4499", "d", (0, (5, 2))),
    "msd": Style("#661100", "8", (0, (6, 2, 1.5, 2))),
}


TEACHER_STYLE = Style("0.35", "", "--")


# Methods not in the table (new ones, variants) take one of these, chosen by a hash of the name.
_SPARE_COLORS = ("#117733", "#AA4499", "#44AA99", "#999933", "#CC6677", "#88CCEE", "#661100")


_SPARE_MARKERS = ("h", "*", "<", ">", "d", "8", "H", "o")


_SPARE_DASHES = ("-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)))


_SPARE = [Style(_SPARE_COLORS[i % 7], _SPARE_MARKERS[i % 8], _SPARE_DASHES[i % 4]) for i in range(7 * 8)]


def method_styles(methods) -> dict[str, Style]:
    """Each method's style: the fixed one where listed, else a spare one picked by a hash of its name
    (the next free one when two names meet), so every method of a figure looks different."""
    names = sorted({str(m) for m in methods} - {TEACHER})
    styles = {m: METHOD_STYLES[m] for m in names if m in METHOD_STYLES}
    taken = set(styles.values())
    for m in (m for m in names if m not in METHOD_STYLES):
        i = int(hashlib.sha1(m.encode()).hexdigest(), 16) % len(_SPARE)
        for step in range(len(_SPARE)):
            if _SPARE[(i + step) % len(_SPARE)] not in taken:
                i = (i + step) % len(_SPARE)
                break
        styles[m] = _SPARE[i]
        taken.add(_SPARE[i])
    return styles


def plain_text(value) -> str:
    """A run-directory string as plain text: a dollar sign must not start mathtext."""
    return str(value).replace("$", r"\$")


def _legend_handles(styles: dict) -> list:
    handles = [Line2D([], [], markersize=5, linewidth=1.5, label=plain_text(m), **s.line()) for m, s in styles.items()]
    return handles + [
        Line2D([], [], color=TEACHER_STYLE.color, linestyle=TEACHER_STYLE.linestyle, label="teacher (multi-step)"),
        Line2D([], [], color="0.2", marker="x", linestyle="none", markersize=7, markeredgewidth=2, label="diverged"),
        Line2D([], [], color="0.2", marker="o", markerfacecolor="none", linestyle="none", label="still running"),
        Line2D([], [], color="0.2", marker="^", linestyle="none", label="off the scale")]


def legend(fig: Figure, styles: dict, width_in: float):
    """The shared legend above a figure's panels, in as many columns as its width holds."""
    handles = _legend_handles(styles)
    ncols = max(1, min(len(handles), int(width_in // 1.3)))  # an entry is at most ~1.3 in wide
    return fig.legend(handles=handles, loc="outside upper center", ncols=ncols, handlelength=2.6,
                      columnspacing=1.2)


def legend_figure(methods, width_in: float = 7.0) -> Figure:
    """The shared legend of the robustness panels (every method's style, teacher and markers) alone."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width_in, 0.3), layout="constrained")
        legend(fig, method_styles(methods), width_in)
    return fig
