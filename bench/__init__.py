"""distill-bench: suites, networks, runner, launchers, metrics, results, plots, report and CLI."""
__version__ = "0.1.0"
