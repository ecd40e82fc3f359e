"""The class-conditional Gaussian mixture: exact conditional, null and guided denoisers; its evaluator."""
import pytest
import torch

from bench.errors import BadInput
from bench.nets.guidance import GuidedDenoiser, one_hot
from bench.suites import create
from bench.suites.gaussian import ClassConditionalMixture, GaussianMixture


def mixture():
    gen = torch.Generator().manual_seed(5)
    means = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    stds = 0.3 + 0.5 * torch.rand(3, 4, generator=gen, dtype=torch.float64)
    return ClassConditionalMixture(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), means, stds)


def test_a_class_is_its_components_exact_denoiser_and_the_null_class_the_mixtures():
    mix = mixture()
    x = torch.randn(6, 4, dtype=torch.float64)
    sigma = torch.full((6,), 0.7, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    var = mix.stds[labels] ** 2
    expected = mix.means[labels] + var / (var + 0.49) * (x - mix.means[labels])
    assert torch.allclose(mix(x, sigma, one_hot(labels, 3, torch.float64)), expected, atol=1e-12)
    plain = GaussianMixture(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), mix.means, mix.stds)
    assert torch.allclose(mix(x, sigma), plain(x, sigma), atol=1e-12)
    null = torch.zeros(6, 3, dtype=torch.float64)
    assert torch.allclose(mix(x, sigma, null), plain(x, sigma), atol=1e-12)


def test_the_class_direction_is_sigma_squared_times_the_class_posterior_gradient():
    """``D(x, c) - D(x, null) = sigma^2 grad_x log p_sigma(c | x)``: what guidance adds, and CA's direction."""
    mix = mixture()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    sigma = torch.tensor(1.3, dtype=torch.float64)
    grad = torch.autograd.grad(mix.log_posterior(x, sigma)[:, 2].sum(), x)[0]
    cond = one_hot(torch.full((5,), 2), 3, torch.float64)
    with torch.no_grad():
        direction = mix(x, sigma, cond) - mix(x, sigma)
    assert torch.allclose(direction, sigma**2 * grad, atol=1e-10)


def test_guidance_combines_the_two():
    mix = mixture()
    x = torch.randn(4, 4, dtype=torch.float64)
    sigma = torch.full((4,), 2.0, dtype=torch.float64)
    cond = one_hot(torch.tensor([0, 1, 2, 1]), 3, torch.float64)
    guided = GuidedDenoiser(mix, 3.0)
    null = mix(x, sigma)
    assert torch.allclose(guided(x, sigma, cond), null + 3.0 * (mix(x, sigma, cond) - null), atol=1e-12)
    assert torch.equal(GuidedDenoiser(mix, 1.0)(x, sigma, cond), mix(x, sigma, cond))
    assert torch.equal(guided(x, sigma), null)


def test_the_evaluator_scores_the_teachers_samples_perfect_and_a_class_blind_generator_at_chance():
    suite = create("gaussian_cond", n_eval=1000, guidance=1.5)
    evaluator = suite.evaluator(torch.device("cpu"))
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(1000, *suite.latent_shape, generator=gen)
    cond = suite.sample_cond(1000, gen)
    own = {m.metric: m.value for m in evaluator.evaluate(suite.teacher_sample(suite.teacher, z, cond), cond)}
    assert own["class_accuracy"] > 0.97 and own["frechet"] < 0.05 and own["frechet_class"] < 0.1
    blind = suite.teacher_sample(suite.teacher, z, None)  # unconditional samples, labels ignored
    scores = {m.metric: m.value for m in evaluator.evaluate(blind, cond)}
    assert abs(scores["class_accuracy"] - 1 / suite.classes) < 0.06
    assert scores["frechet_class"] > 10 * own["frechet_class"]


def test_guidance_must_be_positive():
    with pytest.raises(BadInput, match="suite.guidance"):
        create("gaussian_cond", guidance=0.0)
