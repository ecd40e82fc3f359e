"""The import graph: imports flow one way (DESIGN.md).

``methods`` knows nothing of ``bench``; ``bench.metrics`` knows nothing of ``bench.suites``;
training (``bench.train``) and evaluation (``bench.metrics``) never import the analysis of finished
runs (``bench.analysis``); the analysis side (every module of ``bench.analysis``, the run directory,
the registries, the CLI) never imports torch, not even through the package's own modules. Every
import statement counts, including the lazy ones inside functions.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TORCH_FREE = ("bench.analysis", "bench.rundir", "bench.runlock", "bench.registry", "bench.metrics.registry",
              "bench.errors", "bench.cli", "bench.results")  # packages: every module inside them


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from . import results"
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layering rule, as "importer -> imported (rule)"."""
    out = []
    for module, imported in sorted(graph.items()):
        for name in sorted(imported):
            if _within(module, "methods") and _within(name, "bench"):
                out.append(f"{module} -> {name} (methods must not import bench)")
            if _within(module, "bench.metrics") and _within(name, "bench.suites"):
                out.append(f"{module} -> {name} (metrics must not import suites)")
            if (_within(module, "bench.train") or _within(module, "bench.metrics")) and _within(name, "bench.analysis"):
                out.append(f"{module} -> {name} (training and evaluation must not import analysis)")
    for start in sorted(m for m in graph if any(_within(m, free) for free in TORCH_FREE)):
        seen, stack = set(), [start]
        while stack:  # every module reachable from a torch-free one, through the package's own imports
            module = stack.pop()
            if module in seen:
                continue
            seen.add(module)
            for name in graph.get(module, ()):
                if _within(name, "torch"):
                    out.append(f"{start} reaches {module} -> {name} (the results side never imports torch)")
                elif name in graph:
                    stack.append(name)
    return out


def test_the_repository_keeps_its_layers():
    assert violations(_rooted(REPO)) == []


def _rooted(repo: Path) -> dict[str, set[str]]:
    """The graph of the ``bench`` and ``methods`` packages, named from the repository root."""
    graph = {}
    for package in ("bench", "methods"):
        for path in (repo / package).rglob("*.py"):
            graph[module_name(path, repo)] = imports_of(path, repo)
    return graph


@pytest.mark.parametrize("files, rule", [
    ({"methods/__init__.py": "", "methods/sim.py": "from bench import results\n"}, "methods must not import bench"),
    ({"bench/__init__.py": "", "bench/metrics/__init__.py": "", "bench/suites/__init__.py": "",
      "bench/metrics/fid.py": "def f():\n    from ..suites import base\n"}, "metrics must not import suites"),
    ({"bench/__init__.py": "", "bench/analysis/__init__.py": "", "bench/analysis/table.py": "from .. import helpers\n",
      "bench/helpers.py": "import torch.nn\n"}, "never imports torch"),
    ({"bench/__init__.py": "", "bench/train/__init__.py": "", "bench/analysis/__init__.py": "",
      "bench/train/loop.py": "def f():\n    from ..analysis import table\n"}, "must not import analysis"),
])
def test_each_rule_catches_a_violation(tmp_path, files, rule):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    for package in ("bench", "methods"):
        (tmp_path / package).mkdir(exist_ok=True)
    found = violations(_rooted(tmp_path))
    assert found and all(rule in v for v in found)


@pytest.mark.slow
def test_the_results_side_runs_without_torch():
    """At run time too: importing results, plots, report and the CLI loads no torch."""
    code = ("import sys, bench.results, bench.analysis.leaderboard, bench.analysis.verdict, bench.analysis.plots, "
            "bench.analysis.report, bench.cli, bench.metrics.registry; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
