"""f-distill: with a perfect discriminator, sigma^2 times the gradient of D_f(p_sigma || q_sigma) = E_q f(p/q).

The (divergence, sigma) cases and why those sigmas: tests/divergence_cases.py.
"""
import pytest
import torch
import torch.nn.functional as F

import methods
from divergence_cases import CASES, SIGMAS
from methods import divergences



def gradients(case, closed_forms, method, name, sigma, seeds=(0, 1)):
    truth = closed_forms.f_divergence(divergences.DIVERGENCES[name].f)
    return closed_forms.with_perfect_discriminator(case, method, truth, ("f", name), sigma, seeds)


@pytest.mark.parametrize("name,sigma", CASES)
def test_gradient_is_sigma_squared_times_f_divergence_gradient(case, closed_forms, name, sigma):
    method = methods.create("fdistill", weighting="none", divergence=name, gan_weight=0.0)
    results = gradients(case, closed_forms, method, name, sigma)
    print(f"fdistill {name} sigma={sigma}: (cosine, ratio/sigma^2) =", [(c, r / sigma**2) for c, r in results])
    assert closed_forms.proportional(results, sigma**2, cos_min=0.995, rtol=0.1), results


@pytest.mark.parametrize("name", list(divergences.DIVERGENCES))
def test_paper_normalisation_keeps_the_direction(case, closed_forms, name):
    """Clamping r to [0.1, 20], the per-bin and batch normalisations and the DMD normaliser reweight
    samples; the direction stays that of the divergence (Neyman less so: the clamp caps h = 2/r at 20
    exactly in the tails Neyman weights most)."""
    method = methods.create("fdistill", divergence=name, gan_weight=0.0)
    results = gradients(case, closed_forms, method, name, SIGMAS[name][0], seeds=(0,))
    print(f"fdistill paper {name}: cosine", results[0][0])
    assert all(c > (0.75 if name == "neyman" else 0.95) for c, _ in results), results




@pytest.mark.parametrize("weighting", ["paper", "none"])
def test_h_equal_one_is_dmd2(weighting, toy):
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    f_loss, _ = methods.create("fdistill", weighting=weighting, divergence="rkl", gan_weight=0.0).generator_loss(
        x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc)
    d_loss, _ = methods.create("dmd2", weighting=weighting).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(f_loss, d_loss)
    torch.testing.assert_close(torch.autograd.grad(f_loss, x_g)[0], torch.autograd.grad(d_loss, x_g)[0])


def test_paper_weights_and_gan_term_share_the_logits(toy):
    """loss = 0.5 mean(h g)^2-form DMD term with h normalised to mean 1, plus w softplus(-D(x_t)) at the same x_t."""
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    method = methods.create("fdistill", divergence="kl", gan_weight=1e-3, ratio_bins=0)
    loss, logs = method.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc)
    x = x_g.detach()
    x_t = x + sigma[:, None] * noise
    logits = disc(x_t, sigma)
    h = logits.detach().clamp(-10, 10).exp().clamp(0.1, 20.0)
    h = h / (h.mean() + 1e-6)
    f_phi = teacher(x_t, sigma)
    g = h[:, None] * (fake(x_t, sigma) - f_phi) / (x - f_phi).abs().mean(1, keepdim=True)
    torch.testing.assert_close(loss, 0.5 * (g**2).mean() + 1e-3 * F.softplus(-logits).mean())
    assert logs["h_max"] <= 20 / 0.1 and abs(h.mean() - 1) < 1e-5
    grad = torch.autograd.grad(loss, x_g)[0]
    gan_grad = torch.autograd.grad(1e-3 * F.softplus(-disc(x_g + sigma[:, None] * noise, sigma)).mean(), x_g)[0]
    torch.testing.assert_close(grad, g / x.numel() + gan_grad)  # the GAN term reaches the generator


def test_ratio_normalised_per_noise_level_bin():
    """Bins of equal width over [0.002, 80]: r divided by the mean r of its bin (EMA rate 0)."""
    method = methods.create("fdistill", divergence="kl", ratio_bins=10)
    logits = torch.tensor([0.0, 1.0, 2.0, 0.5])
    sigma = torch.tensor([0.5, 1.0, 79.0, 70.0])  # bins 0, 0, 9, 8
    h = method.weights(logits, sigma)
    r = logits.exp()
    expected = torch.stack([r[0] / r[:2].mean(), r[1] / r[:2].mean(), torch.tensor(1.0), torch.tensor(1.0)])
    torch.testing.assert_close(h, expected / expected.mean(), atol=1e-5, rtol=1e-5)
    ema = methods.create("fdistill", divergence="kl", ratio_ema_rate=0.5)
    ema.weights(logits, sigma)
    first = 0.5 * 1.0 + 0.5 * r[:2].mean()  # the bins start at 1
    torch.testing.assert_close(ema.bin_means[0], first, rtol=1e-5, atol=1e-6)
    ema.weights(torch.zeros(4), sigma)
    torch.testing.assert_close(ema.bin_means[0], 0.5 * first + 0.5 * 1.0, rtol=1e-5, atol=1e-6)


def test_needs_a_discriminator_and_real_data(toy):
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    method = methods.create("fdistill")
    recipe = method.training_recipe
    assert recipe.generator_inputs == ("discriminator",) and recipe.fake_inputs == ("real_data", "discriminator")
    assert recipe.fake_updates_per_generator_update == 5 and not recipe.fresh_latents_per_phase
    with pytest.raises(ValueError, match="discriminator"):
        method.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    for bad in ({"divergence": "tv"}, {"ratio_lower": 30.0}, {"ratio_bins": -1}, {"ratio_ema_rate": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            methods.create("fdistill", **bad)
