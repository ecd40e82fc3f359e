"""Conditional generation: does a sample show the class it was asked for?"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .base import Evaluator, Measurement


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
