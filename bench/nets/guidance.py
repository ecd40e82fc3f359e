"""Classifier-free guidance around a conditional denoiser (Ho & Salimans, 2022).

``D_w(x, sigma, c) = D(x, sigma, null) + w (D(x, sigma, c) - D(x, sigma, null))``. A conditional suite's
teacher is this module: the existing methods distil ``D_w`` as they distil any teacher (DMD2's and
SiD-LSG's guided teacher scores), and the guidance-based methods read its two parts and its scale.
"""
from __future__ import annotations

import torch
from torch import nn


class GuidedDenoiser(nn.Module):
    """``D_w`` of a denoiser ``base(x, sigma, cond)`` whose ``cond=None`` is the null condition."""

    def __init__(self, base: nn.Module, scale: float):
        super().__init__()
        self.base, self.scale = base, float(scale)

    def conditional(self, x, sigma, cond):
        """``D(x, sigma, c)``: the unguided conditional denoiser."""
        return self.base(x, sigma, cond=cond)

    def unconditional(self, x, sigma):
        """``D(x, sigma, null)``."""
        return self.base(x, sigma, cond=None)

    def forward(self, x, sigma, cond=None):
        if cond is None or self.scale == 1.0:
            return self.base(x, sigma, cond=cond)
        null = self.unconditional(x, sigma)
        return null + self.scale * (self.conditional(x, sigma, cond) - null)


def guided_parts(teacher) -> GuidedDenoiser | None:
    """The teacher as a ``GuidedDenoiser`` when it is one (a conditional suite), else None."""
    return teacher if isinstance(teacher, GuidedDenoiser) else None


def one_hot(labels: torch.Tensor, classes: int, dtype=torch.float32) -> torch.Tensor:
    """Class labels ``[B]`` as one-hot rows ``[B, classes]`` (the all-zero row is the null class)."""
    return torch.nn.functional.one_hot(labels.long(), classes).to(dtype)
