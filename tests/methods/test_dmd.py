"""DMD and DMD2: distribution matching follows sigma^2 times the gradient of KL(q_sigma || p_sigma)."""
import pytest
import torch
import torch.nn.functional as F

import methods
from methods.base import karras_sigma


@pytest.mark.parametrize("name,hparams", [("dmd", {"regression_weight": 0.0}), ("dmd2", {})])
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_gradient_is_sigma_squared_times_kl_gradient(case, closed_forms, name, hparams, sigma):
    method = methods.create(name, weighting="none", **hparams)
    results = []
    for seed in (0, 1):
        theta = case.theta(seed)
        results.append(closed_forms.compare(case.loss_gradient(method, theta, sigma),
                                            case.divergence_gradient(closed_forms.kl, theta, sigma)))
    print(f"{name} sigma={sigma}: (cosine, ratio/sigma^2) =", [(c, r / sigma**2) for c, r in results])
    assert closed_forms.proportional(results, sigma**2), results


def toy_denoisers():
    teacher = lambda x, s, cond=None: 0.6 * x + 0.1 * s[:, None]  # noqa: E731
    fake = lambda x, s, cond=None: 0.3 * x.tanh() - 0.2  # noqa: E731
    return teacher, fake


def inputs(batch=3, dim=5):
    x_g = torch.randn(batch, dim, requires_grad=True)
    return x_g, torch.linspace(0.3, 4.0, batch), torch.randn(batch, dim)


def test_regression_term_with_pairs():
    """DMD adds regression_weight * mean (G(z_ref) - teacher ODE output)^2; the teacher side is a constant."""
    teacher, fake = toy_denoisers()
    x_g, sigma, noise = inputs()
    x_ref = torch.randn(4, 5, requires_grad=True)
    x_teacher = torch.randn(4, 5, requires_grad=True)
    without, _ = methods.create("dmd", regression_weight=0.0).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    dmd = methods.create("dmd", regression_weight=0.25)
    with_pairs, logs = dmd.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, pairs=(x_ref, x_teacher))
    regression = (x_ref - x_teacher).pow(2).mean()
    torch.testing.assert_close(with_pairs, without + 0.25 * regression)
    torch.testing.assert_close(logs["loss_regression"], regression.detach())
    g_ref, g_teacher = torch.autograd.grad(with_pairs, (x_ref, x_teacher), allow_unused=True)
    torch.testing.assert_close(g_ref, 0.25 * 2 * (x_ref - x_teacher).detach() / x_ref.numel())
    assert g_teacher is None
    assert dmd.training_recipe.generator_inputs == ("teacher_pairs",)
    assert not methods.create("dmd", regression_weight=0.0).training_recipe.generator_inputs
    with pytest.raises(ValueError, match="pairs"):
        dmd.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)


@pytest.mark.parametrize("name", ["dmd", "dmd2"])
def test_paper_weighting_per_sample_normaliser_and_mean(name):
    """loss = 0.5 mean (x_g - sg(x_g - g))^2, g = (f_psi - f_phi) / mean_i |x_g - f_phi| per sample."""
    teacher, fake = toy_denoisers()
    x_g, sigma, noise = inputs()
    hparams = {"regression_weight": 0.0} if name == "dmd" else {}
    loss, _ = methods.create(name, **hparams).generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    x = x_g.detach()
    x_t = x + sigma[:, None] * noise
    f_phi = teacher(x_t, sigma)
    g = (fake(x_t, sigma) - f_phi) / (x - f_phi).abs().mean(1, keepdim=True)
    torch.testing.assert_close(loss, 0.5 * (g**2).mean())
    torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], g / x.numel())


def test_none_weighting_sums_without_normaliser():
    teacher, fake = toy_denoisers()
    x_g, sigma, noise = inputs()
    loss, _ = methods.create("dmd2", weighting="none").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    x_t = x_g.detach() + sigma[:, None] * noise
    direction = fake(x_t, sigma) - teacher(x_t, sigma)
    torch.testing.assert_close(loss, 0.5 * direction.pow(2).sum(1).mean())
    torch.testing.assert_close(torch.autograd.grad(loss, x_g)[0], direction / 3)


class SpyDiscriminator(torch.nn.Module):
    """A linear toy discriminator that records what it was shown."""

    def __init__(self, dim):
        super().__init__()
        self.linear = torch.nn.Linear(dim + 1, 1)
        self.seen = []

    def forward(self, x, sigma, cond=None):
        self.seen.append((x, sigma))
        return self.linear(torch.cat([x, sigma.log()[:, None]], 1)).squeeze(1)


GRID = karras_sigma(torch.arange(1000) / 999)


def on_grid(sigma, lo=20, hi=980):
    return all(torch.isclose(GRID[lo:hi + 1], s).any() for s in sigma.float())


def test_dmd2_gan_terms():
    """Generator: w_G softplus(-D(x_t)); fake phase: w_D [softplus(D(fake_t)) + softplus(-D(real_t))]."""
    teacher, fake = toy_denoisers()
    x_g, sigma, noise = inputs(batch=64)
    dmd2 = methods.create("dmd2", gan_weight=3e-3, gan_fake_weight=1e-2)
    gan_recipe, plain_recipe = dmd2.training_recipe, methods.create("dmd2").training_recipe
    assert gan_recipe.generator_inputs == ("discriminator",)
    assert set(gan_recipe.fake_inputs) == {"real_data", "discriminator"}
    assert not plain_recipe.generator_inputs and not plain_recipe.fake_inputs
    disc = SpyDiscriminator(5)
    plain, _ = methods.create("dmd2").generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)

    loss, logs = dmd2.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise, discriminator=disc)
    (x_t, s), = disc.seen
    assert on_grid(s) and not torch.equal(x_t, x_g)
    gan_g = F.softplus(-disc(x_t, s)).mean()
    torch.testing.assert_close(loss, plain + 3e-3 * gan_g)
    torch.testing.assert_close(logs["loss_gan_g"], gan_g.detach())
    assert torch.autograd.grad(loss - plain, x_g)[0].abs().sum() > 0  # the GAN term reaches the generator

    disc.seen.clear()
    real = torch.randn(64, 5) + 2.0
    fake_loss, logs = dmd2.fake_score_loss(x_g, fake, sigma=sigma, noise=noise, real=real, discriminator=disc)
    dsm, _ = methods.create("dmd2").fake_score_loss(x_g, fake, sigma=sigma, noise=noise)
    (fake_t, s_fake), (real_t, s_real) = disc.seen
    assert on_grid(s_fake) and on_grid(s_real)
    assert not fake_t.requires_grad  # generator samples are detached in the fake-score phase
    gan_d = F.softplus(disc(fake_t, s_fake)).mean() + F.softplus(-disc(real_t, s_real)).mean()
    torch.testing.assert_close(fake_loss, dsm + 1e-2 * gan_d)
    torch.testing.assert_close(logs["loss_gan_d"], gan_d.detach())
    assert torch.autograd.grad(fake_loss, disc.linear.weight)[0].abs().sum() > 0

    with pytest.raises(ValueError, match="discriminator"):
        dmd2.generator_loss(x_g, teacher, fake, sigma=sigma, noise=noise)
    with pytest.raises(ValueError, match="real"):
        dmd2.fake_score_loss(x_g, fake, sigma=sigma, noise=noise, discriminator=disc)


def test_dmd2_recipe_is_published():
    recipe = methods.create("dmd2").training_recipe
    assert recipe.fake_updates_per_generator_update == 5 and not recipe.fresh_latents_per_phase
    assert recipe.optimizer == "adamw" and recipe.betas == (0.9, 0.999)
    assert recipe.weight_decay == 0.01 and recipe.grad_clip == 10.0
    assert recipe.sigma_init == 80.0 and recipe.ema_halflife_kimg is None and recipe.precision == "bf16"
    assert (recipe.generator_sigma.lo, recipe.generator_sigma.hi, recipe.generator_sigma.n) == (20, 980, 1000)
    assert (recipe.fake_sigma.lo, recipe.fake_sigma.hi) == (0, 999)
    assert methods.create("dmd2", fake_updates_per_generator_update=3).training_recipe.fake_updates_per_generator_update == 3
    dmd = methods.create("dmd").training_recipe
    assert dmd.fake_updates_per_generator_update == 1 and dmd.fresh_latents_per_phase
    assert dmd.generator_sigma == recipe.generator_sigma and dmd.optimizer == "adamw"
