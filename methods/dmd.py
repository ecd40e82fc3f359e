"""DMD and DMD2, Distribution Matching Distillation (Yin et al., 2024a, 2024b)."""
import torch
import torch.nn.functional as F

from .base import (KARRAS_GRID, KARRAS_GRID_20_980, SID_MODES, Method, Recipe, check_positive, per_sample_sum,
                   replace_recipe)

# DMD2 (tianweiy/DMD2, main/edm/train_edm.py). Its constant_with_warmup scheduler has 500 warm-up
# steps, but accelerate steps a prepared scheduler once per process on every call, and the ImageNet
# launcher runs 7 processes: the learning rate rises linearly from 0 over 500 / 7 = 71.4 iterations
# (the code's own comment: "warms up from 0 to max_lr in 500 / num_gpu steps").
DMD2_RECIPE = Recipe(
    sigma_init=80.0,
    generator_sigma=KARRAS_GRID_20_980,
    fake_sigma=KARRAS_GRID,
    lr=2e-6,  # experiments/imagenet/*_lr2e-6_scratch.sh: --generator_lr 2e-6 --guidance_lr 2e-6
    optimizer="adamw",
    betas=(0.9, 0.999),
    weight_decay=0.01,
    grad_clip=10.0,
    warmup_iterations=500 / 7,
    fake_updates_per_generator_update=5,
    fresh_latents_per_phase=False,
    ema_halflife_kimg=None,
    precision="bf16",
    dropout=0.0,  # edm_network.py builds every network with dropout 0
    modes=SID_MODES,  # the official loop keeps all in train mode: the same thing at dropout 0
    fake_loss_reduction="mean",  # edm_guidance.py compute_loss_fake: torch.mean over B x C x H x W
    published=dict(batch=280, iterations="200k (GAN, FID 1.51), 410k (no GAN, FID 2.61), +140k at lr 5e-7 "
                   "from the no-GAN run (GAN, FID 1.28)"),
)


class DMD(Method):
    """Distribution matching: ``0.5 |x_g - sg(x_g - g)|^2`` with ``g = (f_psi - f_phi) / mean|x_g - f_phi|``.

    Gradient through ``x_g`` only; under ``weighting="none"`` (no normaliser, summed) its expected
    gradient is ``sigma^2`` times that of KL(q_sigma || p_sigma). The paper weighting normalises per
    sample and mean-reduces. DMD (v1) adds ``regression_weight`` times the mean squared distance
    between ``G(z_ref)`` and the teacher's ODE output for fixed ``z_ref`` (LPIPS in the paper), passed
    as ``pairs=(x_g_ref, x_teacher_ref)``.
    """
    paper = "Yin et al. 2024, One-step Diffusion with Distribution Matching Distillation (CVPR)"
    minimises = "reverse KL (plus a regression loss on teacher pairs)"

    name = "dmd"
    defaults = {"regression_weight": 0.25}
    recipe = replace_recipe(
        DMD2_RECIPE, fake_updates_per_generator_update=1, fresh_latents_per_phase=True,
        warmup_iterations=0.0,  # DMD2's warm-up comes from its launcher; DMD has no public training code
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
    paper = "Yin et al. 2024, Improved Distribution Matching Distillation (NeurIPS)"
    minimises = "reverse KL (plus a GAN term)"

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
        return self._with_gan(loss, logs, x_g, cond, discriminator)

    def _with_gan(self, loss, logs, x_g, cond, discriminator):
        """``loss`` plus the generator's GAN term when ``gan_weight > 0``, and the logs with ``loss_g``."""
        if self.gan_weight > 0:
            if discriminator is None:
                raise ValueError(f"{self.name}: gan_weight > 0 needs discriminator=")
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
