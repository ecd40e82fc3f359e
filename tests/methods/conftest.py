"""Closed-form ground truth shared by the method tests: a Gaussian teacher, an affine generator.

The generator is ``x_g = b + A z`` (theta = A, b), so its distribution is ``q = N(b, A A^T)`` and,
noised at sigma, ``q_sigma = N(b, A A^T + sigma^2 I)``. The fake denoiser is q's exact denoiser built
from the *detached* theta, as a perfectly trained fake score would be. Everything runs in float64.
"""
from types import SimpleNamespace

import pytest
import torch

from bench.suites.gaussian import Gaussian

DIM = 8
N_MC = 200_000  # Monte-Carlo batch of the generator-loss gradients


def teacher_gaussian(dim=DIM, dtype=torch.float64):
    """A teacher with a mean offset and a full, anisotropic covariance (not isotropic)."""
    gen = torch.Generator().manual_seed(1234)
    mean = torch.linspace(-1.0, 1.0, dim, dtype=dtype) + 0.5
    chol = torch.tril(0.3 * torch.randn(dim, dim, generator=gen, dtype=dtype), -1)
    chol = chol + torch.diag(torch.linspace(0.4, 1.2, dim, dtype=dtype))
    return Gaussian(mean, chol @ chol.T)


def generator_theta(seed, dim=DIM, dtype=torch.float64):
    """An affine generator's parameters ``(A, b)``, away from the teacher; ``seed`` picks a different theta."""
    gen = torch.Generator().manual_seed(seed)
    a = 0.8 * torch.eye(dim, dtype=dtype) + 0.2 * torch.randn(dim, dim, generator=gen, dtype=dtype)
    b = 0.3 * torch.randn(dim, generator=gen, dtype=dtype)
    return a, b


def kl_gaussians(mean_q, cov_q, mean_p, cov_p):
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)), differentiable."""
    dim = mean_q.shape[-1]
    diff = mean_p - mean_q
    return 0.5 * (torch.trace(torch.linalg.solve(cov_p, cov_q)) - dim + diff @ torch.linalg.solve(cov_p, diff)
                  + torch.logdet(cov_p) - torch.logdet(cov_q))


def fisher_gaussians(mean_q, cov_q, mean_p, cov_p):
    """Fisher divergence ``E_q |s_q - s_p|^2`` between two Gaussians, differentiable.

    ``s_q - s_p = M (x - mean_q) + cov_p^-1 (mean_q - mean_p)`` with ``M = cov_p^-1 - cov_q^-1``.
    """
    m = torch.linalg.inv(cov_p) - torch.linalg.inv(cov_q)
    v = torch.linalg.solve(cov_p, mean_q - mean_p)
    return torch.trace(m @ cov_q @ m.T) + v @ v


def flat_grad(value, params):
    """The gradient of a scalar with respect to ``params``, as one flat vector."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params)])


class AffineGaussianCase:
    """The teacher, generator parameters, noise bank and gradients the method tests compare."""

    def __init__(self, n=N_MC, dim=DIM):
        self.dim, self.n = dim, n
        self.teacher = teacher_gaussian(dim)
        gen = torch.Generator().manual_seed(99)
        self.z = torch.randn(n, dim, generator=gen, dtype=torch.float64)
        self.noise = torch.randn(n, dim, generator=gen, dtype=torch.float64)

    theta = staticmethod(generator_theta)

    def loss_gradient(self, method, theta, sigma, **extra):
        """Autograd gradient of ``method.generator_loss`` w.r.t. (A, b), exact detached fake, fixed sigma."""
        a, b = (t.clone().requires_grad_() for t in theta)
        fake = Gaussian(b.detach(), (a @ a.T).detach())
        x_g = b + self.z @ a.T
        sigma_b = torch.full((self.n,), float(sigma), dtype=torch.float64)
        loss, _ = method.generator_loss(x_g, self.teacher, fake, sigma=sigma_b, noise=self.noise, **extra)
        return flat_grad(loss, (a, b))

    def divergence_gradient(self, divergence, theta, sigma):
        """Exact gradient w.r.t. (A, b) of ``divergence(q_sigma, p_sigma)`` from the closed forms."""
        a, b = (t.clone().requires_grad_() for t in theta)
        eye = sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        value = divergence(b, a @ a.T + eye, self.teacher.mean, self.teacher.cov + eye)
        return flat_grad(value, (a, b))


def compare(g_loss, g_true):
    """(cosine, norm ratio |g_loss| / |g_true|)."""
    cosine = (g_loss @ g_true / (g_loss.norm() * g_true.norm())).item()
    return cosine, (g_loss.norm() / g_true.norm()).item()


def proportional(results, factor, cos_min=0.999, rtol=0.02):
    """True when every (cosine, ratio) has cosine > cos_min and ratio within rtol of ``factor``.

    ``results`` holds one (cosine, ratio) per generator parameter theta, so this also checks that the
    proportionality factor does not change with theta.
    """
    ratios = [r for _, r in results]
    same_factor = max(ratios) / min(ratios) < 1 + rtol
    return same_factor and all(c > cos_min and abs(r / factor - 1) < rtol for c, r in results)


@pytest.fixture(scope="session")
def case():
    """The shared Gaussian case (noise bank drawn once per session)."""
    return AffineGaussianCase()


@pytest.fixture(scope="session")
def closed_forms():
    """The closed-form helpers, as a namespace (tests have no package to import them from)."""
    return SimpleNamespace(kl=kl_gaussians, fisher=fisher_gaussians, compare=compare,
                           proportional=proportional, flat_grad=flat_grad, teacher=teacher_gaussian,
                           theta=generator_theta, Gaussian=Gaussian)


