"""Dropout and train/eval modes of a run's networks, as a method's recipe declares them.

The official loops differ here, and it changes the gradient: with the fake score a copy of the
teacher, ``f_psi - f_phi`` is exactly zero only if both see the same dropout (none, or one mask).
"""
from __future__ import annotations

from torch import nn


def _is_probability(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def set_dropout(net, p: float) -> int:
    """Set every dropout probability inside ``net`` to ``p``; returns how many were set.

    Covers dropout modules (their ``p``) and modules that keep it as a number in ``dropout`` and
    call ``F.dropout`` (EDM's blocks, ``nn.MultiheadAttention``). Anything that is not a module
    (an analytic teacher) has none.
    """
    if not isinstance(net, nn.Module):
        return 0
    count = 0
    for module in net.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = float(p)
            count += 1
        elif _is_probability(getattr(module, "dropout", None)):
            module.dropout = float(p)
            count += 1
    return count


def set_modes(networks: dict, train: frozenset | set) -> None:
    """Put each named network in train mode if its name is in ``train``, else in eval mode."""
    for name, net in networks.items():
        if isinstance(net, nn.Module):
            net.train(name in train)
