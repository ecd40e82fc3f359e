"""f-distill, one-step diffusion with f-divergence distribution matching (Xu et al., 2025).

Read from the paper and NVlabs FastGen's Apache-2.0 ``f_distill.py`` (not copied): DMD2 with its
distribution-matching direction reweighted per sample by ``h(r) = r^2 f''(r)``, where ``r = p/q`` at
the noised sample comes from the GAN discriminator's logit (``r = exp(logit)``) evaluated at the same
``x_t``; the GAN generator term uses those same logits. FastGen's defaults: logits clamped to
[-10, 10], ``r`` clamped to [0.1, 20], ``r`` divided by its mean within 10 equal-width noise-level bins
(an EMA over steps at ``ratio_ema_rate``, 0 on CIFAR-10, 0.5 on ImageNet-64), ``h`` divided by its
batch mean. The FastGen reduction is DMD2's: the DMD normaliser and a mean over all elements.
Differences: FastGen all-reduces the bin statistics and the mean of ``h`` over processes (here each
process normalises its own micro-batch), and the bins' EMA is not part of the checkpoint (a resumed
run restarts it at 1; with the CIFAR-10 rate 0 nothing is lost).
"""
import torch
import torch.nn.functional as F

from . import divergences
from .base import SIGMA_MAX, SIGMA_MIN, check_positive, expand_as_batch, per_sample_sum, replace_recipe
from .dmd import DMD2, DMD2_RECIPE


class FDistill(DMD2):
    """DMD2 whose direction ``f_psi - f_phi`` is weighted per sample by ``h(r)`` of ``divergence``.

    With ``weighting="none"`` (exact ``r``, no clamping, no normalisation, summed) and ``gan_weight=0``
    the expected gradient is ``sigma^2`` times that of ``D_f(p_sigma || q_sigma) = E_q f(p/q)``.
    ``divergence="rkl"`` (``h = 1``) is DMD2 exactly. Needs ``discriminator=`` (logit ``log p/q``).
    """
    paper = "Xu et al. 2025, One-step Diffusion Models with f-Divergence Distribution Matching"
    minimises = "an f-divergence (reverse KL, JS, ...)"

    name = "fdistill"
    defaults = {"divergence": "js", "fake_updates_per_generator_update": 5, "gan_weight": 1e-3,
                "gan_fake_weight": 1e-2, "ratio_lower": 0.1, "ratio_upper": 20.0, "ratio_bins": 10,
                "ratio_ema_rate": 0.0}
    recipe = replace_recipe(DMD2_RECIPE, generator_inputs=("discriminator",), fake_inputs=("real_data", "discriminator"),
                            warmup_iterations=0.0,  # FastGen: warm_up_steps [0]
                            published=dict(batch="2048 (CIFAR-10), 512 (ImageNet-64)", lr="1e-4 (CIFAR-10), 2e-6 (ImageNet-64)",
                                          iterations="100k (CIFAR-10, kl), 600k (ImageNet-64, js)"))

    def check(self):
        super().check()
        self.f = divergences.get(self.divergence, self.name)
        for key in ("ratio_lower", "ratio_upper"):
            check_positive(self, key)
        if self.ratio_lower >= self.ratio_upper:
            raise ValueError(f"fdistill: ratio_lower must be below ratio_upper, got {self.ratio_lower}, {self.ratio_upper}")
        if not isinstance(self.ratio_bins, int) or isinstance(self.ratio_bins, bool) or self.ratio_bins < 0:
            raise ValueError(f"fdistill: ratio_bins must be an integer >= 0 (0: no binning), got {self.ratio_bins!r}")
        if not 0 <= self.ratio_ema_rate < 1:
            raise ValueError(f"fdistill: ratio_ema_rate must be in [0, 1), got {self.ratio_ema_rate!r}")
        self.bin_means = torch.ones(max(self.ratio_bins, 1))

    @property
    def training_recipe(self):
        return replace_recipe(self.recipe, fake_updates_per_generator_update=self.fake_updates_per_generator_update)  # always a discriminator

    def weights(self, logits, sigma):
        """Per-sample ``h(r)``: exact under ``weighting="none"``, clamped and normalised under ``"paper"``."""
        if self.weighting == "none":
            return self.f.h(divergences.density_ratio(logits, None, None))
        ratio = divergences.density_ratio(logits, self.ratio_lower, self.ratio_upper)
        if self.ratio_bins:
            ratio = ratio / self._bin_mean(ratio, sigma)
        return divergences.normalise_by_batch_mean(self.f.h(ratio))

    def _bin_mean(self, ratio, sigma):
        """The (EMA of the) mean ratio in each sample's noise-level bin, equal widths over [smin, smax]."""
        width = (SIGMA_MAX - SIGMA_MIN) / self.ratio_bins
        idx = ((sigma.double() - SIGMA_MIN) / width).floor().long().clamp(0, self.ratio_bins - 1)
        count = torch.bincount(idx, minlength=self.ratio_bins).float()
        total = torch.bincount(idx, weights=ratio.double(), minlength=self.ratio_bins).float()
        bins = self.bin_means.to(ratio.device)
        seen = count > 0
        bins[seen] = self.ratio_ema_rate * bins[seen] + (1 - self.ratio_ema_rate) * total[seen] / count[seen]
        self.bin_means = bins
        return bins[idx] + 1e-6

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, discriminator=None, **extra):
        if discriminator is None:
            raise ValueError("fdistill: needs discriminator= (its logit estimates log p/q)")
        x_t, sigma = self._noised(x_g, sigma, noise, self.recipe.generator_sigma)
        logits = discriminator(x_t, sigma, cond)  # carries the GAN term's gradient to the generator
        h = self.weights(logits, sigma).to(x_g.dtype)
        with torch.no_grad():
            f_teacher = teacher(x_t, sigma, cond=cond)
            direction = fake(x_t, sigma, cond=cond) - f_teacher
            scale = h / self._normaliser(x_g, f_teacher)
            target = x_g - expand_as_batch(scale, x_g) * direction
        if self.weighting == "paper":
            loss = 0.5 * F.mse_loss(x_g, target, reduction="mean")
        else:
            loss = 0.5 * per_sample_sum((x_g - target) ** 2).mean()
        logs = {"loss_dm": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt(),
                "h_min": h.min().detach(), "h_max": h.max().detach()}
        if self.gan_weight > 0:
            gan = F.softplus(-logits).mean()
            logs["loss_gan_g"] = gan.detach()
            loss = loss + self.gan_weight * gan
        logs["loss_g"] = loss.detach()
        return loss, logs

