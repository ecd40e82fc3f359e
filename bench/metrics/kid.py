"""KID (Binkowski et al., 2018) on feature tensors: torch-fidelity's estimator, its subsets, faster.

torch-fidelity draws ``subsets`` pairs of ``subset_size``-row subsets with ``RandomState(rng_seed)`` and
evaluates the cubic polynomial kernel on each pair in float32 numpy: 3 x subsets Gram matrices of
subset_size^2 entries. When the full kernel matrices are smaller than that (digits: 2k samples against
1,797 digits, 12x fewer entries), it is cheaper to build them once, in float64, and read every subset's
kernel sum off them (chosen by counting multiply-adds) with 0/1 subset masks; the subsets, the estimator (unbiased MMD^2, torch-fidelity's
``mmd2``) and the mean/std over subsets are torch-fidelity's. The values then differ from torch-fidelity's
only by its float32 rounding (tests/bench/metrics/test_kid.py measures it). Larger sets go to
torch-fidelity's own loop unchanged.
"""
from __future__ import annotations

import numpy as np
import torch

BLOCK = 2048  # kernel rows built at a time (2048 x 50k float64: 0.8 GB at most)


def subset_indices(n1: int, n2: int, subsets: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """torch-fidelity's subsets: for each, ``size`` rows of set 1 then of set 2, without replacement."""
    rng = np.random.RandomState(seed)
    pairs = [(rng.choice(n1, size, replace=False), rng.choice(n2, size, replace=False)) for _ in range(subsets)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _masks(index: np.ndarray, n: int) -> torch.Tensor:
    mask = torch.zeros(index.shape[0], n, dtype=torch.float64)
    mask.scatter_(1, torch.from_numpy(index), 1.0)
    return mask


def _subset_sums(a, b, mask_a, mask_b, kernel) -> torch.Tensor:
    """Per subset s: the sum of kernel(a_i, b_j) over i in subset s of a and j in subset s of b."""
    total = torch.zeros(mask_a.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[0], BLOCK):
        k = kernel(a[start:start + BLOCK], b)
        total += ((mask_a[:, start:start + BLOCK] @ k) * mask_b).sum(1)
    return total


def kid_from_features(features_1: torch.Tensor, features_2: torch.Tensor, kid_subsets: int = 100,
                      kid_subset_size: int = 1000, rng_seed: int = 2020, kid_kernel_poly_degree: int = 3,
                      kid_kernel_poly_gamma: float | None = None, kid_kernel_poly_coef0: float = 1.0,
                      **kwargs) -> dict[str, float]:
    """torch-fidelity's ``kernel_inception_distance_mean``/``_std`` of two [N, D] feature sets (its keyword
    names, so its kwargs pass through; the polynomial kernel only, torch-fidelity's default)."""
    n1, n2, m = features_1.shape[0], features_2.shape[0], kid_subset_size
    entries, dim = n1 * n1 + n2 * n2 + n1 * n2, features_1.shape[1]
    # multiply-adds: the full kernels (dim each) and the masks (one per subset) against torch-fidelity's
    # subset kernels, whose float32 arithmetic runs about twice as fast as float64
    if kwargs.get("kid_kernel", "poly") != "poly" or (dim + kid_subsets) * entries > 1.5 * kid_subsets * m * m * dim:
        from torch_fidelity.metric_kid import kid_features_to_metric

        return kid_features_to_metric(features_1, features_2, kid_subsets=kid_subsets, kid_subset_size=m,
                                      rng_seed=rng_seed, kid_kernel_poly_degree=kid_kernel_poly_degree,
                                      kid_kernel_poly_gamma=kid_kernel_poly_gamma,
                                      kid_kernel_poly_coef0=kid_kernel_poly_coef0, verbose=False, **kwargs)
    if n1 < m or n2 < m:
        raise ValueError(f"KID subset size {m} is larger than a set ({n1}, {n2})")
    x, y = features_1.double().cpu(), features_2.double().cpu()
    gamma = 1.0 / x.shape[1] if kid_kernel_poly_gamma is None else kid_kernel_poly_gamma

    def kernel(a, b):
        return (a @ b.T * gamma + kid_kernel_poly_coef0) ** kid_kernel_poly_degree

    index_1, index_2 = subset_indices(n1, n2, kid_subsets, m, rng_seed)
    mask_1, mask_2 = _masks(index_1, n1), _masks(index_2, n2)
    diag_1 = ((x * x).sum(1) * gamma + kid_kernel_poly_coef0) ** kid_kernel_poly_degree
    diag_2 = ((y * y).sum(1) * gamma + kid_kernel_poly_coef0) ** kid_kernel_poly_degree
    xx = _subset_sums(x, x, mask_1, mask_1, kernel) - mask_1 @ diag_1  # off-diagonal sums, as mmd2's Kt
    yy = _subset_sums(y, y, mask_2, mask_2, kernel) - mask_2 @ diag_2
    xy = _subset_sums(x, y, mask_1, mask_2, kernel)
    mmd = ((xx + yy) / (m * (m - 1)) - 2 * xy / (m * m)).numpy()
    return {"kernel_inception_distance_mean": float(np.mean(mmd)),
            "kernel_inception_distance_std": float(np.std(mmd))}
