"""bench.analysis.report: the self-contained HTML page, its escaping, and the page in headless Chromium."""
import base64
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import rundirs
from bench.analysis import report
from bench import results
from bench.cli import main
from bench.analysis.leaderboard import ROBUSTNESS_DEFINITION, leaderboard

HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A standard results folder with one hostile run added, and its report."""
    root = tmp_path_factory.mktemp("report")
    src = rundirs.standard_results(root / "results")
    d = rundirs.write_run(src, method="sid", lr=1e-5, seed=5, hparams={"alpha": HOSTILE, "weighting": "paper"})
    config = json.loads((d / "config.json").read_text())
    config["run_id"] = f"x{HOSTILE}"
    (d / "config.json").write_text(json.dumps(config))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["git_hash"] = '"><img src=x onerror=alert(2)>'
    manifest["versions"]["torch"] = HOSTILE
    (d / "manifest.json").write_text(json.dumps(manifest))
    out = root / "reports" / "demo" / "index.html"
    assert main(["report", str(src), "-o", str(out)]) == 0
    return src, out, out.read_text(encoding="utf-8")


class Tables(HTMLParser):
    """The data-sort keys of every table's body rows, by table id, in document order."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.in_body, self.scripts, self.root_attrs = {}, None, False, 0, {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root_attrs = attrs
        elif tag == "script":
            self.scripts += 1
        elif tag == "table":
            self.current = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body and self.current is not None:
            self.current.append([])
        elif tag == "td" and self.in_body and self.current is not None:
            self.current[-1].append(attrs.get("data-sort"))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.current = None


def parse(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def column(tables, table_id, col):
    return [row[col] for row in tables.tables[table_id]]


def test_one_self_contained_file(built):
    src, out, html = built
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(http" not in html
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/") for s in srcs)
    svg = [s for s in srcs if s.startswith("data:image/svg+xml;base64,")]
    # the shared legend, then 4 panels for FID and 4 for IS (three learning rates and the summary)
    assert len(svg) == 1 + 8 and all(b"<svg" in base64.b64decode(s.split(",", 1)[1]) for s in svg)
    # sample grids: teacher + every (method, lr) with runs: sim x3, sid x2, dmd x3; side by side: teacher,
    # sim, sid, dmd
    assert len([s for s in srcs if s.startswith("data:image/png")]) == 1 + 3 + 2 + 3 + 4
    assert html.count('alt="first eight samples of') == 4


def test_report_content(built):
    src, out, html = built
    tables = parse(html)
    for needed in ("leaderboard-1-fid", "leaderboard-1-is", "robustness-1", "runs-table", "compute-1"):
        assert needed in tables.tables
    assert "FID-1k" in html and "5.54 ± 0.15" in html and "IS-1k" in html
    assert ROBUSTNESS_DEFINITION.split(",")[0] in html
    runs = results.load_runs(src)
    assert len(tables.tables["runs-table"]) == len(runs)
    for run_id in runs["run_id"]:
        if "<" not in run_id:
            assert run_id in html
    assert "0123456789abcdef0123456789abcdef01234567" in html  # git hash
    assert "torch-fidelity 0.4.0 / digits-classifier" in html  # metric implementation
    assert "x86_64" in html and "3.11.7" in html
    assert "&#34;huber_c&#34;: 0.03" in html  # a full config.json, escaped, in the runs table
    # the leaderboard's value column holds the means the function computes
    board = leaderboard(results.load(src), "fid")
    keys = [float(k) for k in column(tables, "leaderboard-1-fid", 2)]
    assert keys == pytest.approx(board["mean"].tolist())


def test_verdict_and_measures_with_intervals(built):
    """The suite opens with the verdict bench.analysis.verdict generates, and its measures table is there."""
    from markupsafe import escape  # the template's own escaping

    from bench.analysis import robustness, verdict

    src, _, html = built
    analysis = robustness.analyse(results.load(src), "fid", n_boot=1000)[0]
    assert str(escape(verdict.verdict(analysis))) in html
    tables = parse(html)
    assert len(tables.tables["study-1"]) == len(verdict.measures_view(analysis))
    flat = verdict.flatness_view(analysis)
    assert len(flat) and len(tables.tables["flatness-1"]) == len(flat)
    assert str(escape(robustness.DEFINITIONS["tolerance"])) in html
    assert str(escape(robustness.DEFINITIONS["flatness"])) in html


def test_hostile_strings_are_escaped(built):
    src, out, html = built
    assert HOSTILE not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert parse(html).scripts == 3  # the page's own scripts only


def test_two_suites_one_without_samples_or_a_learning_rate_grid(tmp_path):
    for method in ("sim", "sid"):
        rundirs.write_run(tmp_path / "r", suite="gaussian", method=method, samples=False,
                          values=lambda k: {"frechet": 1.0 / (1 + k), "sliced_wasserstein": 0.5 / (1 + k)})
    rundirs.write_run(tmp_path / "r", suite="digits", method="sim")
    out = report.build_report(tmp_path / "r", tmp_path / "index.html")
    html = out.read_text()
    tables = parse(html).tables
    assert "leaderboard-1-fid" in tables and "leaderboard-2-frechet" in tables  # suites in name order
    assert "Fréchet-1k" in html and "needs ≥ 2 lrs" in html and "writes no sample grids" in html


def test_bad_input(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "-o", str(tmp_path / "out" / "index.html")]) == 2
    rundirs.write_run(tmp_path / "r")
    assert main(["report", str(tmp_path / "r"), "-o", str(tmp_path / "out" / "report.pdf")]) == 2
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    err = capsys.readouterr().err
    assert err.count("bench: error:") == 2 and "no run directories" in err and ".html" in err


def test_values_as_used_side_by_side_and_notes(tmp_path):
    """huber_c as resolved, kimg past the budget explained, KID's unit, and one seed's latents per row."""
    root, evals = tmp_path / "r", [0.0, 0.512, 1.024]
    for method, in_use in (("sim", {"huber_c": 0.00432}), ("sid", None), ("teacher", None)):
        d = rundirs.write_run(root, method=method, evals=[0.0] if method == "teacher" else evals,
                              hparams={"huber_c": None} if method == "sim" else None,
                              values=lambda k: {"fid": 50.0 - k, "kid": k - 0.5})
        config = json.loads((d / "config.json").read_text())
        config.update(kimg=0.0 if method == "teacher" else 1.0, **({"hparams_in_use": in_use} if in_use else {}))
        (d / "config.json").write_text(json.dumps(config))
        grid = np.zeros((73, 73), np.uint8)  # 8 x 8 samples of 8 x 8 pixels, one pixel apart
        grid[1:9, 1:9] = 255  # the first sample, top left
        for f in (d / "samples").iterdir():
            Image.fromarray(grid).save(f)
    ctx = report.context(root)
    html = report.render(ctx)
    assert "huber_c=0.00432" in html and "huber_c=None" not in html  # leaderboard and runs table
    runs = ctx["runs"]
    assert runs["note"].startswith("† Training takes whole batches") and "16 steps, 1024 images" in runs["note"]
    assert sum("†" in row["cells"][7]["text"] for row in runs["rows"]) == 2  # sim and sid; not the teacher
    assert "unbiased estimate of the squared MMD" in html and "raw features" in html
    assert ctx["suites"][0]["noise_floor"] == "Noise floor (the teacher's own rows): FID-1k 50.00"
    assert "Noise floor (the teacher&#39;s own rows): FID-1k 50.00." in html

    side = ctx["suites"][0]["side_by_side"]
    assert side["seed"] == 0 and [r["method"] for r in side["rows"]] == ["teacher", "sid", "sim"]  # board order
    for row in side["rows"]:
        strip = Image.open(io.BytesIO(base64.b64decode(row["src"].split(",", 1)[1])))
        assert strip.size == (73, 10) and row["width"] == 73 * 8  # the top row of the grid, enlarged 8x
        assert np.asarray(strip)[1:9, 1:9].min() == 255 and np.asarray(strip)[:, 10:].max() == 0
    assert [g["lr"] for g in ctx["suites"][0]["samples"]["groups"]] == ["lr = 1e-4"]


# --- the page in a real browser -------------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr",
                  "--v=0"]


@pytest.fixture(scope="session")
def chromium():
    """Debian's chromium, installed with apt-get where missing (root only); skip with the reason otherwise."""
    found = shutil.which("chromium")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get is not usable here (need root): apt-get install chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, timeout=300, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, timeout=600, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"could not install Debian's chromium with apt-get: {exc}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get install chromium did not provide a chromium binary")
    return found


def browse(chromium, tmp_path, url, *flags):
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *flags, url],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
def test_page_in_headless_chromium(chromium, built, tmp_path):
    src, out, html = built
    url = out.resolve().as_uri()
    shot = tmp_path / "report.png"
    browse(chromium, tmp_path, url, "--window-size=1400,2400", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 2400)
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 50  # rendered, not a blank page
    if os.environ.get("BENCH_REPORT_SCREENSHOT"):  # to look at the page: BENCH_REPORT_SCREENSHOT=path
        shutil.copy(shot, os.environ["BENCH_REPORT_SCREENSHOT"])

    before = parse(html)
    clicks = "leaderboard-1-fid:1,robustness-1:1,robustness-1:1,runs-table:6"  # method; score twice; seed
    dom = browse(chromium, tmp_path, f"{url}#click={clicks}", "--dump-dom")
    after = parse(dom)
    assert after.root_attrs.get("data-js-ready") == "1"
    assert json.loads(after.root_attrs.get("data-js-errors")) == []
    methods = column(after, "leaderboard-1-fid", 1)
    assert methods == sorted(methods) != column(before, "leaderboard-1-fid", 1)
    scores = [float(s) for s in column(after, "robustness-1", 1)]
    assert scores == sorted(scores, reverse=True)
    seeds = [float(s) for s in column(after, "runs-table", 6)]
    assert seeds == sorted(seeds) != [float(s) for s in column(before, "runs-table", 6)]
    assert after.scripts == 3


@pytest.mark.slow
def test_report_of_real_runner_output(tmp_path, capsys):
    """The runner's own run directories (tiny gaussian runs) go through table, leaderboard and report."""
    from bench_helpers import TINY, tiny_run_args

    for method in ("sim", "sid"):
        assert main(tiny_run_args(tmp_path / "results", method=method, kimg="0.5")) == 0
    assert main(["run", "--suite", "gaussian", "--method", "teacher", "--results", str(tmp_path / "results"),
                 "--quiet", *TINY]) == 0
    table = results.load(tmp_path / "results")
    assert set(table["method"]) == {"sim", "sid", "teacher"} and set(table["status"]) == {"done"}
    board = leaderboard(table)
    assert board["metric"].unique().tolist() == ["frechet"] and "teacher" in set(board["method"])
    assert (board["n_samples"] == 256).all() and board["label"].iloc[0] == "Fréchet-256"
    assert main(["report", str(tmp_path / "results"), "-o", str(tmp_path / "index.html")]) == 0
    html = (tmp_path / "index.html").read_text()
    assert "Fréchet-256" in html and "exact Gaussian fit" in html  # the metric implementation, from manifests


def test_cost_section(tmp_path):
    src = rundirs.costed_results(tmp_path / "results")
    html = report.build_report(src, tmp_path / "out" / "index.html").read_text()
    tables = parse(html)
    assert "leaderboard-gflop-1" in tables.tables
    assert column(tables, "leaderboard-gflop-1", 1) == ["teacher", "sim", "dmd", "sid"]  # dmd overtakes sid
    assert "at 40.00 GFLOP, the largest budget every method reached" in html
    svgs = re.findall(r'<img[^>]*\ssrc="data:image/svg\+xml;base64,[^"]*" alt="([^"]*)"', html)
    assert sum("against training GFLOP" in alt for alt in svgs) == 1  # the robustness figure against GFLOP
    assert sum("against total training GFLOP" in alt for alt in svgs) == 1  # the scatter
    assert column(tables, "leaderboard-1-fid", 8) == ["35.0", "", "", ""]  # NFE (the generators have no sample cost here)
    assert column(tables, "leaderboard-1-fid", 9) == ["", "10.0", "25.0", "15.0"]  # GFLOP per kimg
    assert "15.00 GFLOP, 30.00 s" in html and "0.07 GFLOP/image (35 NFE x 0.002)" in html


def test_no_cost_section_for_older_runs(built):
    _, _, html = built
    assert "At equal compute" not in html and "leaderboard-gflop-1" not in parse(html).tables


# --- layout at a laptop's and a desktop's width -----------------------------------------------------

# Injected into a copy of the report: after load, every SVG image is parsed into its own shadow root
# (ids stay per figure) at its natural size, and each named text element (plots.figure_bytes names
# tick labels, axis labels, titles and legends) is compared with the SVG's box, the viewBox on screen.
# Tables: a box that scrolls sideways overflows. The findings go into data-layout on <html>.
LAYOUT_PROBE = r"""<script>
window.addEventListener("load", function () {
  function text(src) {
    var bin = atob(src.split(",")[1]), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { bytes[i] = bin.charCodeAt(i); }
    return new TextDecoder().decode(bytes);
  }
  var out = {figures: [], tables: []};
  document.querySelectorAll('img[src^="data:image/svg+xml"]').forEach(function (img) {
    var host = document.createElement("div");
    host.style.cssText = "position: absolute; left: 0; top: 0; visibility: hidden";
    document.body.appendChild(host);
    var root = host.attachShadow({mode: "open"});
    root.appendChild(new DOMParser().parseFromString(text(img.src), "image/svg+xml").documentElement);
    var box = root.querySelector("svg").getBoundingClientRect(), outside = [], named = 0;
    root.querySelectorAll('[id^="ticklabel-"], [id^="label-"], [id^="legend-"]').forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) { return; }
      named += 1;
      if (r.left < box.left - 0.5 || r.top < box.top - 0.5 || r.right > box.right + 0.5 || r.bottom > box.bottom + 0.5) {
        outside.push(el.id);
      }
    });
    out.figures.push({cls: img.className, named: named, outside: outside,
                      natural: img.naturalWidth, shown: img.getBoundingClientRect().width});
    host.remove();
  });
  document.querySelectorAll(".tablebox").forEach(function (box) {
    out.tables.push({id: box.querySelector("table").id, scroll: box.scrollWidth, client: box.clientWidth});
  });
  out.page = {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth};
  document.documentElement.setAttribute("data-layout", JSON.stringify(out));
});
</script>"""


def clipped_svg() -> str:
    """A control figure whose legend lies half outside its canvas (as the old robustness figure's did),
    and whose y tick labels lie left of it."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_axes((0.0, 0.2, 0.6, 0.7))
    ax.plot([0, 1], [0, 1000], label="a method with a long name")
    ax.legend(loc="center left", bbox_to_anchor=(0.8, 0.5)).set_gid("legend-0")
    fig.draw_without_rendering()
    for i, label in enumerate(ax.get_yticklabels()):
        label.set_gid(f"ticklabel-0-y{i}")
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("width", [1400, 800])
def test_layout_fits_at_desktop_and_laptop_widths(chromium, built, tmp_path, width):
    src, out, html = built
    controls = (f'<img class="control" src="data:image/svg+xml;base64,{clipped_svg()}" alt="control">'
                '<div class="tablebox"><table id="control-wide"><tbody><tr><td style="white-space: nowrap">'
                + "wide " * 300 + "</td></tr></tbody></table></div>")
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", controls + LAYOUT_PROBE + "</body>"), encoding="utf-8")
    dom = browse(chromium, tmp_path, probed.resolve().as_uri(), f"--window-size={width},3000",
                 "--virtual-time-budget=10000", "--dump-dom")
    layout = json.loads(parse(dom).root_attrs["data-layout"])

    figures = [f for f in layout["figures"] if f["cls"] != "control"]
    control = [f for f in layout["figures"] if f["cls"] == "control"]
    assert {f["cls"] for f in figures} == {"legend", "panel"} and len(figures) == 1 + 8
    for f in figures:  # every tick label, axis label, title and legend lies inside its canvas
        assert f["named"] >= (1 if f["cls"] == "legend" else 5) and f["outside"] == [], f
        assert f["shown"] >= f["natural"] - 1, f  # shown at its natural size: panels wrap, they do not shrink
    outside = control[0]["outside"]  # the probe sees a clipped legend and tick labels
    assert "legend-0" in outside and any(i.startswith("ticklabel-0-y") for i in outside)

    tables = {t["id"]: t for t in layout["tables"]}
    assert {"leaderboard-1-fid", "robustness-1", "runs-table", "compute-1"} <= set(tables)
    for table_id, t in tables.items():
        if table_id != "control-wide" and t["client"]:  # (closed <details> hold boxes of width 0)
            assert t["scroll"] <= t["client"] + 1, f"{table_id} overflows its box at {width} px: {t}"
    assert tables["control-wide"]["scroll"] > tables["control-wide"]["client"] + 100  # the probe sees overflow
    assert layout["page"]["scroll"] <= width  # nothing makes the page scroll sideways (the control is in a box)

    shot = tmp_path / f"report-{width}.png"
    browse(chromium, tmp_path, out.resolve().as_uri(), f"--window-size={width},2400", f"--screenshot={shot}")
    assert Image.open(shot).size == (width, 2400)
    if os.environ.get("BENCH_REPORT_SCREENSHOTS"):  # to look at the page: BENCH_REPORT_SCREENSHOTS=folder
        shutil.copy(shot, os.environ["BENCH_REPORT_SCREENSHOTS"])


def test_few_step_runs_get_a_section_against_nfe(tmp_path):
    rundirs.write_few_step_runs(tmp_path / "r")
    suite = report.context(tmp_path / "r")["suites"][0]
    assert suite["nfe"]["figure"].startswith("data:image/svg+xml")
    assert [row["cells"][1]["text"] for row in suite["nfe"]["board"]["rows"]] == ["teacher"] * 2 + ["sim"] * 3
    rundirs.write_run(tmp_path / "one", method="sim")
    assert report.context(tmp_path / "one")["suites"][0]["nfe"] is None  # one-step runs only: no such section
