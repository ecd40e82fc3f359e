"""CMMD: the google-research estimator, checked against sums done by hand."""
import math

import pytest
import torch

from bench.errors import BadInput
from bench.metrics.cmmd import cmmd


def test_identical_sets_are_zero():
    x = torch.nn.functional.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-12)


def test_two_single_points_closed_form():
    x, y = torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[3.0, 4.0, 0.0]])  # distance 5
    assert cmmd(x, y) == pytest.approx(1000 * (2 - 2 * math.exp(-25 / 200)), rel=1e-12)
    assert cmmd(x, y, sigma=1.0, scale=1.0) == pytest.approx(2 - 2 * math.exp(-12.5), rel=1e-12)


def test_point_sets_by_hand():
    # x: two points at distance 2; y: their midpoint, at distance 1 from each
    x, y = torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    k = lambda d2: math.exp(-d2 / 200)  # noqa: E731 (sigma = 10)
    kxx = (2 * k(0) + 2 * k(4)) / 4  # diagonals included
    expected = 1000 * (kxx + k(0) - 2 * k(1))
    assert cmmd(x, y) == pytest.approx(expected, rel=1e-10)


def test_symmetric_and_float64():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, 5, generator=g).float(), torch.randn(4, 5, generator=g).float() + 0.5
    assert cmmd(x, y) == pytest.approx(cmmd(y, x), rel=1e-12)
    assert isinstance(cmmd(x, y), float) and cmmd(x, y) > 0


def test_bad_input():
    with pytest.raises(BadInput, match="dimensions differ"):
        cmmd(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(BadInput, match=r"\[N, D\]"):
        cmmd(torch.zeros(3), torch.zeros(3, 3))
    with pytest.raises(BadInput, match="non-empty"):
        cmmd(torch.zeros(0, 3), torch.zeros(2, 3))
    with pytest.raises(BadInput, match="non-finite"):
        cmmd(torch.full((2, 3), float("nan")), torch.zeros(2, 3))
