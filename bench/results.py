"""Contract 3's entry point: ``bench.results.load(results_dir)``, the tidy long table of every run's
measurements (columns documented in ``bench.analysis.table``), and ``load_runs``, one row per run.
Torch-free, so a copied results folder can be read anywhere."""

from .analysis.table import load, load_runs, load_stats

__all__ = ["load", "load_runs", "load_stats"]
