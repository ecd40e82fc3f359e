"""Uni-Instruct, one-step diffusion through unified diffusion divergence instruction (Wang et al., 2025).

The paper expands an f-divergence over the diffusion (its Theorem 3.1): at each noise level the
integrand is ``E_q h(r) |s_q - s_p|^2``, ``h(r) = r^2 f''(r)``, ``r = p/q``. Its gradient, derived
here as the paper's Theorem 3.2 does, has two parts: the score-identity (SIM) term ``h(r) * Delta .
(f_psi - x_g)`` and a squared term weighted by ``h(r) - r h'(r)``, all differentiated through
``x_t`` (into the teacher, the fake score and the discriminator). This is SiD's loss with the two
terms reweighted: ``(1-alpha) (h - r h') |Delta|^2 + h Delta . (f_psi - x_g)``; at ``alpha = 0.5``
and ``weighting="none"`` its expected gradient is ``sigma^4 / 2`` times the gradient of the expanded
divergence's integrand. ``divergence="rkl"`` (``h = 1``) is SiDA, i.e. SiD plus the GAN term.

The released code (a-little-hoof/Uni_Instruct, ``fsim_training_loop.py``) is incomplete, so where it
departs from the paper this follows the paper: it takes the ratio as ``-L_GAN / (1 - L_GAN)`` of the
generator's BCE value (here ``exp(logit)``), leaves the reverse-KL branch undefined and marks the JS
and chi-squared branches FIXME. Taken from the code: SiD's form at ``alpha = 1`` as the base (so the
squared term vanishes under the paper defaults), ratio weights as stop-gradients clamped to
[1e-3, 1e3] and normalised over the batch ("variance reduction"; by the batch mean here, the sum in
the code), the x100 scale and SiD normaliser, the GAN term ``lsg_gan = 0.01``, and the schedule: pure
SiD until ``gan_start_kimg`` (200), then the weighted loss plus the GAN term.
"""
from . import divergences
from .base import check_positive, per_sample_sum, replace_recipe
from .sida import SiDA


class UniInstruct(SiDA):
    """SiD/SiDA with the expanded f-divergence's density-ratio weights, switched on after a warm-up.

    Needs ``discriminator=`` (logit ``log p/q``); under ``weighting="none"`` the ratio is exact and
    differentiated through its input, under ``"paper"`` it is a clamped, batch-normalised constant.
    """
    paper = "Wang et al. 2025, Uni-Instruct: One-step Diffusion Model through Unified Diffusion Divergence Instruction"
    minimises = "expanded f-divergence"

    name = "uni_instruct"
    defaults = {"divergence": "kl", "alpha": 1.0, "gan_weight": 0.01, "gan_fake_weight": 1.0,
                "gan_start_kimg": 200.0, "ratio_lower": 1e-3, "ratio_upper": 1e3}
    recipe = replace_recipe(SiDA.recipe, published=dict(batch=256, lr=1e-5, loss_scale=100.0, budget_mimg=300,
                                                        divergence="kl (Forward-KL)"))
    adversarial_mix = 1.0  # the released Forward-KL branch adds the GAN term without averaging

    def check(self):
        super().check()
        self.f = divergences.get(self.divergence, self.name)
        for key in ("ratio_lower", "ratio_upper"):
            check_positive(self, key)

    @property
    def needs_discriminator(self) -> bool:
        return self.gan_weight > 0 or self.divergence != "rkl"

    def score_terms(self, delta, f_fake, x_g, x_t, sigma, cond, discriminator, kimg):
        if self.divergence == "rkl" or not (kimg is None or kimg >= self.gan_start_kimg):
            return super().score_terms(delta, f_fake, x_g, x_t, sigma, cond, discriminator, kimg)
        if discriminator is None:
            raise ValueError(f"{self.name}: divergence {self.divergence!r} needs discriminator=")
        logits = discriminator(x_t, sigma, cond)
        if self.weighting == "none":  # exact: the ratio's dependence on x_t is part of the gradient
            ratio = logits.exp()
            h, h_minus = self.f.h(ratio), self.f.h_minus_r_dh(ratio)
        else:
            ratio = divergences.density_ratio(logits, self.ratio_lower, self.ratio_upper).to(delta.dtype)
            scale = self.f.h(ratio).mean() + 1e-6
            h, h_minus = self.f.h(ratio) / scale, self.f.h_minus_r_dh(ratio) / scale
        squared = (1 - self.alpha) * h_minus * per_sample_sum(delta**2)
        per_sample = squared + h * per_sample_sum(delta * (f_fake - x_g))
        return per_sample, {"h_mean": h.detach().mean(), "ratio_mean": ratio.detach().mean()}

