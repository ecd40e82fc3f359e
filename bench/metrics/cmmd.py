"""CMMD (Jayasumana et al. 2024, "Rethinking FID"): MMD^2 of CLIP image embeddings, Gaussian RBF kernel.

The estimator of the paper's code (google-research ``cmmd/distance.py``): with
``k(x, x') = exp(-||x - x'||^2 / (2 sigma^2))``, sigma = 10,
``CMMD = 1000 * (mean K_xx + mean K_yy - 2 mean K_xy)`` over all pairs, diagonals included (the
biased, minimum-variance estimate, Gretton et al. 2012 eq. 5). Inputs are L2-normalised embeddings;
the t2i suite uses OpenAI CLIP ViT-L/14 (``ClipScorer.embed_images``), the paper ViT-L/14@336px,
so values are not comparable with the paper's tables.
"""
from __future__ import annotations

import torch

from ..errors import BadInput

SIGMA = 10.0  # the paper's kernel bandwidth
SCALE = 1000.0  # the paper's display scale


def _features(name: str, x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().cpu().double()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise BadInput(f"cmmd: {name} must be a non-empty [N, D] feature matrix, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise BadInput(f"cmmd: {name} holds non-finite values")
    return x


def _mean_kernel(a: torch.Tensor, b: torch.Tensor, gamma: float) -> torch.Tensor:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return torch.exp(-gamma * d2.clamp_min(0)).mean()  # clamp: rounding can make d2 slightly negative


def cmmd(x, y, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """``scale * MMD^2`` (float64) between feature sets ``x [N, D]`` and ``y [M, D]`` with the RBF kernel."""
    x, y = _features("x", x), _features("y", y)
    if x.shape[1] != y.shape[1]:
        raise BadInput(f"cmmd: feature dimensions differ ({x.shape[1]} and {y.shape[1]})")
    if not sigma > 0:
        raise BadInput(f"cmmd: sigma must be > 0, got {sigma!r}")
    gamma = 1.0 / (2.0 * sigma ** 2)
    value = _mean_kernel(x, x, gamma) + _mean_kernel(y, y, gamma) - 2 * _mean_kernel(x, y, gamma)
    return float(scale * value)
