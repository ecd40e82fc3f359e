"""Tolerances that scale with what is compared (importable as ``tolerances``).

Two float32 routes to the same number differ by rounding, and how much depends on the CPU (the
summation order of a matrix product differs between kernels). The error of a sum is relative to
the largest magnitude it handles, not to each output element, so a tolerance is a number of float32
epsilons times the largest magnitude compared.
"""
import torch

EPS32 = torch.finfo(torch.float32).eps


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, eps: float = 128) -> None:
    """``|actual - expected| <= eps * EPS32 * max(|expected|)`` everywhere (and shapes match).

    The default of 128 epsilons (1.5e-5 of the scale) allows for the few hundred accumulations of a
    small network's matrix products in another order; observed differences are a few epsilons.
    """
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.detach().abs().max().item()
    err = (actual.detach() - expected.detach()).abs().max().item()
    assert err <= eps * EPS32 * scale, f"max difference {err:.3g} > {eps:g} eps x scale {scale:.3g}"
