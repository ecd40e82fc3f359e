"""bench.metrics.kid against torch-fidelity's KID: the same subsets and estimator, float64 instead of float32."""
import pytest
import torch
from torch_fidelity.metric_kid import kid_features_to_metric

from bench.metrics import kid

MEAN, STD = "kernel_inception_distance_mean", "kernel_inception_distance_std"


def features(n, d=16, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def torch_fidelity_kid(a, b, subsets, size):
    return kid_features_to_metric(a, b, kid_subsets=subsets, kid_subset_size=size, rng_seed=2020, verbose=False,
                                  kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                  kid_kernel_poly_coef0=1)


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_full_kernel_route_equals_torch_fidelity_to_its_float32_rounding(shift, monkeypatch):
    a, b = features(300, d=64, seed=1), features(250, d=64, seed=2, shift=shift)
    expected = torch_fidelity_kid(a, b, subsets=50, size=100)
    monkeypatch.setattr("torch_fidelity.metric_kid.kid_features_to_metric", None)  # the fast route only
    got = kid.kid_from_features(a, b, kid_subsets=50, kid_subset_size=100)
    # float32 kernel sums of ~1e4 terms of size ~1: torch-fidelity's rounding is ~1e-7 of the sums
    scale = 2e-6 * (1 + abs(expected[MEAN]))
    assert got[MEAN] == pytest.approx(expected[MEAN], abs=scale)
    assert got[STD] == pytest.approx(expected[STD], abs=scale)


def test_large_sets_go_to_torch_fidelity_unchanged():
    a, b = features(400, d=2, seed=1), features(400, d=2, seed=2)  # full kernels cost more than 30 subsets of 50
    assert kid.kid_from_features(a, b, kid_subsets=30, kid_subset_size=50) == torch_fidelity_kid(a, b, 30, 50)


def test_identical_points_score_zero(monkeypatch):
    monkeypatch.setattr("torch_fidelity.metric_kid.kid_features_to_metric", None)  # the fast route only
    a = features(1, seed=3).repeat(120, 1)
    got = kid.kid_from_features(a, a.clone(), kid_subsets=50, kid_subset_size=60)
    assert got[MEAN] == pytest.approx(0, abs=1e-12) and got[STD] == pytest.approx(0, abs=1e-12)


def test_subsets_are_torch_fidelitys():
    import numpy as np

    first, second = kid.subset_indices(50, 40, subsets=3, size=10, seed=2020)
    rng = np.random.RandomState(2020)
    for i in range(3):
        assert (first[i] == rng.choice(50, 10, replace=False)).all()
        assert (second[i] == rng.choice(40, 10, replace=False)).all()
