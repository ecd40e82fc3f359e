"""TDM against closed forms on Gaussians: each step's gradient is the KL gradient of its trajectory
distribution on its own interval; after the last step the fake loss is denoising score matching.

The generator is a two-step deterministic (DDIM) chain with an affine denoiser per level:
``x0 = A_0 z + b_0`` from ``x_in = sigma_0 z``, then the next input ``x0 + sigma_1 (x_in - x0) / sigma_0``
and ``x0 = A_1 x_in + b_1``. Every distribution involved is Gaussian, so the KLs are exact.
"""
import pytest
import torch

import methods
from methods.base import SIGMA_MIN, ChainPoint

DIM, N_MC = 4, 200_000
SIGMA_0, SIGMA_1 = 2.0, 0.7
EYE = torch.eye(DIM, dtype=torch.float64)


def theta(seed):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return 0.8 * EYE + 0.2 * rand(DIM, DIM), 0.3 * rand(DIM), 0.9 * EYE + 0.2 * rand(DIM, DIM), 0.2 * rand(DIM)


def trajectory_law(step, a0, b0, a1, b1):
    """Mean and covariance of the step's trajectory point ``x_mid`` (its output moved to the next level),
    the step's input held fixed (backward simulation), and that next level ``s_mid``."""
    r = SIGMA_1 / SIGMA_0
    first = (1 - r) * a0 + SIGMA_1 * EYE  # x_mid of step 0 = (1 - r)(A_0 z + b_0) + sigma_1 z
    if step == 0:
        return (1 - r) * b0, first @ first.T, SIGMA_1
    mean_in, cov_in = ((1 - r) * b0).detach(), (first @ first.T).detach()
    return a1 @ mean_in + b1, a1 @ cov_in @ a1.T, 0.0


def gaussian_denoiser(mean, cov):
    """The exact denoiser ``x + sigma^2 grad log`` of ``N(mean, cov)`` at the noise level it is called at
    (``cov`` already holds that level's noise)."""
    return lambda x, s, cond=None: x - s[:, None] ** 2 * torch.linalg.solve(cov, (x - mean).T).T


@pytest.mark.parametrize("step, sigma", [(0, 1.2), (1, 0.5)])
def test_each_steps_gradient_is_the_kl_of_its_trajectory_distribution(closed_forms, step, sigma):
    teacher = closed_forms.teacher(DIM)
    method = methods.create("tdm", weighting="none")
    gen = torch.Generator().manual_seed(11)
    z = torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64)
    noise = torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64)
    levels = (SIGMA_0, SIGMA_1, 0.0)
    results = []
    for seed in (0, 1):
        params = [t.clone().requires_grad_() for t in theta(seed)]
        a0, b0, a1, b1 = params
        x_in = SIGMA_0 * z
        x0 = (x_in / SIGMA_0) @ a0.T + b0
        if step == 1:
            x_in = (x0 + SIGMA_1 / SIGMA_0 * (x_in - x0)).detach()
            x0 = x_in @ a1.T + b1
        full = lambda v: torch.full((N_MC,), v, dtype=torch.float64)  # noqa: E731
        point = ChainPoint(x0, x_in, full(levels[step]), full(levels[step + 1]))
        mean, cov, s_mid = trajectory_law(step, *(t.detach() for t in params))
        q_sigma = cov + (sigma**2 - s_mid**2) * EYE
        loss, _ = method.generator_loss(x0, teacher, gaussian_denoiser(mean, q_sigma), sigma=full(sigma),
                                        noise=noise, trajectory=point)
        mine = params[2 * step: 2 * step + 2]
        estimate = closed_forms.flat_grad(loss, mine)

        mean, cov, _ = trajectory_law(step, *params)
        kl = closed_forms.kl(mean, cov + (sigma**2 - s_mid**2) * EYE, teacher.mean, teacher.cov + sigma**2 * EYE)
        results.append(closed_forms.compare(estimate, closed_forms.flat_grad(kl, mine)))
    factor = 2 * sigma**2 / (1 - s_mid / levels[step])
    print(f"tdm step {step} at sigma {sigma} (cosine, ratio / factor):", [(c, r / factor) for c, r in results])
    assert closed_forms.proportional(results, factor, cos_min=0.999, rtol=0.02), results


def test_after_the_last_step_the_fake_loss_is_denoising_score_matching():
    """With ``s_mid = 0`` the importance weight is 1 and the loss's minimiser is the exact denoiser of the
    generator's samples: its gradient there is Monte-Carlo noise next to the gradient one step away."""
    method = methods.create("tdm")
    gen = torch.Generator().manual_seed(4)
    mean, chol = 0.3 * torch.randn(DIM, generator=gen, dtype=torch.float64), 0.2 * torch.randn(DIM, DIM, generator=gen, dtype=torch.float64) + EYE
    x0 = mean + torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64) @ chol.T
    sigma = 0.8
    point = ChainPoint(x0, torch.randn_like(x0), torch.full((N_MC,), 1.5, dtype=torch.float64),
                       torch.zeros(N_MC, dtype=torch.float64))
    cov = chol @ chol.T
    best = cov @ torch.linalg.inv(cov + sigma**2 * EYE)  # E[x0 | x_t] = mean + best (x_t - mean)

    def gradient(w):
        w = w.clone().requires_grad_()
        fake = lambda x, s, cond=None: mean + (x - mean) @ w.T  # noqa: E731
        loss, logs = method.fake_score_loss(x0, fake, sigma=torch.full((N_MC,), sigma, dtype=torch.float64),
                                            trajectory=point)
        assert logs["importance_weight"].item() == pytest.approx(1.0, abs=1e-12)
        return torch.autograd.grad(loss, w)[0].norm().item()

    at_best, away = gradient(best), gradient(best + 0.1 * EYE)
    assert at_best < 0.03 * away, (at_best, away)  # 1.3% here


@pytest.mark.parametrize("random_mid", [False, True])
def test_each_steps_noise_levels_lie_on_its_own_interval(random_mid):
    """The sampling-steps-aware objective: a step's targets are noised between the next level and its own."""
    method = methods.create("tdm", random_mid=random_mid)
    n = 20_000
    levels = torch.tensor([80.0, 17.5, 2.5, 0.17, 0.0])
    k = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(n, 3)
    point = ChainPoint(x0, torch.randn(n, 3), levels[k], levels[k + 1])
    torch.manual_seed(1)
    _, sigma, _ = method._noised_point(point)
    assert torch.all(sigma <= levels[k] * (1 + 1e-5))
    assert torch.all(sigma >= torch.maximum(levels[k + 1], torch.tensor(SIGMA_MIN)) * (1 - 1e-5))
    for step in range(4):  # each interval is covered, not only its ends
        inside = sigma[k == step]
        lo, hi = max(float(levels[step + 1]), SIGMA_MIN), float(levels[step])
        assert inside.min() < lo + 0.1 * (hi - lo) and inside.max() > hi - 0.3 * (hi - lo)

