"""K-step generators with DMD2's backward simulation, against closed forms on Gaussians.

A two-step generator with an affine denoiser per noise level: ``x_1 = A_0 z + b_0`` and
``x_2 = A_1 (x_1 + sigma_1 eps) + b_1``. Backward simulation trains each step on the chain's own
input held fixed, so the generator's samples follow the mixture ``m = (q_1 + q_2) / 2`` of the two
steps' outputs, and with the mixture's exact denoiser as the fake score DMD's expected gradient is
``sigma^2`` times the gradient of ``KL(m_sigma || p_sigma)`` with each step's input distribution
held fixed (the semi-gradient the method follows); DI's too.
"""
import pytest
import torch
from torch.distributions import MultivariateNormal

import methods
from bench.nets.precond import FewStepGenerator

DIM, N_MC, N_IMPORTANCE = 4, 200_000, 400_000
SIGMA_0, SIGMA_1 = 2.0, 0.7


class LevelAffine(torch.nn.Module):
    """``D(x, sigma_0) = A_0 x / sigma_0 + b_0`` and ``D(x, sigma_1) = A_1 x + b_1``."""

    def __init__(self, theta):
        super().__init__()
        self.a0, self.b0, self.a1, self.b1 = (torch.nn.Parameter(t.clone()) for t in theta)

    def forward(self, x, sigma, cond=None):
        first = (sigma == SIGMA_0)[:, None]
        return torch.where(first, (x / SIGMA_0) @ self.a0.T + self.b0, x @ self.a1.T + self.b1)


def theta(seed):
    gen = torch.Generator().manual_seed(seed)
    eye = torch.eye(DIM, dtype=torch.float64)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return 0.8 * eye + 0.2 * rand(DIM, DIM), 0.3 * rand(DIM), 0.9 * eye + 0.2 * rand(DIM, DIM), 0.2 * rand(DIM)


def step_outputs(a0, b0, a1, b1, sigma):
    """The two steps' output Gaussians noised at ``sigma``; the second's input (step one's output plus
    ``sigma_1`` noise) detached, as backward simulation holds it."""
    eye = torch.eye(DIM, dtype=torch.float64)
    cov_in = (a0 @ a0.T).detach() + SIGMA_1**2 * eye
    return [(b0, a0 @ a0.T + sigma**2 * eye), (a1 @ b0.detach() + b1, a1 @ cov_in @ a1.T + sigma**2 * eye)]


def mixture_denoiser(components, sigma):
    """The exact denoiser of an equal mixture of Gaussians ``N(mu_i, C_i)`` (un-noised), at ``sigma``."""
    eye = torch.eye(DIM, dtype=torch.float64)
    noised = [MultivariateNormal(mu, cov + sigma**2 * eye) for mu, cov in components]

    def denoise(x, s, cond=None):
        weights = torch.softmax(torch.stack([d.log_prob(x) for d in noised]), 0)
        # each component's denoiser: mu + C (C + s^2)^-1 (x - mu)
        parts = [mu + torch.linalg.solve(cov + sigma**2 * eye, (x - mu).T).T @ cov
                 for mu, cov in components]
        return sum(w[:, None] * p for w, p in zip(weights, parts))
    return denoise


@pytest.mark.parametrize("name", ["dmd2", "di"])
def test_backward_simulation_follows_the_kl_of_the_steps_mixture(closed_forms, name):
    teacher = closed_forms.teacher(DIM)
    method = methods.create(name, weighting="none")
    sigma = 1.5
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64)
    noise = torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64)
    results = []
    for seed in (0, 1):
        th = theta(seed)
        denoiser = LevelAffine(th)
        generator = FewStepGenerator(denoiser, (SIGMA_0, SIGMA_1))
        torch.manual_seed(seed)
        x_g = generator.training_sample(z)
        fake = mixture_denoiser(step_outputs(*(t.detach() for t in th), 0.0), sigma)  # a perfect fake score
        loss, _ = method.generator_loss(x_g, teacher, fake, sigma=torch.full((N_MC,), sigma, dtype=torch.float64),
                                        noise=noise)
        params = (denoiser.a0, denoiser.b0, denoiser.a1, denoiser.b1)
        estimate = closed_forms.flat_grad(loss, params)

        a0, b0, a1, b1 = (t.clone().requires_grad_() for t in th)
        mixture = step_outputs(a0, b0, a1, b1, sigma)
        p = MultivariateNormal(teacher.mean, teacher.cov + sigma**2 * torch.eye(DIM, dtype=torch.float64))
        proposal = MultivariateNormal(p.loc, 2 * p.covariance_matrix + sum(c for _, c in mixture).detach())
        x = proposal.loc + torch.randn(N_IMPORTANCE, DIM, generator=torch.Generator().manual_seed(7),
                                       dtype=torch.float64) @ proposal.scale_tril.T
        log_m = torch.logsumexp(torch.stack([MultivariateNormal(mu, c).log_prob(x) for mu, c in mixture]), 0) - \
            torch.log(torch.tensor(2.0, dtype=torch.float64))
        w = (log_m - proposal.log_prob(x)).exp()
        kl = (w * (log_m - p.log_prob(x) - 1)).mean()  # "- 1": a zero-mean control variate of the weights' gradient
        truth = closed_forms.flat_grad(kl, (a0, b0, a1, b1))
        results.append(closed_forms.compare(estimate, truth))
    print(f"{name}, two steps with backward simulation (cosine, ratio / sigma^2):", [(c, r / sigma**2) for c, r in results])
    assert closed_forms.proportional(results, sigma**2, cos_min=0.995, rtol=0.03), results
