"""Uni-Instruct: at alpha = 0.5 with a perfect discriminator, sigma^4 / 2 times the gradient of the expanded
f-divergence's integrand ``E_q h(p/q) |s_q - s_p|^2`` (h = r^2 f''(r)); the base loss without the weighting.

The (divergence, sigma) cases and why those sigmas: tests/divergence_cases.py.
"""
import pytest
import torch
import torch.nn.functional as F

import methods
from divergence_cases import CASES, SIGMAS
from methods import divergences



def gradients(case, closed_forms, method, name, sigma, seeds=(0, 1)):
    truth = closed_forms.weighted_fisher(divergences.DIVERGENCES[name].h)
    return closed_forms.with_perfect_discriminator(case, method, truth, ("wf", name), sigma, seeds)


@pytest.mark.parametrize("name,sigma", CASES)
def test_gradient_is_expanded_divergence_gradient(case, closed_forms, name, sigma):
    method = methods.create("uni_instruct", weighting="none", divergence=name, alpha=0.5, gan_weight=0.0)
    results = gradients(case, closed_forms, method, name, sigma)
    print(f"uni_instruct {name} sigma={sigma}: (cosine, ratio/(sigma^4/2)) =",
          [(c, r / (sigma**4 / 2)) for c, r in results])
    assert closed_forms.proportional(results, sigma**4 / 2, cos_min=0.995, rtol=0.1), results


def test_reverse_kl_integrand_is_the_fisher_divergence(case, closed_forms):
    """h = 1: the integrand is the Fisher divergence, whose gradient has a closed form (no sampling)."""
    sigma, theta = 1.5, case.theta(0)
    method = methods.create("uni_instruct", weighting="none", divergence="rkl", alpha=0.5, gan_weight=0.0)
    cosine, ratio = closed_forms.compare(case.loss_gradient(method, theta, sigma),
                                         case.divergence_gradient(closed_forms.fisher, theta, sigma))
    assert cosine > 0.999 and abs(ratio / (sigma**4 / 2) - 1) < 0.02, (cosine, ratio)


@pytest.mark.parametrize("name", list(divergences.DIVERGENCES))
def test_paper_weighting_keeps_the_direction(case, closed_forms, name):
    """Stop-gradient ratio weights, clamped and normalised by their batch mean, and SiD's normaliser:
    the paper's reweighting, which drops the ratio's own dependence on x_t, still points the same way."""
    method = methods.create("uni_instruct", divergence=name, alpha=0.5, gan_weight=0.0)
    results = gradients(case, closed_forms, method, name, SIGMAS[name][0], seeds=(0,))
    print(f"uni_instruct paper {name}: cosine", results[0][0])
    assert results[0][0] > 0.9, results




@pytest.mark.parametrize("weighting", ["paper", "none"])
def test_reduces_to_sid_without_the_weighting(weighting, toy):
    """Before the warm-up ends, or with h = 1 and no GAN term, the loss and its gradient are SiD's."""
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    sid_loss, _ = methods.create("sid", alpha=0.7, weighting=weighting).generator_loss(
        x_g, teacher, fake, sigma=sigma, noise=noise)
    sid_grad = torch.autograd.grad(sid_loss, x_g)[0]
    warming = methods.create("uni_instruct", divergence="kl", alpha=0.7, weighting=weighting)
    reverse = methods.create("uni_instruct", divergence="rkl", alpha=0.7, gan_weight=0.0, weighting=weighting)
    for method, kimg in ((warming, 199.0), (reverse, None), (reverse, 500.0)):
        loss, _ = method.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc, kimg=kimg)
        torch.testing.assert_close(loss, sid_loss)
        torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], sid_grad)
    after, _ = warming.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc, kimg=200.0)
    assert not torch.allclose(after, sid_loss)


def test_paper_loss_by_hand(toy):
    """Forward KL, alpha = 1: 100 mean[(h Delta.(f_psi - x_g) + 0.01 dim softplus(-D)) / sg(mean|x_g - f_phi|)]."""
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    loss, _ = methods.create("uni_instruct").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise,
                                                            discriminator=disc)

    def by_hand(x):
        x_t = x + sigma[:, None] * noise
        f_phi, f_psi, logits = teacher(x_t, sigma), fake(x_t, sigma), disc(x_t, sigma)
        h = logits.detach().clamp(-10, 10).exp().clamp(1e-3, 1e3)
        h = h / (h.mean() + 1e-6)
        sid = h * ((f_phi - f_psi) * (f_psi - x)).sum(1)
        gan = 5 * F.softplus(-logits.clamp(-10, 10))
        return ((100 * sid + 0.01 * gan) / (x - f_phi).abs().mean(1).detach()).mean()

    torch.testing.assert_close(loss, by_hand(x_g))
    torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], torch.autograd.grad(by_hand(x_g), x_g)[0])


def test_recipe_and_errors(toy):
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    method = methods.create("uni_instruct")
    recipe = method.training_recipe
    assert recipe.fake_inputs == ("real_data", "discriminator") and "kimg" in recipe.generator_inputs
    assert recipe.sigma_init == 2.5 and recipe.generator_sigma.u_max == 0.8
    assert method.alpha == 1.0 and method.divergence == "kl" and method.gan_start_kimg == 200.0
    assert not methods.create("uni_instruct", divergence="rkl", gan_weight=0.0).training_recipe.fake_inputs
    with pytest.raises(ValueError, match="discriminator"):
        method.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    with pytest.raises(ValueError, match="divergence"):
        methods.create("uni_instruct", divergence="tv")
