"""SiD: at alpha = 0.5 its generator-loss gradient is sigma^4 / 2 times the Fisher divergence's gradient."""
import pytest
import torch

import methods


@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gradient_at_alpha_half_is_fisher_gradient(case, closed_forms, sigma):
    sid = methods.create("sid", alpha=0.5, weighting="none")
    results = []
    for seed in (0, 1):
        theta = case.theta(seed)
        results.append(closed_forms.compare(case.loss_gradient(sid, theta, sigma),
                                            case.divergence_gradient(closed_forms.fisher, theta, sigma)))
    print(f"sid sigma={sigma}: (cosine, ratio/(sigma^4/2)) =", [(c, r / (sigma**4 / 2)) for c, r in results])
    assert closed_forms.proportional(results, sigma**4 / 2), results


def test_published_alpha_is_not_the_fisher_gradient(case, closed_forms):
    """alpha = 1.2 (the default) deliberately departs from the Fisher gradient: the check can fail."""
    sid = methods.create("sid", weighting="none")
    theta, sigma = case.theta(0), 0.5
    cosine, ratio = closed_forms.compare(case.loss_gradient(sid, theta, sigma),
                                         case.divergence_gradient(closed_forms.fisher, theta, sigma))
    assert not closed_forms.proportional([(cosine, ratio)], sigma**4 / 2)


def toy_denoisers():
    teacher = lambda x, s, cond=None: 0.6 * x + 0.1 * s[:, None]  # noqa: E731
    fake = lambda x, s, cond=None: 0.3 * x.tanh() - 0.2  # noqa: E731
    return teacher, fake


def test_paper_weighting_normaliser_and_scale():
    """loss = 100 * mean_b [ sum_i ((1-a) D^2 + D (f_psi - x_g)) / sg(mean_i |x_g - f_phi|) ]."""
    teacher, fake = toy_denoisers()
    alpha = 1.2
    x_g = torch.randn(3, 5, requires_grad=True)
    sigma, noise = torch.tensor([0.3, 1.0, 4.0]), torch.randn(3, 5)
    loss, _ = methods.create("sid", alpha=alpha).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)

    def by_hand(x, detach_normaliser=True):
        x_t = x + sigma[:, None] * noise
        f_phi, f_psi = teacher(x_t, sigma), fake(x_t, sigma)
        delta = f_phi - f_psi
        norm = (x - f_phi).abs().mean(1)
        norm = norm.detach() if detach_normaliser else norm
        return 100 * (((1 - alpha) * delta**2 + delta * (f_psi - x)).sum(1) / norm).mean()

    torch.testing.assert_close(loss, by_hand(x_g))
    (grad,) = torch.autograd.grad(loss, x_g)
    torch.testing.assert_close(grad, torch.autograd.grad(by_hand(x_g), x_g)[0])
    # The normaliser is a stop-gradient: letting it carry gradient changes the result.
    assert not torch.allclose(grad, torch.autograd.grad(by_hand(x_g, detach_normaliser=False), x_g)[0])


def test_none_weighting_has_no_normaliser_or_scale():
    teacher, fake = toy_denoisers()
    x_g = torch.randn(3, 5)
    sigma, noise = torch.tensor([0.3, 1.0, 4.0]), torch.randn(3, 5)
    x_t = x_g + sigma[:, None] * noise
    delta = teacher(x_t, sigma) - fake(x_t, sigma)
    expected = (-0.2 * delta**2 + delta * (fake(x_t, sigma) - x_g)).sum(1).mean()
    loss, _ = methods.create("sid", weighting="none").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(loss, expected)


def test_recipe_is_published():
    recipe = methods.create("sid").training_recipe
    assert recipe.sigma_init == 2.5 and recipe.optimizer == "adam" and recipe.betas == (0.0, 0.999)
    assert recipe.eps == 1e-8 and recipe.fake_updates_per_generator_update == 1 and recipe.fresh_latents_per_phase
    assert (recipe.generator_sigma.kind, recipe.generator_sigma.u_max) == ("karras_uniform", 0.8)
    assert (recipe.fake_sigma.kind, recipe.fake_sigma.mean, recipe.fake_sigma.std) == ("lognormal", -1.2, 1.2)
    assert recipe.ema_halflife_kimg == 500.0
