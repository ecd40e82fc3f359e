"""Decoupled DMD against closed forms on the class-conditional Gaussian mixture.

Teacher: a mixture of diagonal Gaussians, each component a class, guided at scale ``w`` (exact
conditional, unconditional and guided denoisers). Generator: ``x = b + A z`` for one class ``c``, with the
exact denoiser of ``N(b, A A^T)`` as the fake score. Under ``weighting="none"`` the DM part's expected
gradient is ``sigma^2`` times that of ``KL(q_sigma || p_sigma(.|c))`` (closed form), and the CA part's is
``-(w - 1) sigma^2`` times that of ``E_q log p_sigma(c | x)`` (the exact class posterior, differentiated
along independent samples).
"""
import pytest
import torch

import methods
from bench.nets.guidance import GuidedDenoiser, one_hot
from bench.suites.gaussian import ClassConditionalMixture
from methods.ddmd import grid_below

DIM, CLASSES, CLASS, N_MC, N_TRUTH = 4, 3, 1, 200_000, 400_000
SIGMA_DM, SIGMA_CA = 0.8, 0.5


def mixture():
    gen = torch.Generator().manual_seed(21)
    means = 1.5 * torch.randn(CLASSES, DIM, generator=gen, dtype=torch.float64)
    stds = 0.4 + 0.4 * torch.rand(CLASSES, DIM, generator=gen, dtype=torch.float64)
    return ClassConditionalMixture(torch.ones(CLASSES, dtype=torch.float64), means, stds)


def estimate(method, guided, theta, closed_forms, seed=3):
    a, b = (t.clone().requires_grad_() for t in theta)
    gen = torch.Generator().manual_seed(seed)
    z, noise, noise_ca = (torch.randn(N_MC, DIM, generator=gen, dtype=torch.float64) for _ in range(3))
    x_g = b + z @ a.T
    fake = closed_forms.Gaussian(b.detach(), (a @ a.T).detach())
    full = lambda v: torch.full((N_MC,), v, dtype=torch.float64)  # noqa: E731
    loss, _ = method.generator_loss(x_g, guided, fake, cond=one_hot(torch.full((N_MC,), CLASS), CLASSES, torch.float64),
                                    sigma=full(SIGMA_DM), noise=noise, sigma_ca=full(SIGMA_CA), noise_ca=noise_ca,
                                    guidance=guided)
    return closed_forms.flat_grad(loss, (a, b))


def kl_gradient(mix, theta, closed_forms):
    a, b = (t.clone().requires_grad_() for t in theta)
    eye = torch.eye(DIM, dtype=torch.float64) * SIGMA_DM**2
    kl = closed_forms.kl(b, a @ a.T + eye, mix.means[CLASS], torch.diag(mix.stds[CLASS] ** 2) + eye)
    return closed_forms.flat_grad(kl, (a, b))


def class_log_posterior_gradient(mix, theta, closed_forms):
    a, b = (t.clone().requires_grad_() for t in theta)
    gen = torch.Generator().manual_seed(77)
    z, n = (torch.randn(N_TRUTH, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
    x = b + z @ a.T + SIGMA_CA * n
    value = mix.log_posterior(x, torch.tensor(SIGMA_CA, dtype=torch.float64))[:, CLASS].mean()
    return closed_forms.flat_grad(value, (a, b))


@pytest.mark.parametrize("w", [1.5, 3.0, 5.0])
@pytest.mark.parametrize("part", ["dm", "ca", "both"])
def test_each_part_follows_its_objective(closed_forms, part, w):
    mix = mixture()
    guided = GuidedDenoiser(mix, w)
    weights = {"dm": dict(ca_weight=0.0), "ca": dict(dm_weight=0.0), "both": {}}[part]
    method = methods.create("ddmd", weighting="none", schedule="full", **weights)
    results = []
    for seed in (0, 1):
        theta = closed_forms.theta(seed, dim=DIM)
        dm = SIGMA_DM**2 * kl_gradient(mix, theta, closed_forms)
        ca = -(w - 1) * SIGMA_CA**2 * class_log_posterior_gradient(mix, theta, closed_forms)
        truth = {"dm": dm, "ca": ca, "both": dm + ca}[part]
        results.append(closed_forms.compare(estimate(method, guided, theta, closed_forms), truth))
    print(f"ddmd {part} at w={w} (cosine, ratio):", results)
    assert closed_forms.proportional(results, 1.0, cos_min=0.999, rtol=0.03), results


def test_the_shared_schedule_is_dmd2_on_the_guided_teacher(closed_forms):
    """One level for both parts, weights 1, the paper weighting: DMD2's loss with the guided teacher."""
    mix = mixture()
    guided = GuidedDenoiser(mix, 2.5)
    theta = closed_forms.theta(0, dim=DIM)
    gen = torch.Generator().manual_seed(9)
    z, noise = (torch.randn(512, DIM, generator=gen, dtype=torch.float64) for _ in range(2))
    cond = one_hot(torch.randint(0, CLASSES, (512,), generator=gen), CLASSES, torch.float64)
    sigma = 0.05 + 5 * torch.rand(512, generator=gen, dtype=torch.float64)
    grads = []
    for name, extra in (("ddmd", dict(schedule="shared")), ("dmd2", {})):
        a, b = (t.clone().requires_grad_() for t in theta)
        x_g = b + z @ a.T
        fake = closed_forms.Gaussian(b.detach(), (a @ a.T).detach())
        loss, _ = methods.create(name, **extra).generator_loss(x_g, guided, fake, cond=cond, sigma=sigma, noise=noise,
                                                               guidance=guided)
        grads.append(closed_forms.flat_grad(loss, (a, b)))
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_constrained_levels_stay_below_the_generator_step():
    step = torch.tensor([80.0, 17.5, 2.5, 0.17]).repeat(5000)
    torch.manual_seed(0)
    drawn = grid_below(step)
    assert torch.all(drawn <= step * (1 + 1e-6)) and torch.all(drawn >= 0.002)
    for level in (80.0, 17.5, 2.5, 0.17):
        mine = drawn[step == level]
        assert mine.max() > 0.7 * level and mine.min() < 0.01  # the whole range below the step
    top = grid_below(torch.full((20000,), 80.0))  # one step: the full grid of DMD2 (indices 20..980)
    assert top.max() <= methods.base.karras_sigma(980 / 999) * (1 + 1e-6)
    assert top.min() >= methods.base.karras_sigma(20 / 999) * (1 - 1e-6)

