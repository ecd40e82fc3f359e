"""DI, Diff-Instruct (Luo et al., 2023)."""
from .base import LOGNORMAL, Method, Recipe, per_sample_sum


class DI(Method):
    """``< sg(f_psi(x_t) - f_phi(x_t)), x_g >``: the integral-KL gradient, through ``x_g`` only.

    The expected gradient is ``sigma^2`` times that of KL(q_sigma || p_sigma). The published loss
    already has unit weight in denoiser space, so ``"paper"`` and ``"none"`` coincide.
    """

    name = "di"
    defaults = {}
    recipe = Recipe(
        sigma_init=1.0,
        generator_sigma=LOGNORMAL,
        fake_sigma=LOGNORMAL,
        optimizer="adam",
        betas=(0.0, 0.999),
        ema_halflife_kimg=500.0,
        published=dict(batch=128, lr=1e-5, budget_mimg=200, loss_scale=1.0),
    )

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, **extra):
        x_t, sigma = self._noised(x_g.detach(), sigma, noise, self.recipe.generator_sigma)
        direction = (fake(x_t, sigma, cond=cond) - teacher(x_t, sigma, cond=cond)).detach()
        loss = per_sample_sum(direction * x_g).mean()
        return loss, {"loss_g": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt()}
