"""The coverage and diversity evaluator: PRDC, Vendi and class balance in one registered feature space.

Metric names in metrics.jsonl: ``prdc_precision``, ``prdc_recall``, ``density``, ``coverage`` (Naeem et
al., k-NN balls, k = 5; the ``precision``/``recall`` rows are torch-fidelity's, k = 3), ``vendi`` and
``class_balance`` (normalised entropy of the classes the extractor's logits pick; its row's ``detail``
holds the per-class fractions beside the reference's). Reference features are extracted once per
evaluator and kept in memory.
"""
from __future__ import annotations

from typing import Any

import torch

from ..errors import BadInput
from . import coverage
from .base import Evaluator, Measurement
from .features import EMBEDDING, LOGITS, shared
from .images import check_images, to_uint8

GROUPS = ("prdc", "vendi", "classes")  # what can be asked for; "prdc" is four metrics
PRDC_NAMES = {"precision": "prdc_precision", "recall": "prdc_recall", "density": "density", "coverage": "coverage"}
IMPL = "distill-bench coverage v1"


class DiversityEvaluator(Evaluator):
    """PRDC against ``reference``, and Vendi and class balance of the samples, in extractor ``extractor``.

    ``reference`` is a uint8 NCHW tensor, a function returning one (called on first use), or None
    (Vendi and class balance need none). ``k`` is PRDC's neighbourhood size.
    """

    def __init__(self, reference=None, extractor: str = "inception", metrics=GROUPS, k: int = coverage.K_DEFAULT,
                 device="cpu", batch_size: int = 64, extractor_options: dict | None = None,
                 n_samples: int = 10000, n_final: int | None = None):
        unknown = sorted(set(metrics) - set(GROUPS))
        if unknown or not metrics:
            raise BadInput(f"unknown diversity metric {unknown[0] if unknown else '(none)'}; choose from {', '.join(GROUPS)}")
        if "prdc" in metrics and reference is None:
            raise BadInput("prdc needs reference images (vendi and classes work without)")
        if reference is not None and not callable(reference):
            check_images(reference, "reference images")
        self.space = shared(extractor, device, batch_size, extractor_options)
        self.metrics, self.k, self._reference = tuple(metrics), int(k), reference
        self.uses = tuple(dict.fromkeys(
            ([EMBEDDING] if {"prdc", "vendi"} & set(metrics) else []) + ([LOGITS] if "classes" in metrics else [])))
        for use in self.uses:
            self.space.layer(use)  # an extractor without logits fails here, not at the first evaluation
        self.n_samples, self._n_final = n_samples, n_final
        self._reference_features = None

    @property
    def impl(self) -> str:
        return f"{IMPL}/{self.space.impl}"

    def reference_features(self) -> dict[str, torch.Tensor] | None:
        """The reference's features (extracted on the first call), or None without a reference."""
        if self._reference is None:
            return None
        if self._reference_features is None:
            images = self._reference() if callable(self._reference) else self._reference
            check_images(images, "reference images")
            self._reference_features = self.space.features(images.cpu(), self.uses, remember=False)
        return self._reference_features

    def compute(self, images: torch.Tensor) -> list[Measurement]:
        """The measurements of uint8 (or [-1, 1] float) ``images``."""
        if images.is_floating_point():
            images = to_uint8(images)
        check_images(images, "generated images")
        n = images.shape[0]
        if "prdc" in self.metrics and n <= self.k:
            raise BadInput(f"prdc with k={self.k} needs more than {self.k} generated images, got {n}")
        fake, real = self.space.features(images.detach().cpu(), self.uses), self.reference_features()
        out = []
        if "prdc" in self.metrics:
            values = coverage.prdc(real[EMBEDDING], fake[EMBEDDING], self.k)
            out += [Measurement(PRDC_NAMES[key], values[key], n, f"{self.impl}/k={self.k}") for key in PRDC_NAMES]
        if "vendi" in self.metrics:
            out.append(Measurement("vendi", coverage.vendi(fake[EMBEDDING]), n, f"{self.impl}/cosine"))
        if "classes" in self.metrics:
            out.append(self._classes(fake[LOGITS], None if real is None else real[LOGITS], n))
        return out

    def _classes(self, logits: torch.Tensor, reference_logits, n: int) -> Measurement:
        fractions = coverage.class_fractions(logits)
        detail = {"class_fractions": [round(f, 6) for f in fractions.tolist()]}
        if reference_logits is not None:
            ref = coverage.class_fractions(reference_logits, logits.shape[1])
            detail["reference_fractions"] = [round(f, 6) for f in ref.tolist()]
            detail["max_deviation"] = round((fractions - ref).abs().max().item(), 6)
        return Measurement("class_balance", coverage.class_balance(fractions), n, self.impl, detail=detail)

    def evaluate(self, samples: torch.Tensor, cond: Any = None) -> list[Measurement]:
        """Measurements of ``samples``; ``cond`` is not used (scored on the unconditional distribution)."""
        return self.compute(samples)
