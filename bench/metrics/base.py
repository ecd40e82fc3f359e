"""What an evaluation returns: measurements, and the interface of an evaluator that makes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Measurement:
    """One evaluated number, as it goes into metrics.jsonl (its name registered in ``registry``)."""

    metric: str
    value: float
    n_samples: int
    impl: str = ""  # implementation and version, e.g. "torch-fidelity 0.4.0 / digits-classifier"


class Evaluator:
    """Scores a batch of samples (in the suite's data range) against a reference."""

    n_samples: int = 1000

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        """The measurements of ``samples`` (a tensor), with their conditioning ``cond``."""
        raise NotImplementedError
