"""Conditional generation: does a sample show the class it was asked for, and is each class's distribution right?"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..rundir import write_atomic
from .base import Evaluator, Measurement
from .images import to_uint8


class ClassAccuracy(Evaluator):
    """The share of samples whose classifier prediction is the class they were generated for.

    ``logits`` maps a batch of samples (in the suite's data range) to class logits; ``cond`` is the
    one-hot conditioning the samples were drawn with. Unconditional samples (``cond=None``) give nothing.
    """

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor], n_samples: int, impl: str, batch: int = 1000):
        self.logits, self.n_samples, self.impl, self.batch = logits, n_samples, impl, batch

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        if cond is None:
            return []
        with torch.no_grad():
            predicted = torch.cat([self.logits(samples[i:i + self.batch]).argmax(1).cpu()
                                   for i in range(0, samples.shape[0], self.batch)])
        accuracy = (predicted == cond.argmax(1).cpu()).double().mean().item()
        return [Measurement("class_accuracy", accuracy, samples.shape[0], self.impl)]


class ClassFrechet(Evaluator):
    """The Fréchet distance between samples and a labelled reference, class by class, in a feature space.

    ``reference()`` returns uint8 images and their class labels ``[N]``; it is called once, and with
    ``cache_file`` only when that file (each class's feature mean and covariance) does not exist yet.
    ``metric``'s value is the mean over the classes both sides have at least two samples of; the
    per-class distances ride along in ``detail``. Samples are assigned the class they were generated for
    (``cond``, one-hot rows); unconditional samples give nothing.
    """

    def __init__(self, space, reference: Callable[[], tuple[torch.Tensor, torch.Tensor]], metric: str,
                 n_samples: int, cache_file: Path | None = None):
        self.space, self.reference, self.metric, self.n_samples = space, reference, metric, n_samples
        self.cache_file = None if cache_file is None else Path(cache_file)
        self.impl = f"per-class Fréchet distance/{space.impl}"
        self._stats: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

    def _features(self, images: torch.Tensor, remember: bool) -> torch.Tensor:
        layer = self.space.layer("fid")
        return self.space.by_layer(images, [layer], remember)[layer]

    def reference_stats(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{class: (mu, sigma)}`` of the reference's features (cached in ``cache_file`` when given)."""
        if self._stats is None and self.cache_file is not None and self.cache_file.is_file():
            with np.load(self.cache_file, allow_pickle=False) as data:
                classes = data["classes"].tolist()
                self._stats = {k: (data[f"mu_{k}"], data[f"sigma_{k}"]) for k in classes}
        if self._stats is None:
            images, labels = self.reference()
            stats = _class_stats(self._features(images, remember=False), labels.cpu())
            if self.cache_file is not None:
                arrays = {"classes": np.array(sorted(stats))}
                for k, (mu, sigma) in stats.items():
                    arrays[f"mu_{k}"], arrays[f"sigma_{k}"] = mu, sigma
                write_atomic(self.cache_file, lambda tmp: np.savez(tmp, **arrays))  # tmp ends in .npz
            self._stats = stats
        return self._stats

    def evaluate(self, samples, cond: Any = None) -> list[Measurement]:
        if cond is None:
            return []
        from torch_fidelity.metric_fid import fid_statistics_to_metric

        images = to_uint8(samples) if samples.is_floating_point() else samples
        generated = _class_stats(self._features(images, remember=True), cond.argmax(1).cpu())
        reference = self.reference_stats()
        per_class = {}
        for k in sorted(set(generated) & set(reference)):
            (mu1, s1), (mu2, s2) = generated[k], reference[k]
            fd = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)
            per_class[k] = float(fd["frechet_inception_distance"])
        if not per_class:
            return []
        value = sum(per_class.values()) / len(per_class)
        return [Measurement(self.metric, value, samples.shape[0], self.impl,
                            detail={str(k): v for k, v in per_class.items()})]


def _class_stats(features: torch.Tensor, labels: torch.Tensor) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{class: (mean, covariance)}`` (float64) of the classes with at least two rows."""
    out = {}
    for k in labels.unique().tolist():
        f = features[labels == k].double().numpy()
        if len(f) >= 2:
            out[int(k)] = (f.mean(0), np.cov(f, rowvar=False))
    return out
