"""DMD and DMD2, Distribution Matching Distillation (Yin et al., 2024a, 2024b)."""
import torch
import torch.nn.functional as F

from .base import KARRAS_GRID, KARRAS_GRID_20_980, Method, Recipe, check_positive, per_sample_sum, replace_recipe

DMD2_RECIPE = Recipe(
    sigma_init=80.0,
    generator_sigma=KARRAS_GRID_20_980,
    fake_sigma=KARRAS_GRID,
    optimizer="adamw",
    betas=(0.9, 0.999),
    weight_decay=0.01,
    grad_clip=10.0,
    warmup_kimg=140.0,  # 500 iterations at the published batch of 280
    fake_updates_per_generator_update=5,
    fresh_latents_per_phase=False,
    ema_halflife_kimg=None,
    precision="bf16",
    published=dict(batch=280, lr=2e-6, iterations="200k-550k"),
)


class DMD(Method):
    """Distribution matching: ``0.5 |x_g - sg(x_g - g)|^2`` with ``g = (f_psi - f_phi) / mean|x_g - f_phi|``.

    Gradient through ``x_g`` only; under ``weighting="none"`` (no normaliser, summed) its expected
    gradient is ``sigma^2`` times that of KL(q_sigma || p_sigma). The paper weighting normalises per
    sample and mean-reduces. DMD (v1) adds ``regression_weight`` times the mean squared distance
    between ``G(z_ref)`` and the teacher's ODE output for fixed ``z_ref`` (LPIPS in the paper), passed
    as ``pairs=(x_g_ref, x_teacher_ref)``.
    """

    name = "dmd"
    defaults = {"regression_weight": 0.25}
    recipe = replace_recipe(
        DMD2_RECIPE, fake_updates_per_generator_update=1, fresh_latents_per_phase=True,
        generator_inputs=("teacher_pairs",), precision="fp32", published=dict(regression="LPIPS, weight 0.25"),
    )

    def check(self):
        check_positive(self, "regression_weight", allow_zero=True)

    @property
    def training_recipe(self):
        return replace_recipe(self.recipe, generator_inputs=("teacher_pairs",) if self.regression_weight > 0 else ())

    def distribution_matching_loss(self, x_g, teacher, fake, cond, sigma, noise):
        """The DMD term; returns the loss and the raw direction ``f_psi - f_phi`` for logging."""
        with torch.no_grad():
            x_t, sigma = self._noised(x_g.detach(), sigma, noise, self.recipe.generator_sigma)
            f_teacher = teacher(x_t, sigma, cond=cond)
            direction = fake(x_t, sigma, cond=cond) - f_teacher
            norm = self._normaliser(x_g, f_teacher).reshape(-1, *([1] * (x_g.ndim - 1)))
            target = x_g - direction / norm
        if self.weighting == "paper":
            return 0.5 * F.mse_loss(x_g, target, reduction="mean"), direction
        return 0.5 * per_sample_sum((x_g - target) ** 2).mean(), direction

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, pairs=None, **extra):
        loss, direction = self.distribution_matching_loss(x_g, teacher, fake, cond, sigma, noise)
        logs = {"loss_dm": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt()}
        if self.regression_weight > 0:
            if pairs is None:
                raise ValueError("dmd: regression_weight > 0 needs pairs=(G(z_ref), teacher ODE output)")
            x_ref, x_teacher = pairs
            regression = F.mse_loss(x_ref, x_teacher.detach())
            logs["loss_regression"] = regression.detach()
            loss = loss + self.regression_weight * regression
        logs["loss_g"] = loss.detach()
        return loss, logs


class DMD2(DMD):
    """DMD without the regression term, ``fake_updates_per_generator_update`` (5) fake updates per
    generator update on reused samples, and an optional non-saturating GAN term.

    The GAN term needs a ``discriminator(x_t, sigma, cond) -> logits`` (in DMD2 a head on the fake
    network's bottleneck) passed as ``discriminator=``, and real images for the fake-score phase.
    """

    name = "dmd2"
    defaults = {"fake_updates_per_generator_update": 5, "gan_weight": 0.0, "gan_fake_weight": 1e-2}
    recipe = DMD2_RECIPE

    def check(self):
        ratio = self.fake_updates_per_generator_update
        if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 1:
            raise ValueError(f"dmd2: fake_updates_per_generator_update must be an integer >= 1, got {ratio!r}")
        check_positive(self, "gan_weight", allow_zero=True)
        check_positive(self, "gan_fake_weight", allow_zero=True)

    @property
    def training_recipe(self):
        gan = self.gan_weight > 0
        return replace_recipe(self.recipe, fake_updates_per_generator_update=self.fake_updates_per_generator_update,
                              generator_inputs=("discriminator",) if gan else (),
                              fake_inputs=("real_data", "discriminator") if gan else ())

    def _gan_inputs(self, x, sigma, noise):
        return self._noised(x, sigma, noise, self.recipe.generator_sigma)

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, discriminator=None, **extra):
        loss, direction = self.distribution_matching_loss(x_g, teacher, fake, cond, sigma, noise)
        logs = {"loss_dm": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt()}
        if self.gan_weight > 0:
            if discriminator is None:
                raise ValueError("dmd2: gan_weight > 0 needs discriminator=")
            x_t, s = self._gan_inputs(x_g, None, None)
            gan = F.softplus(-discriminator(x_t, s, cond)).mean()
            logs["loss_gan_g"] = gan.detach()
            loss = loss + self.gan_weight * gan
        logs["loss_g"] = loss.detach()
        return loss, logs

    def fake_score_loss(self, x_g, fake, cond=None, sigma=None, noise=None, real=None, real_cond=None,
                        discriminator=None, **extra):
        loss, logs = super().fake_score_loss(x_g, fake, cond=cond, sigma=sigma, noise=noise)
        if self.gan_weight > 0:
            if discriminator is None or real is None:
                raise ValueError("dmd2: gan_weight > 0 needs discriminator= and real= images")
            fake_t, s_fake = self._gan_inputs(x_g.detach(), None, None)
            real_t, s_real = self._gan_inputs(real, None, None)
            gan = (F.softplus(discriminator(fake_t, s_fake, cond)).mean()
                   + F.softplus(-discriminator(real_t, s_real, real_cond)).mean())
            logs["loss_gan_d"] = gan.detach()
            loss = loss + self.gan_fake_weight * gan
        return loss, logs
