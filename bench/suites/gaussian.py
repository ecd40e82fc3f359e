"""Analytic Gaussian and Gaussian-mixture distributions with exact denoisers at every sigma.

They are the teachers of the ``gaussian`` suite and the ground truth of the method tests:
for ``x_t = x_0 + sigma * n`` the posterior mean ``E[x_0 | x_t]`` has a closed form.
"""
from __future__ import annotations

import math

import torch


def _sigma_column(sigma, x):
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, 1).expand(x.shape[0], 1) if sigma.ndim <= 1 else sigma


class Gaussian(torch.nn.Module):
    """``N(mean, cov)`` in ``dim`` dimensions (full covariance) and its exact denoiser.

    ``D(x; sigma) = mean + cov (cov + sigma^2 I)^-1 (x - mean)``. Mean and covariance may carry
    gradients (the method tests differentiate divergences through them).
    """

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor):
        super().__init__()
        self.mean, self.cov = mean, cov

    @property
    def dim(self) -> int:
        return self.mean.shape[-1]

    def noised(self, sigma: float) -> "Gaussian":
        """The distribution of ``x_0 + sigma * n``."""
        return Gaussian(self.mean, self.cov + sigma**2 * torch.eye(self.dim, dtype=self.cov.dtype))

    def forward(self, x, sigma, cond=None):
        s2 = _sigma_column(sigma, x).pow(2)  # [B, 1]
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        if bool((s2 == s2[0]).all()):  # one sigma for the whole batch: one solve instead of B
            return self.mean + (x - self.mean) @ torch.linalg.solve(self.cov + s2[0] * eye, self.cov)
        precision_mix = torch.linalg.solve(self.cov + s2[:, :, None] * eye, (x - self.mean).unsqueeze(-1))
        return self.mean + (self.cov @ precision_mix).squeeze(-1)

    def score(self, x):
        """``grad log N(x; mean, cov)``."""
        return -torch.linalg.solve(self.cov, (x - self.mean).T).T

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.dim, generator=generator, dtype=self.mean.dtype)
        return self.mean + z @ torch.linalg.cholesky(self.cov).T


class GaussianMixture(torch.nn.Module):
    """A mixture of diagonal Gaussians ``sum_k w_k N(mu_k, diag(s_k^2))`` and its exact denoiser."""

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, stds: torch.Tensor):
        super().__init__()
        weights = torch.as_tensor(weights, dtype=means.dtype)
        self.register_buffer("log_weights", (weights / weights.sum()).log())
        self.register_buffer("means", means)  # [K, D]
        self.register_buffer("stds", stds)  # [K, D]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    def _components(self, x, sigma):
        """Each component's posterior mean ``[B, K, D]`` and the log posterior ``log p_sigma(k | x)`` ``[B, K]``."""
        s2 = _sigma_column(sigma, x).pow(2)[:, None, :]  # [B, 1, 1]
        var = self.stds.pow(2)[None] + s2  # [B, K, D]
        diff = x[:, None, :] - self.means[None]  # [B, K, D]
        log_lik = -0.5 * (diff.pow(2) / var + var.log() + math.log(2 * math.pi)).sum(-1)
        log_resp = torch.log_softmax(self.log_weights[None] + log_lik, dim=1)
        return self.means[None] + self.stds.pow(2)[None] / var * diff, log_resp

    def log_posterior(self, x, sigma) -> torch.Tensor:
        """``log p_sigma(k | x)`` of every component ``k`` at noise level ``sigma``, ``[B, K]``."""
        return self._components(x, sigma)[1]

    def forward(self, x, sigma, cond=None):
        posterior_means, log_resp = self._components(x, sigma)
        return (log_resp.exp()[:, :, None] * posterior_means).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None, labels: torch.Tensor | None = None):
        """``n`` samples; of components ``labels`` when given (their classes), else of the mixture."""
        k = labels if labels is not None else torch.multinomial(self.log_weights.exp(), n, replacement=True,
                                                                generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[k] + self.stds[k] * z

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean and covariance of the mixture."""
        w = self.log_weights.exp()
        mean = (w[:, None] * self.means).sum(0)
        second = sum(w[k] * (torch.diag(self.stds[k] ** 2) + torch.outer(self.means[k], self.means[k]))
                     for k in range(len(w)))
        return mean, second - torch.outer(mean, mean)


class ClassConditionalMixture(GaussianMixture):
    """The mixture with its components as classes: ``D(x, sigma, c)`` is component ``c``'s exact denoiser
    for a one-hot ``c``, the mixture's for ``c = None`` or an all-zero row (the null class)."""

    def forward(self, x, sigma, cond=None):
        posterior_means, log_resp = self._components(x, sigma)
        weights = log_resp.exp()
        if cond is not None:
            cond = cond.to(weights.dtype)
            labelled = cond.sum(1, keepdim=True) > 0
            weights = torch.where(labelled, cond, weights)
        return (weights[:, :, None] * posterior_means).sum(1)


def frechet_distance(mean1, cov1, mean2, cov2) -> torch.Tensor:
    """Exact Fréchet (2-Wasserstein squared) distance between two Gaussians, differentiable."""
    eig1, vec1 = torch.linalg.eigh(cov1)
    root1 = vec1 @ torch.diag(eig1.clamp_min(0).sqrt()) @ vec1.T
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return (mean1 - mean2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross


# --- the suite --------------------------------------------------------------------------------
from .. import validate  # noqa: E402
from ..errors import BadInput  # noqa: E402
from ..nets.mlp import ResidualMLP  # noqa: E402
from ..nets.precond import EDMPrecond, OneStepGenerator  # noqa: E402
from ..metrics.base import Evaluator, Measurement  # noqa: E402
from .base import Parts, Suite, heun_sampler  # noqa: E402


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equally sized point clouds (random directions)."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(a.shape[1], projections, generator=gen, dtype=a.dtype)
    dirs /= dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return (pa - pb).pow(2).mean().sqrt().item()


class GaussianEvaluator(Evaluator):
    """Exact Fréchet distance of the samples' Gaussian fit to the teacher's moments, plus sliced W2."""

    def __init__(self, teacher: GaussianMixture, n_samples: int, seed: int = 0):
        self.n_samples = n_samples
        self.mean, self.cov = (t.double() for t in teacher.moments())
        self.reference = teacher.sample(n_samples, torch.Generator().manual_seed(seed)).double()

    def evaluate(self, samples, cond=None):
        x = samples.double().reshape(samples.shape[0], -1)
        fd = frechet_distance(x.mean(0), torch.cov(x.T), self.mean, self.cov).item()
        n = min(len(x), len(self.reference))
        sw = sliced_wasserstein(x[:n], self.reference[:n])
        impl = "exact Gaussian fit (distill-bench)"
        return [Measurement("frechet", fd, len(x), impl), Measurement("sliced_wasserstein", sw, n, impl)]


class GaussianSuite(Suite):
    """Analytic teacher: a mixture of diagonal Gaussians with exact denoisers; MLP generator and fake."""

    name = "gaussian"
    samples_are_images = False
    summary = {
        "teacher": "exact denoiser of a Gaussian mixture (closed form)",
        "data": "samples of the mixture",
        "shape": "2",
        "conditioning": "none",
        "metrics": "frechet, sliced_wasserstein (against the teacher's samples)",
    }
    defaults = {"dim": 8, "components": 4, "spread": 1.0, "std_min": 0.1, "std_max": 0.3,
                "teacher_seed": 0, "width": 256, "depth": 3, "n_eval": 2000, "teacher_steps": 18}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        for key in ("dim", "components", "width", "depth", "n_eval", "teacher_steps"):
            validate.positive(self.option_name(key), o[key], integer=True)
        for key in ("std_min", "std_max"):
            validate.positive(self.option_name(key), o[key])
        validate.non_negative(self.option_name("spread"), o["spread"])
        if o["std_min"] > o["std_max"]:
            raise BadInput(f"suite {self.name}: suite.std_min {o['std_min']} is above suite.std_max {o['std_max']}")
        gen = torch.Generator().manual_seed(int(self.options["teacher_seed"]))
        k, d = int(self.options["components"]), int(self.options["dim"])
        means = self.options["spread"] * (2 * torch.rand(k, d, generator=gen) - 1)
        lo, hi = self.options["std_min"], self.options["std_max"]
        stds = lo + (hi - lo) * torch.rand(k, d, generator=gen)
        self.teacher = GaussianMixture(torch.ones(k), means, stds)

    @property
    def latent_shape(self):
        return (int(self.options["dim"]),)

    def _mlp(self):
        o = self.options
        return EDMPrecond(ResidualMLP(int(o["dim"]), width=int(o["width"]), depth=int(o["depth"])))

    def build(self, sigma_init, device):
        generator = OneStepGenerator(self._mlp(), sigma_init).to(device)
        return Parts(teacher=self.teacher.to(device), generator=generator, fake=self._mlp().to(device))

    def load_teacher(self, device):
        return self.teacher.to(device)

    def teacher_sample(self, teacher, z, cond=None, steps=None):
        return heun_sampler(teacher, z, cond, steps=int(steps or self.options["teacher_steps"]))

    def teacher_info(self, steps=None):
        return {"sampler": "heun", "steps": int(steps or self.options["teacher_steps"])}

    def real_data(self, n, generator):
        return self.teacher.sample(n, generator), None

    def evaluator(self, device):
        return GaussianEvaluator(self.teacher, int(self.options["n_eval"]), seed=int(self.options["teacher_seed"]))
