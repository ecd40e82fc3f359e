"""distill-bench: training (train/), evaluation (metrics/), analysis (analysis/), suites, networks and CLI."""
__version__ = "0.1.0"
