"""Closed-form ground truth shared by the method tests: a Gaussian teacher, an affine generator.

The generator is ``x_g = b + A z`` (theta = A, b), so its distribution is ``q = N(b, A A^T)`` and,
noised at sigma, ``q_sigma = N(b, A A^T + sigma^2 I)``. The fake denoiser is q's exact denoiser built
from the *detached* theta, as a perfectly trained fake score would be; the density-ratio methods get
a perfect discriminator, the exact ``log p_sigma / q_sigma``, from the same detached theta.
Everything runs in float64.
"""
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import MultivariateNormal

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


N_IMPORTANCE = 400_000  # samples of the high-precision divergences below


def importance_samples(mean_q, cov_q, mean_p, cov_p, seed=2024):
    """A fixed proposal wider than both Gaussians (theta detached) and a fixed bank of its samples."""
    proposal = MultivariateNormal((mean_q.detach() + mean_p) / 2, cov_q.detach() + cov_p)
    eps = torch.randn(N_IMPORTANCE, mean_p.shape[-1], generator=torch.Generator().manual_seed(seed), dtype=mean_p.dtype)
    return proposal, proposal.loc + eps @ proposal.scale_tril.T


def f_divergence(f):
    """``D_f(p || q) = E_q f(p/q)`` between two Gaussians, differentiable, by importance sampling.

    The proposal ``N((m_q + m_p)/2, C_q + C_p)`` is wider than both and does not move with theta, so
    ``q/proposal`` is bounded and the estimate keeps high precision where ``p/q`` is heavy-tailed.
    """
    def divergence(mean_q, cov_q, mean_p, cov_p):
        proposal, x = importance_samples(mean_q, cov_q, mean_p, cov_p)
        log_q = MultivariateNormal(mean_q, cov_q).log_prob(x)
        ratio = (MultivariateNormal(mean_p, cov_p).log_prob(x) - log_q).exp()
        return ((log_q - proposal.log_prob(x)).exp() * f(ratio)).mean()
    return divergence


def weighted_fisher(h):
    """Uni-Instruct's expanded-divergence integrand ``E_q h(p/q) |s_q - s_p|^2``, by importance sampling."""
    def divergence(mean_q, cov_q, mean_p, cov_p):
        proposal, x = importance_samples(mean_q, cov_q, mean_p, cov_p)
        log_q = MultivariateNormal(mean_q, cov_q).log_prob(x)
        ratio = (MultivariateNormal(mean_p, cov_p).log_prob(x) - log_q).exp()
        s_q = -torch.linalg.solve(cov_q, (x - mean_q).T).T
        s_p = -torch.linalg.solve(cov_p, (x - mean_p).T).T
        return ((log_q - proposal.log_prob(x)).exp() * h(ratio) * (s_q - s_p).pow(2).sum(1)).mean()
    return divergence


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

    def log_ratio(self, theta, sigma):
        """The perfect discriminator: ``log p_sigma(x) - log q_sigma(x)`` with theta detached."""
        a, b = (t.detach() for t in theta)
        eye = sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        p = MultivariateNormal(self.teacher.mean, self.teacher.cov + eye)
        q = MultivariateNormal(b, a @ a.T + eye)
        return lambda x, s, cond=None: p.log_prob(x) - q.log_prob(x)

    def divergence_gradient(self, divergence, theta, sigma, key=None):
        """Exact gradient w.r.t. (A, b) of ``divergence(q_sigma, p_sigma)`` from the closed forms.

        With a ``key`` (naming the divergence) the result is kept for later tests asking the same.
        """
        if key is not None:
            cache = self.__dict__.setdefault("_gradients", {})
            ident = (key, sigma, *(t.sum().item() for t in theta))
            if ident not in cache:
                cache[ident] = self.divergence_gradient(divergence, theta, sigma)
            return cache[ident]
        a, b = (t.clone().requires_grad_() for t in theta)
        eye = sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        value = divergence(b, a @ a.T + eye, self.teacher.mean, self.teacher.cov + eye)
        return flat_grad(value, (a, b))


def compare_with_perfect_discriminator(case, method, truth, key, sigma, seeds=(0, 1)):
    """(cosine, ratio) per generator theta of ``method``'s gradient, given the exact log density ratio,
    against the gradient of ``truth`` (a divergence of the noised Gaussians, kept under ``key``)."""
    results = []
    for seed in seeds:
        theta = case.theta(seed)
        estimate = case.loss_gradient(method, theta, sigma, discriminator=case.log_ratio(theta, sigma))
        results.append(compare(estimate, case.divergence_gradient(truth, theta, sigma, key=key)))
    return results


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
                           f_divergence=f_divergence, weighted_fisher=weighted_fisher,
                           with_perfect_discriminator=compare_with_perfect_discriminator,
                           proportional=proportional, flat_grad=flat_grad, teacher=teacher_gaussian,
                           theta=generator_theta, Gaussian=Gaussian)




@pytest.fixture
def toy():
    """Small batches for by-hand loss checks: two analytic denoisers, a linear discriminator, sigma, noise."""
    gen = torch.Generator().manual_seed(3)
    linear = torch.nn.Linear(5, 1)
    return SimpleNamespace(
        teacher=lambda x, s, cond=None: 0.6 * x + 0.1 * s[:, None],
        fake=lambda x, s, cond=None: 0.3 * x.tanh() - 0.2,
        x_g=torch.randn(6, 5, generator=gen, requires_grad=True),
        sigma=torch.linspace(0.3, 20.0, 6), noise=torch.randn(6, 5, generator=gen),
        discriminator=lambda x, s, cond=None: linear(x).squeeze(1) * 3 + s.log(), linear=linear)
