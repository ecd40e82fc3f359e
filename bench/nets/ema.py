"""EDM's exponential moving average of a network's weights, with its half-life in images."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, batch: int, nimg: int, halflife_kimg: float | None,
               rampup: float | None = None) -> None:
    """Move ``ema`` towards ``net`` after a step of ``batch`` images, ``nimg`` images in all.

    The half-life is ``halflife_kimg`` thousand images, capped at ``rampup * nimg`` early in
    training when ``rampup`` is set (EDM's ramp-up); ``None`` makes the EMA a plain copy.
    """
    if halflife_kimg is None:
        ema.load_state_dict(net.state_dict())
        return
    halflife_img = halflife_kimg * 1000
    if rampup:
        halflife_img = min(halflife_img, nimg * rampup)
    beta = 0.5 ** (batch / max(halflife_img, 1e-8))
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
