"""bench.analysis.plots: the robustness figure and ``bench plot robustness``."""
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

import rundirs
from bench.analysis import plots
from bench.analysis.styles import METHOD_STYLES, TEACHER_STYLE, legend_figure, method_styles
from bench import results
from bench.cli import main
from bench.errors import BadInput
from bench.rundir import TEACHER


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    return results.load(rundirs.standard_results(tmp_path_factory.mktemp("plots") / "results"))


def visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def test_layout_one_panel_per_learning_rate_plus_summary(table):
    fig = plots.robustness_figure(table, "fid")
    axes = visible_axes(fig)
    # two rows (FID, then IS), three learning rates + the summary panel each
    assert len(axes) == 8
    titles = [ax.get_title() for ax in axes]
    assert titles[:4] == ["digits · lr = 1e-5", "digits · lr = 1e-4", "digits · lr = 1e-3",
                          "final value vs learning rate"]
    assert axes[0].get_ylabel() == "FID-1k" and axes[4].get_ylabel() == "IS-1k"
    assert axes[0].get_yscale() == "log" and axes[4].get_yscale() == "linear"  # FID spans 3..280
    assert axes[3].get_xscale() == "log"
    assert axes[0].get_ylim() == axes[2].get_ylim()  # one y range per row
    # one line per method in a panel (sim, sid, dmd at lr 1e-4) and the teacher's dashed line
    lines = axes[1].get_lines()
    assert sum(line.get_color() == TEACHER_STYLE.color for line in lines) == 1
    assert sum(len(line.get_xdata()) == len(rundirs.EVAL_KIMG) for line in lines) == 3


def test_divergence_and_running_runs_are_marked(table):
    fig = plots.robustness_figure(table, "fid")
    panel = visible_axes(fig)[2]  # lr = 1e-3: dmd diverged at kimg 2.5, sim still running at kimg 2
    points = [c for c in panel.collections if isinstance(c, PathCollection)]
    offsets = np.concatenate([c.get_offsets() for c in points])
    assert any(np.allclose(o, (2.5, 80.0 + 200.0)) for o in offsets)
    assert any(np.allclose(o, (2.0, rundirs.fid_curve("sim", 1e-3, 0, 2.0))) for o in offsets)
    for other in visible_axes(fig)[:2]:
        assert not [c for c in other.collections if isinstance(c, PathCollection)]


def test_summary_panel_shows_final_means(table):
    summary = visible_axes(plots.robustness_figure(table, "fid"))[3]
    ys = {round(float(y), 6) for line in summary.get_lines() for y in line.get_ydata()}
    sid = np.mean([rundirs.fid_curve("sid", 1e-5, s, 4.0) for s in rundirs.SEEDS])
    assert round(float(sid), 6) in ys


def test_dollar_signs_in_names_are_text(tmp_path):
    rundirs.write_run(tmp_path, suite="a$\\frac$", method="sim$\\frac{$")  # invalid mathtext
    plots.figure_bytes(plots.robustness_figure(results.load(tmp_path)), "png")


@pytest.mark.slow
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_cli_writes_png_and_svg(tmp_path, suffix, magic, capsys):
    src = rundirs.standard_results(tmp_path / "results")
    out = tmp_path / "figs" / f"robustness{suffix}"
    assert main(["plot", "robustness", str(src), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 10_000
    if suffix == ".svg":
        assert b"<svg" in data and b"lr = 1e-4" in data
    else:  # cropped to what is drawn, with a margin: no tick label or legend entry touches an edge
        from PIL import Image

        pixels = np.asarray(Image.open(out).convert("L"))
        border = np.concatenate([pixels[:4].ravel(), pixels[-4:].ravel(), pixels[:, :4].ravel(), pixels[:, -4:].ravel()])
        assert border.min() == 255


def test_cli_bad_input(tmp_path, capsys):
    src = rundirs.standard_results(tmp_path / "results")
    assert main(["plot", "robustness", str(src), "-o", str(tmp_path / "fig.jpg")]) == 2
    assert main(["plot", "robustness", str(src), "-o", str(tmp_path / "fig.png"), "--metric", "nope"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["plot", "robustness", str(tmp_path / "empty"), "-o", str(tmp_path / "fig.png")]) == 2
    assert not list(tmp_path.glob("fig.*"))
    assert capsys.readouterr().err.count("bench: error:") == 3


@pytest.mark.slow
def test_a_blow_up_does_not_flatten_the_other_curves(tmp_path):
    rundirs.write_run(tmp_path, method="sim", lr=1e-4)
    rundirs.write_run(tmp_path, method="sim", lr=1e3, values=lambda k: {"fid": 80.0 * 10 ** (14 * min(k, 1))})
    axes = visible_axes(plots.robustness_figure(results.load(tmp_path), "fid"))
    for ax in axes[:3]:  # the FID row (IS, higher is better, is not capped)
        assert ax.get_ylim()[1] == pytest.approx(800.0)  # ten times the worst starting FID
    blown = [c for c in axes[1].collections if isinstance(c, PathCollection)]
    assert len(blown) == 1 and np.allclose(blown[0].get_offsets(), [(1.0, 800.0)])  # the ^ on the top edge


@pytest.fixture(scope="module")
def costed(tmp_path_factory):
    return results.load(rundirs.costed_results(tmp_path_factory.mktemp("costed") / "results"))


def test_robustness_against_gflop(costed, table):
    axes = visible_axes(plots.robustness_figure(costed, "fid", x="gflop"))
    assert axes[0].get_xlabel() == "training GFLOP"
    lines = [line for line in axes[1].get_lines() if len(line.get_xdata()) == len(rundirs.EVAL_KIMG)]
    ends = sorted(float(max(line.get_xdata())) for line in lines)
    # every method ends at 4 kimg: 40, 65 (dmd: 5 one-off + 4 x 15) and 100 GFLOP
    assert ends == pytest.approx([40.0, 65.0, 100.0])
    diverged = visible_axes(plots.robustness_figure(costed, "fid", x="gflop"))[2]
    offsets = np.concatenate([c.get_offsets() for c in diverged.collections if isinstance(c, PathCollection)])
    assert any(np.allclose(o, (5.0 + 2 * 15.0, 280.0)) for o in offsets)  # the last evaluation's GFLOP
    # run directories without cost figures: empty panels, not an error
    old = visible_axes(plots.robustness_figure(table, "fid", x="wall"))[0]
    assert [t.get_text() for t in old.texts] == ["no wall figures"]


def test_compute_scatter_one_point_per_run(costed, table):
    fig = plots.compute_scatter(costed, "fid")
    ax = fig.axes[0]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)
                              and len(c.get_offsets())])
    assert len(offsets) == 13  # 12 finished runs and the diverged one; the teacher is the dashed line
    assert any(np.allclose(o, (100.0, rundirs.fid_curve("sid", 1e-5, 1, 4.0))) for o in offsets)
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "total training GFLOP"
    with pytest.raises(BadInput, match="GFLOP"):
        plots.compute_scatter(table, "fid")


def test_cli_plot_x_and_compute(tmp_path, capsys):
    root = rundirs.costed_results(tmp_path / "results")
    assert main(["plot", "robustness", str(root), "-o", str(tmp_path / "g.png"), "--x", "gflop"]) == 0
    assert main(["plot", "robustness", str(root), "-o", str(tmp_path / "b.svg"), "--by-batch"]) == 0
    assert "batch 64 · lr = " in (tmp_path / "b.svg").read_text()
    assert main(["plot", "compute", str(root), "-o", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.svg").exists()
    assert main(["plot", "robustness", str(root), "-o", str(tmp_path / "g.png"), "--x", "flops"]) == 2


def test_one_fixed_style_per_method_distinct_in_every_attribute(table):
    styles = method_styles(["sim", "sid", "di", "dmd", "dmd2", "teacher"])
    assert set(styles) == {"sim", "sid", "di", "dmd", "dmd2"}
    assert styles["dmd"] == METHOD_STYLES["dmd"]  # the fixed table, whatever else is drawn
    fixed = list(METHOD_STYLES.values())
    for attr in ("color", "marker"):
        assert len({getattr(s, attr) for s in fixed}) == len(fixed)
    # DMD and DMD2 overlap in practice: they differ in colour, marker and dash
    assert all(getattr(styles["dmd"], a) != getattr(styles["dmd2"], a) for a in ("color", "marker", "linestyle"))
    # the figure draws each method with its style
    lines = visible_axes(plots.robustness_figure(table, "fid"))[1].get_lines()
    drawn = {(line.get_color(), line.get_marker()) for line in lines}
    assert {(styles[m].color, styles[m].marker) for m in ("sim", "sid", "dmd")} <= drawn


def test_log_ticks_are_few_and_plain(table):
    fig = plots.robustness_figure(table, "fid")
    plots.figure_bytes(fig, "svg")  # draws, so the tick labels exist
    for ax in visible_axes(fig):
        if ax.get_yscale() != "log":
            continue
        lo, hi = ax.get_ylim()
        shown = [t for t in ax.get_yticklabels() if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert 2 <= len(shown) <= 6
        assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in shown)
    summary = visible_axes(fig)[3]
    assert [t.get_text() for t in summary.get_xticklabels()] == ["1e-5", "1e-4", "1e-3"]


def test_panels_and_legend_as_separate_figures(table):
    rows = plots.robustness_panels(table, "fid")
    assert [(r["metric"], len(r["panels"])) for r in rows] == [("fid", 4), ("is", 4)]
    whole = visible_axes(plots.robustness_figure(table, "fid"))
    for row, start in ((rows[0], 0), (rows[1], 4)):
        for fig, ax in zip(row["panels"], whole[start:start + 4]):
            assert fig.axes[0].get_title() == ax.get_title()
            assert fig.axes[0].get_ylim() == pytest.approx(ax.get_ylim())  # one y range per row, here too
    svg = plots.figure_bytes(legend_figure(table["method"].unique()), "svg").decode()
    for name in ("sim", "sid", "dmd", "teacher (multi-step)", "diverged", 'id="legend-0"'):
        assert name in svg


def test_svg_names_the_text_to_check(table):
    svg = plots.figure_bytes(plots.robustness_figure(table, "fid"), "svg").decode()
    assert 'id="legend-0"' in svg and 'id="label-0-title"' in svg and 'id="label-7-y"' in svg
    assert re.search(r'id="ticklabel-0-y\d+"', svg) and re.search(r'id="ticklabel-3-x\d+"', svg)


def test_rows_by_batch_size(table):
    """``by_batch``: a row of panels per batch size, each drawing only that batch's runs; the teacher in each."""
    one_step = table["method"] != TEACHER
    (batch,) = table.loc[one_step, "batch"].unique()
    wide = table[one_step].assign(batch=4 * batch, run_id=table.loc[one_step, "run_id"] + "-wide",
                                  value=table.loc[one_step, "value"] * 1.5)
    both = pd.concat([table, wide], ignore_index=True)
    rows = plots.robustness_panels(both, "fid", by_batch=True)
    assert [(r["metric"], r["batch"]) for r in rows] == [("fid", batch), ("fid", 4 * batch), ("is", batch),
                                                         ("is", 4 * batch)]
    assert rows[1]["panels"][0].axes[0].get_title() == f"digits · batch {4 * batch} · lr = 1e-5"
    curves = []
    for row in rows[:2]:
        ax = row["panels"][1].axes[0]  # lr 1e-4: sim, sid, dmd and the teacher's line
        lines = ax.get_lines()
        assert sum(line.get_color() == TEACHER_STYLE.color for line in lines) == 1
        curves.append([np.asarray(line.get_ydata(), float) for line in lines
                       if line.get_color() != TEACHER_STYLE.color])
    assert len(curves[0]) == len(curves[1]) == 3
    for narrow, wide_curve in zip(*curves):  # the wide row draws the wide runs: every value 1.5x
        np.testing.assert_allclose(wide_curve, 1.5 * narrow, rtol=1e-9)
    whole = visible_axes(plots.robustness_figure(both, "fid", by_batch=True))
    assert len(whole) == 16 and whole[4].get_title() == f"digits · batch {4 * batch} · lr = 1e-5"
    assert len(visible_axes(plots.robustness_figure(both, "fid"))) == 8  # best batch per lr: one row per metric


def test_quality_against_nfe_draws_each_method_and_the_teacher_at_their_evaluation_counts(tmp_path):
    rundirs.write_few_step_runs(tmp_path)
    table = results.load(tmp_path)
    assert plots.has_few_step_runs(table) and not plots.has_few_step_runs(table[~table["run_id"].str.contains("k[24]")])
    ax = plots.nfe_figure(table, "fid").axes[0]
    lines = {tuple(line.get_xdata()): list(line.get_ydata()) for line in ax.get_lines() if len(line.get_xdata()) > 1}
    assert lines[(1.0, 2.0, 4.0)] == pytest.approx([44.0, 24.0, 14.0]) and lines[(3.0, 35.0)] == [90.0, 3.0]
    assert ax.get_xscale() == "log" and "NFE" in ax.get_xlabel()
    assert main(["plot", "nfe", str(tmp_path), "-o", str(tmp_path / "nfe.svg")]) == 0
    assert (tmp_path / "nfe.svg").read_text().lstrip().startswith("<?xml")
