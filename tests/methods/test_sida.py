"""SiDA: SiD plus the GAN term on the fake network's features, with the published weights and schedule."""
import pytest
import torch
import torch.nn.functional as F

import methods
from methods.base import SIGMA_DATA




@pytest.mark.parametrize("weighting", ["paper", "none"])
def test_without_gan_weight_is_sid(case, closed_forms, weighting, toy):
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    sid, _ = methods.create("sid", weighting=weighting).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    sida = methods.create("sida", gan_weight=0.0, weighting=weighting)
    loss, _ = sida.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(loss, sid)
    assert sida.training_recipe.generator_inputs == sida.training_recipe.fake_inputs == ()
    fake_sid, _ = methods.create("sid").fake_score_loss(x_g, fake, sigma=sigma, noise=noise)
    torch.testing.assert_close(sida.fake_score_loss(x_g, fake, sigma=sigma, noise=noise)[0], fake_sid)
    # ... so at alpha = 0.5 it inherits SiD's closed form: sigma^4 / 2 times the Fisher gradient.
    method, theta, s = methods.create("sida", alpha=0.5, gan_weight=0.0, weighting="none"), case.theta(0), 0.5
    cosine, ratio = closed_forms.compare(case.loss_gradient(method, theta, s),
                                         case.divergence_gradient(closed_forms.fisher, theta, s))
    assert cosine > 0.999 and abs(ratio / (s**4 / 2) - 1) < 0.02


def test_generator_loss_by_hand_and_schedule(toy):
    """Before 200 kimg: SiD x100. After: 0.5 (100 L_SiD + 0.01 dim softplus(-clamp(D))), over SiD's normaliser."""
    teacher, fake, x_g, sigma, noise = toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise
    disc = toy.discriminator
    sida = methods.create("sida")
    sid, _ = methods.create("sid").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    early, _ = sida.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc, kimg=199.9)
    torch.testing.assert_close(early, sid)
    loss, logs = sida.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc, kimg=200.0)

    def by_hand(x):
        x_t = x + sigma[:, None] * noise
        f_phi, f_psi = teacher(x_t, sigma), fake(x_t, sigma)
        delta = f_phi - f_psi
        sid = ((1 - 1.2) * delta**2 + delta * (f_psi - x)).sum(1)
        gan = 5 * F.softplus(-disc(x_t, sigma).clamp(-10, 10))
        return (0.5 * (100 * sid + 0.01 * gan) / (x - f_phi).abs().mean(1).detach()).mean()

    torch.testing.assert_close(loss, by_hand(x_g))
    torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], torch.autograd.grad(by_hand(x_g), x_g)[0])
    assert logs["loss_gan_g"] > 0
    with pytest.raises(ValueError, match="discriminator"):
        sida.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)


def test_fake_score_loss_trains_discriminator_on_same_noise(toy):
    """lambda(sigma) [|f_psi(x_t) - x|^2 + (softplus(-D(real + sigma n)) + softplus(D(x + sigma n))) / 2]."""
    teacher, fake, x_g, sigma, noise, disc, linear = (
        toy.teacher, toy.fake, toy.x_g, toy.sigma, toy.noise, toy.discriminator, toy.linear)
    real = torch.randn(6, 5) + 1.0
    sida = methods.create("sida")
    recipe = sida.training_recipe
    assert recipe.fake_inputs == ("real_data", "discriminator") and recipe.generator_inputs == ("discriminator", "kimg")
    assert recipe.fake_sigma.kind == "lognormal"
    loss, logs = sida.fake_score_loss(x_g, fake, sigma=sigma, noise=noise, real=real, discriminator=disc)
    x = x_g.detach()
    x_t, real_t = x + sigma[:, None] * noise, real + sigma[:, None] * noise
    weight = 1 / sigma**2 + 1 / SIGMA_DATA**2
    dsm = weight * ((fake(x_t, sigma) - x) ** 2).sum(1)
    gan = weight * (F.softplus(-disc(real_t, sigma)) + F.softplus(disc(x_t, sigma))) / 2
    torch.testing.assert_close(loss, (dsm + gan).mean())
    torch.testing.assert_close(logs["loss_gan_d"], gan.detach().mean())
    assert torch.autograd.grad(loss, linear.weight)[0].abs().sum() > 0
    with pytest.raises(ValueError, match="real"):
        sida.fake_score_loss(x_g, fake, sigma=sigma, noise=noise, discriminator=disc)
