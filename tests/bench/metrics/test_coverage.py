"""PRDC, Vendi and class balance on feature sets with known answers, and against reference code."""
import math

import numpy as np
import pytest
import torch

from bench.metrics import coverage
from bench.metrics.coverage import class_balance, class_fractions, kth_neighbour_radii, prdc, vendi


def gaussian(n, d=8, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_identical_sets_are_precise_recalled_and_covered():
    x = gaussian(200)
    out = prdc(x, x.clone())
    assert out["precision"] == 1 and out["recall"] == 1 and out["coverage"] == 1
    assert out["density"] >= 1  # every point sits in its own ball and its neighbours'


def test_disjoint_clusters_are_neither_precise_nor_covered():
    out = prdc(gaussian(200, seed=0), gaussian(150, seed=1, shift=100.0))
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_a_collapsed_generator_is_precise_but_covers_little():
    real = gaussian(400)
    fake = real[:1].repeat(300, 1) + 1e-3 * gaussian(300, seed=2)  # 300 samples around one real point
    out = prdc(real, fake)
    assert out["precision"] == 1 and out["coverage"] < 0.02 and out["recall"] < 0.02


def brute_force_prdc(real, fake, k):
    """The definitions of Naeem et al. written out with full distance matrices, in numpy."""
    real, fake = real.numpy(), fake.numpy()
    dist = lambda a, b: np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))  # noqa: E731
    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)
    return {"precision": (d < r_real[:, None]).any(0).mean(), "recall": (d < r_fake[None, :]).any(1).mean(),
            "density": (d < r_real[:, None]).sum(0).mean() / k, "coverage": (d.min(1) < r_real).mean()}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force_in_blocks(monkeypatch, k):
    monkeypatch.setattr(coverage, "BLOCK", 37)  # several blocks, a ragged last one
    real, fake = gaussian(150, seed=3), gaussian(120, seed=4, shift=0.5)
    out, ref = prdc(real, fake, k=k), brute_force_prdc(real, fake, k)
    assert out == pytest.approx(ref, abs=1e-12)


def test_matches_the_prdc_package():
    prdc_package = pytest.importorskip("prdc", reason="the prdc package (test extra) is not installed")
    real, fake = gaussian(300, d=16, seed=5), gaussian(250, d=16, seed=6, shift=0.3)
    ref = prdc_package.compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert prdc(real, fake) == pytest.approx({k: float(v) for k, v in ref.items()}, abs=1e-12)


def test_radii_exclude_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert kth_neighbour_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert kth_neighbour_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="k < number of points"):
        kth_neighbour_radii(x, 4)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="dimensions"):
        prdc(gaussian(10, d=3), gaussian(10, d=4))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        prdc(torch.zeros(10), gaussian(10))


def test_vendi_of_identical_and_orthogonal_points():
    assert vendi(torch.ones(50, 7) * 3) == pytest.approx(1.0, abs=1e-9)
    assert vendi(torch.eye(12)) == pytest.approx(12.0, rel=1e-12)
    assert vendi(torch.eye(12)[:5]) == pytest.approx(5.0, rel=1e-12)  # fewer points than dimensions
    # two groups of orthogonal directions, 3 and 1 points: entropy of (3/4, 1/4)
    x = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 2.0]])
    assert vendi(x) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), rel=1e-12)


def test_vendi_matches_the_n_by_n_kernel():
    x = gaussian(40, d=6, seed=7) + 1.0
    u = (x / x.norm(dim=1, keepdim=True)).numpy()
    eig = np.clip(np.linalg.eigvalsh(u @ u.T / len(u)), 0, None)
    eig = eig[eig > 1e-15]
    assert vendi(x) == pytest.approx(math.exp(-(eig * np.log(eig)).sum()), rel=1e-10)
    with pytest.raises(ValueError, match="zero"):
        vendi(torch.zeros(3, 2))


def test_class_fractions_and_balance():
    logits = torch.eye(4)[torch.tensor([0, 0, 1, 3])]  # classes 0, 0, 1, 3; none of class 2
    assert class_fractions(logits).tolist() == [0.5, 0.25, 0.0, 0.25]
    assert class_balance(torch.full((10,), 0.1)) == pytest.approx(1.0)
    assert class_balance(torch.tensor([1.0, 0, 0])) == 0.0
    assert class_balance(class_fractions(logits)) == pytest.approx(1.5 * math.log(2) / math.log(4))
