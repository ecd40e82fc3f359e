"""What an evaluation returns: measurements, and the interface of an evaluator that makes them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Measurement:
    """One evaluated number, as it goes into metrics.jsonl (its name registered in ``registry``)."""

    metric: str
    value: float
    n_samples: int
    impl: str = ""  # implementation and version, e.g. "torch-fidelity 0.4.0 / digits-classifier"
    detail: Optional[dict] = None  # JSON-able facts behind the value (per-class fractions); not in the table


class Evaluator:
    """Scores a batch of samples (in the suite's data range) against a reference.

    ``n_samples`` is how many samples an evaluation during training uses, ``n_final`` how many the
    final evaluation uses (the same unless a suite asks for a larger, less noisy final count).
    """

    n_samples: int = 1000

    @property
    def n_final(self) -> int:
        return getattr(self, "_n_final", None) or self.n_samples

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        """The measurements of ``samples`` (a tensor), with their conditioning ``cond``."""
        raise NotImplementedError


class Renamed(Evaluator):
    """Another evaluator's measurements under new names (``{"fid": "fd_teacher"}``): one reference each."""

    def __init__(self, evaluator: Evaluator, names: dict[str, str]):
        self.inner, self.names = evaluator, dict(names)
        self.n_samples = evaluator.n_samples

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        return [Measurement(self.names.get(m.metric, m.metric), m.value, m.n_samples, m.impl, m.detail)
                for m in self.inner.evaluate(samples, cond)]


class Combined(Evaluator):
    """Several evaluators on the same samples, their measurements in order; counts from the first."""

    def __init__(self, *evaluators: Evaluator, n_final: int | None = None):
        self.parts = evaluators
        self.n_samples = evaluators[0].n_samples
        self._n_final = n_final

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        return [m for part in self.parts for m in part.evaluate(samples, cond)]
