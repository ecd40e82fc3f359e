"""Routed networks: K students, each owning a subset of the classes (Multi-Student Distillation).

A ``RoutedDenoiser`` holds K denoisers and a router, a class -> student table; each sample of a batch
goes to the student that owns its class (``cond`` one-hot rows ``[B, classes]``, read by argmax) and to
no other, so a sample costs one student's pass and its gradient reaches that student's parameters only.
The generator of an MSD run is the suite's own generator around a routed denoiser (``route_generator``:
one-step and K-step generators alike), and its fake score is routed the same way, one per student.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class RoutedDenoiser(nn.Module):
    """``D(x, sigma, cond)``: each sample through the student denoiser its class is routed to.

    ``students`` are K denoisers of one architecture; ``router[c]`` is class ``c``'s student. ``cond``
    must be one-hot rows (the class is the argmax); ``None`` or the all-zero null row is refused, as
    no student owns it. Outputs come back in the batch's order.
    """

    def __init__(self, students: list[nn.Module], router: list[int]):
        super().__init__()
        if sorted(set(router)) != list(range(len(students))):
            raise ValueError(f"router {router} does not use each of the {len(students)} students")
        self.students = nn.ModuleList(students)
        self.register_buffer("router", torch.tensor(router, dtype=torch.long), persistent=False)

    @property
    def classes(self) -> int:
        """How many classes the router covers (the width of the one-hot ``cond`` rows)."""
        return int(self.router.numel())

    def route(self, cond) -> torch.Tensor:
        """The student index of each sample (``[B]``) from its one-hot class row."""
        if cond is None:
            raise ValueError("a routed network needs the class of each sample (cond=None has no student)")
        if not torch.is_tensor(cond) or cond.ndim != 2 or cond.shape[1] != self.classes:
            shape = tuple(cond.shape) if torch.is_tensor(cond) else type(cond).__name__
            raise ValueError(f"a routed network takes one-hot class rows [B, {self.classes}], got {shape}")
        if not bool((cond != 0).any(1).all()):
            raise ValueError("a routed network got the null class (an all-zero row): no student owns it")
        return self.router.to(cond.device)[cond.argmax(1)]

    def _each(self, call, x, sigma, cond, kwargs):
        index = self.route(cond)
        sigma = torch.as_tensor(sigma, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        pieces, order = [], []
        for k, student in enumerate(self.students):
            rows = (index == k).nonzero().squeeze(1)
            if rows.numel() == 0:  # no sample of its classes: the student does not run (no gradient, no cost)
                continue
            part = {key: v[rows] if torch.is_tensor(v) and v.shape[:1] == x.shape[:1] else v for key, v in kwargs.items()}
            pieces.append(call(student, x[rows], sigma[rows], cond[rows], part))
            order.append(rows)
        out = torch.cat(pieces)
        return out[torch.argsort(torch.cat(order))]

    def forward(self, x, sigma, cond=None, **kwargs):
        return self._each(lambda net, x, s, c, kw: net(x, s, cond=c, **kw), x, sigma, cond, kwargs)

    def features(self, x, sigma, cond=None):
        """Each sample's bottleneck features from its own student (a GAN head on a routed fake score)."""
        return self._each(lambda net, x, s, c, kw: net.features(x, s, c), x, sigma, cond, {})


def prototype(net: nn.Module) -> nn.Module:
    """The network whose architecture a routed module's students share (``net`` itself when not routed):
    what a probe of the architecture (a GAN head's feature size) runs, as a routed one needs classes."""
    return net.students[0] if isinstance(net, RoutedDenoiser) else net


def routed_copies(denoiser: nn.Module, router: list[int]) -> RoutedDenoiser:
    """``RoutedDenoiser`` of ``max(router) + 1`` copies of ``denoiser`` (each initialised as it is)."""
    students = [denoiser] + [copy.deepcopy(denoiser) for _ in range(max(router))]
    return RoutedDenoiser(students, router)


def route_generator(generator: nn.Module, router: list[int]) -> nn.Module:
    """``generator`` (a one-step or K-step generator around ``.denoiser``) with its denoiser replaced by
    routed copies of it, one per student: the same sampler, each sample through its class's student."""
    generator.denoiser = routed_copies(generator.denoiser, router)
    return generator
