"""The f-divergence family shared by f-distill and Uni-Instruct: weights as functions of the density ratio.

``D_f(p || q) = E_q f(p / q)`` with ``p`` the teacher and ``q`` the generator (noised at the same sigma),
``r = p / q`` estimated by a discriminator whose logit is ``log r``. For every divergence the gradient
with respect to the generator reweights the reverse-KL direction per sample by ``h(r) = r^2 f''(r)``
(Xu et al., 2025, f-distill); Uni-Instruct's expanded divergence also needs ``h(r) - r h'(r)``.
``h`` here is exactly ``r^2 f''(r)``: FastGen writes squared Hellinger as ``sqrt(r)`` and Neyman as
``1 / r``, a constant factor that its batch normalisation removes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Weight = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Divergence:
    """One f-divergence: ``f``, ``h(r) = r^2 f''(r)`` and ``h(r) - r h'(r)``, all elementwise in ``r``."""

    name: str
    title: str
    f: Weight
    h: Weight
    h_minus_r_dh: Weight


def _xlogx(r):
    return torch.special.xlogy(r, r)


DIVERGENCES: dict[str, Divergence] = {d.name: d for d in (
    Divergence("rkl", "reverse KL, KL(q || p)", lambda r: -torch.log(r),
               torch.ones_like, torch.ones_like),
    Divergence("kl", "forward KL, KL(p || q)", _xlogx,
               lambda r: r, torch.zeros_like),
    Divergence("js", "Jensen-Shannon, KL(p || m) + KL(q || m)",
               lambda r: _xlogx(r) - (1 + r) * torch.log((1 + r) / 2),
               lambda r: r / (1 + r), lambda r: (r / (1 + r)) ** 2),
    Divergence("sf", "softened reverse KL, 2 KL(m || p)",
               lambda r: (1 + r) * torch.log((1 + r) / 2) - _xlogx(r) - torch.log(r),
               lambda r: 1 / (1 + r), lambda r: (1 + 2 * r) / (1 + r) ** 2),
    Divergence("sh", "squared Hellinger", lambda r: (r.sqrt() - 1) ** 2,
               lambda r: r.sqrt() / 2, lambda r: r.sqrt() / 4),
    Divergence("jf", "Jeffreys, KL(p || q) + KL(q || p)", lambda r: (r - 1) * torch.log(r),
               lambda r: 1 + r, torch.ones_like),
    Divergence("neyman", "Neyman chi-squared", lambda r: (1 - r) ** 2 / r,
               lambda r: 2 / r, lambda r: 4 / r),
)}


def get(name: str, method: str) -> Divergence:
    """The divergence called ``name``; ValueError naming the method and the known ones otherwise."""
    if name not in DIVERGENCES:
        raise ValueError(f"{method}: unknown divergence {name!r} (known: {', '.join(DIVERGENCES)})")
    return DIVERGENCES[name]


def density_ratio(logits: torch.Tensor, lower: float | None, upper: float | None) -> torch.Tensor:
    """``r = exp(logit)`` from detached, float32 logits; logits clamped to [-10, 10] and ``r`` to
    ``[lower, upper]`` when bounds are given (f-distill's clamping; ``None`` leaves ``r`` exact)."""
    logits = logits.detach().float()
    if lower is None and upper is None:
        return logits.exp()
    return logits.clamp(-10.0, 10.0).exp().clamp(lower, upper)


def normalise_by_batch_mean(weights: torch.Tensor) -> torch.Tensor:
    """Weights divided by their batch mean (f-distill's ``h`` normalisation, Uni-Instruct's variance
    reduction), so that the overall loss scale does not depend on the divergence."""
    return weights / (weights.mean() + 1e-6)
