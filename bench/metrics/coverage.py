"""Coverage and diversity of a sample set in a feature space: PRDC, the Vendi score, class balance.

Pure functions of feature tensors (no extractor, no images): ``bench.metrics.diversity`` runs an
extractor and calls them.

- ``prdc``: precision, recall, density and coverage of Naeem et al. 2020 ("Reliable fidelity and
  diversity metrics for generative models"), k-nearest-neighbour balls in Euclidean feature space,
  ``k = 5`` by default, strict ``<`` as in their ``prdc`` package.
- ``vendi``: Friedman and Dieng 2023, ``exp`` of the Shannon entropy of the eigenvalues of ``K / n``
  for the cosine-similarity kernel ``K``: 1 for identical samples, ``n`` for ``n`` orthogonal ones.
- ``class_fractions`` / ``class_balance``: how the samples spread over a classifier's classes.

Distances and eigenvalues are computed in float64, in blocks, so 10k x 50k sets fit in memory.
"""
from __future__ import annotations

import math

import torch

K_DEFAULT = 5
BLOCK = 2048  # rows per block of a distance matrix: 2048 x 50k float64 is 800 MB at most


def _as_float64(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected features [N, D], got shape {list(x.shape)}")
    return x.detach().to(torch.float64)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [len(a), len(b)] (the matrix-product form; float64 keeps it accurate)."""
    return ((a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)).clamp_min_(0)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [len(a), len(b)]."""
    return _squared_distances(a, b).sqrt_()


def kth_neighbour_radii(x: torch.Tensor, k: int = K_DEFAULT) -> torch.Tensor:
    """Each point's distance to its ``k``-th nearest other point of ``x`` (itself excluded)."""
    x = _as_float64(x, "features")
    if not 1 <= k < x.shape[0]:
        raise ValueError(f"k-NN radii need 1 <= k < number of points, got k={k} for {x.shape[0]} points")
    # The point itself is at distance 0, the first of the k + 1 smallest. topk is about twice as fast as
    # kthvalue here, and the square root, being monotonic, is taken of the k-th value alone.
    return torch.cat([_squared_distances(x[i:i + BLOCK], x).topk(k + 1, dim=1, largest=False).values[:, k]
                      for i in range(0, x.shape[0], BLOCK)]).sqrt_()


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = K_DEFAULT) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features ([N, D] each).

    precision: fraction of fake points inside some real point's k-NN ball; recall: fraction of real
    points inside some fake point's k-NN ball; density: mean number of real balls holding a fake
    point, divided by k (1 on average for identical distributions, unbounded above); coverage:
    fraction of real balls holding at least one fake point.
    """
    real, fake = _as_float64(real, "real features"), _as_float64(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, fake {fake.shape[1]}")
    r_real, r_fake = kth_neighbour_radii(real, k), kth_neighbour_radii(fake, k)
    inside = torch.zeros(fake.shape[0], dtype=torch.bool)  # fake j in some real ball (precision)
    balls = torch.zeros(fake.shape[0], dtype=torch.float64)  # real balls holding fake j (density)
    recalled = torch.zeros(real.shape[0], dtype=torch.bool)  # real i in some fake ball (recall)
    nearest = torch.full((real.shape[0],), math.inf, dtype=torch.float64)  # real i's nearest fake (coverage)
    for j in range(0, fake.shape[0], BLOCK):
        d = _distances(real, fake[j:j + BLOCK])  # [R, block]
        in_real = d < r_real[:, None]
        inside[j:j + BLOCK] = in_real.any(0)
        balls[j:j + BLOCK] = in_real.sum(0)
        recalled |= (d < r_fake[None, j:j + BLOCK]).any(1)
        nearest = torch.minimum(nearest, d.min(1).values)
    return {"precision": inside.double().mean().item(), "recall": recalled.double().mean().item(),
            "density": balls.mean().item() / k, "coverage": (nearest < r_real).double().mean().item()}


def vendi(features: torch.Tensor) -> float:
    """The Vendi score of ``features`` [N, D] with the cosine-similarity kernel.

    ``K / n = X X^T / n`` for the unit-normalised rows ``X``; its non-zero eigenvalues are those of
    ``X^T X / n`` (D x D), so the score costs O(N D^2), not O(N^3). A zero row has no direction and
    is an error.
    """
    x = _as_float64(features, "features")
    norms = x.norm(dim=1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("Vendi score: a feature vector is zero (cosine similarity undefined)")
    x = x / norms
    n, d = x.shape
    gram = (x @ x.T if n <= d else x.T @ x) / n
    eig = torch.linalg.eigvalsh(gram).clamp_min(0)  # round-off makes some of the zero ones slightly negative
    eig = eig / eig.sum()  # the trace is 1 up to round-off
    nz = eig[eig > 0]
    return math.exp(-(nz * nz.log()).sum().item())


def class_fractions(logits: torch.Tensor, classes: int | None = None) -> torch.Tensor:
    """The fraction of samples whose most likely class (argmax of ``logits`` [N, C]) is each class."""
    logits = torch.as_tensor(logits)
    if logits.ndim != 2 or logits.shape[0] < 1:
        raise ValueError(f"expected logits [N, C], got shape {list(logits.shape)}")
    classes = classes or logits.shape[1]
    counts = torch.bincount(logits.argmax(1).cpu(), minlength=classes).double()
    return counts / counts.sum()


def class_balance(fractions: torch.Tensor) -> float:
    """Normalised entropy of class fractions: 1 when every class is equally frequent, 0 for one class."""
    p = torch.as_tensor(fractions, dtype=torch.float64)
    if p.numel() < 2:
        raise ValueError("class balance needs at least 2 classes")
    nz = p[p > 0]
    return -(nz * nz.log()).sum().item() / math.log(p.numel())
