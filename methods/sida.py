"""SiDA, adversarial Score identity Distillation (Zhou et al., 2024).

Read from the SiD repository's Apache-2.0 SiDA loss and loops (not copied). The discriminator is a
head on the fake score network's encoder, so the fake network trains on denoising plus the GAN
loss. Generator: SiD's normalised loss x100 and, once ``kimg >= gan_start_kimg`` (200 in the
published loop), ``0.5 * (100 L_SiD + gan_weight L_GAN)`` with ``L_GAN = dim * BCE(clamp(logit), 1)``
divided by SiD's normaliser. Fake score: EDM denoising loss plus ``gan_fake_weight * lambda(sigma) *
(BCE(real) + BCE(fake)) / 2``, real and generated samples noised with the same sigma and noise.
Weights (``lsg 100``, ``lsg_gan 0.01``, ``lsd 1``) are those of the published run scripts.
Not reproduced: the published loop also skips generator steps for the first 100 kimg, clips the
fake network's gradients by value at 1 and drops NaN samples; here the runner's recipe applies.
"""
import torch.nn.functional as F

from .base import SIGMA_DATA, check_positive, per_sample_sum, replace_recipe
from .sid import SID_RECIPE, SiD


class SiDA(SiD):
    """SiD plus a non-saturating GAN term on the fake network's features (``discriminator=``).

    With ``gan_weight=0`` it is SiD exactly, under either weighting.
    """
    paper = "Zhou et al. 2025, Adversarial Score identity Distillation (ICLR)"
    minimises = "Fisher divergence plus a GAN term"

    name = "sida"
    defaults = {"alpha": 1.2, "gan_weight": 0.01, "gan_fake_weight": 1.0, "gan_start_kimg": 200.0}
    recipe = replace_recipe(SID_RECIPE, generator_inputs=("discriminator", "kimg"),
                            fake_inputs=("real_data", "discriminator"),
                            published=dict(batch=256, lr=1e-5, loss_scale=100.0, gan_weight=0.01))
    adversarial_mix = 0.5  # the published loop averages the SiD and GAN losses once the GAN is on

    def check(self):
        super().check()
        for key in ("gan_weight", "gan_fake_weight", "gan_start_kimg"):
            check_positive(self, key, allow_zero=True)

    @property
    def training_recipe(self):
        return self.recipe if self.needs_discriminator else replace_recipe(self.recipe, generator_inputs=(),
                                                                           fake_inputs=())

    @property
    def needs_discriminator(self) -> bool:
        return self.gan_weight > 0

    def gan_active(self, kimg) -> bool:
        """Whether the generator's GAN term is on (``kimg=None``: the schedule is over)."""
        return self.gan_weight > 0 and (kimg is None or kimg >= self.gan_start_kimg)

    def work_key(self, kimg) -> tuple:
        # the generator's GAN term (and Uni-Instruct's density ratio) add discriminator passes from here on
        return (kimg >= self.gan_start_kimg,)

    def score_terms(self, delta, f_fake, x_g, x_t, sigma, cond, discriminator, kimg):
        """Per-sample score-distillation loss before normalisation; SiD's here."""
        return per_sample_sum((1 - self.alpha) * delta**2 + delta * (f_fake - x_g)), {}

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, discriminator=None, kimg=None,
                       **extra):
        x_t, sigma = self._noised(x_g, sigma, noise, self.recipe.generator_sigma)
        f_teacher, f_fake = teacher(x_t, sigma, cond=cond), fake(x_t, sigma, cond=cond)
        delta = f_teacher - f_fake
        per_sample, logs = self.score_terms(delta, f_fake, x_g, x_t, sigma, cond, discriminator, kimg)
        paper = self.weighting == "paper"
        loss = (self.loss_scale if paper else 1.0) * per_sample
        if self.gan_active(kimg):
            if discriminator is None:
                raise ValueError(f"{self.name}: gan_weight > 0 needs discriminator=")
            logits = discriminator(x_t, sigma, cond)
            gan = x_g[0].numel() * F.softplus(-(logits.clamp(-10, 10) if paper else logits))
            logs["loss_gan_g"] = gan.detach().mean()
            loss = loss + self.gan_weight * gan
            if paper:
                loss = self.adversarial_mix * loss
        loss = (loss / self._normaliser(x_g, f_teacher)).mean()
        logs.update(loss_g=loss.detach(), delta_rms=delta.detach().pow(2).mean().sqrt())
        return loss, logs

    def fake_score_loss(self, x_g, fake, cond=None, sigma=None, noise=None, real=None, real_cond=None,
                        discriminator=None, **extra):
        if self.gan_weight == 0:
            return super().fake_score_loss(x_g, fake, cond=cond, sigma=sigma, noise=noise)
        if discriminator is None or real is None:
            raise ValueError(f"{self.name}: gan_weight > 0 needs discriminator= and real= images")
        x0 = x_g.detach()
        x_t, sigma = self._noised(x0, sigma, noise, self.recipe.fake_sigma)
        weight = 1 / sigma**2 + 1 / SIGMA_DATA**2
        dsm = weight * per_sample_sum((fake(x_t, sigma, cond=cond) - x0) ** 2)
        real_t = real.to(x0.dtype) + (x_t - x0)  # the same sigma and noise as the generated samples
        bce = (F.softplus(-discriminator(real_t, sigma, real_cond)) + F.softplus(discriminator(x_t, sigma, cond))) / 2
        gan = weight * bce
        loss = (dsm + self.gan_fake_weight * gan).mean()
        return loss, {"loss_fake": loss.detach(), "loss_gan_d": gan.detach().mean()}

