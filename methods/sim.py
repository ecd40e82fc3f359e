"""SIM, Score Implicit Matching (Luo et al., 2024).

SIM has no public training code; its weighting and noise range are not confirmed, so this
implementation takes SiD's (sigma_init 2.5, sigma = karras(u), u ~ U(0, 0.8), normaliser and x100)
and SiD's whole training recipe (lr 1e-5, network modes, augmentation at p = 0.12).
Its unpublished choices are hyperparameters, the exact estimator the default: ``d_term=False`` drops
``d(y)`` and ``normaliser="none"`` drops SiD's per-sample normaliser, as code by the same first
author for a related task does; ``huber_c`` sets pseudo-Huber's constant.
"""
import math

import torch

from .base import Method, check_positive, per_sample_sum
from .sid import SID_RECIPE

DISTANCES = ("pseudo_huber", "l2")
NORMALISERS = ("sid", "none")


class SIM(Method):
    """Score-gradient-theorem surrogate ``d(y) - <grad d(y), f_psi(x_t) - x_g>``, y = f_psi - f_phi.

    Gradients flow through ``x_g``, both denoisers' inputs and the argument of ``grad d``; with
    ``weighting="none"`` the expected gradient is that of ``E_q d(f_psi - f_phi)`` at that sigma.
    ``distance="l2"`` is twice SiD at alpha 0.5. ``huber_c`` is in pixel units; ``None`` means
    ``0.00054 * sqrt(dim)`` (the consistency-models constant). ``d_term=False`` leaves out ``d(y)``
    (no longer that gradient: on the Gaussian test case 0.68 to 1.09 of its size, cosine down to 0.83); ``normaliser="none"``
    keeps the paper weighting's x100 but not SiD's ``sg(mean |x_g - f_phi|)``.
    """
    paper = "Luo et al. 2024, One-Step Diffusion Distillation through Score Implicit Matching (NeurIPS)"
    minimises = "a general score-based divergence (distance d)"

    name = "sim"
    defaults = {"distance": "pseudo_huber", "huber_c": None, "d_term": True, "normaliser": "sid"}
    recipe = SID_RECIPE
    loss_scale = 100.0

    def check(self):
        if self.distance not in DISTANCES:
            raise ValueError(f"sim: unknown distance {self.distance!r} (known: {', '.join(DISTANCES)})")
        if self.huber_c is not None:
            check_positive(self, "huber_c")
        if not isinstance(self.d_term, bool):
            raise ValueError(f"sim: d_term must be true or false, got {self.d_term!r}")
        if self.normaliser not in NORMALISERS:
            raise ValueError(f"sim: unknown normaliser {self.normaliser!r} (known: {', '.join(NORMALISERS)})")

    def huber_c_for(self, dim: int) -> float:
        """The pseudo-Huber constant in use for samples of ``dim`` numbers."""
        return self.huber_c if self.huber_c is not None else 0.00054 * math.sqrt(dim)

    def in_use(self, latent_shape):
        return {**self.config(), "huber_c": self.huber_c_for(math.prod(latent_shape))}

    def distance_and_grad(self, y: torch.Tensor):
        """Per-sample ``d(y)`` and ``grad d(y)`` (same shape as ``y``)."""
        sq = per_sample_sum(y**2)
        if self.distance == "l2":
            return sq, 2 * y
        c = self.huber_c_for(y[0].numel())
        root = (sq + c**2).sqrt()
        return root - c, y / root.reshape(-1, *([1] * (y.ndim - 1)))

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, **extra):
        x_t, sigma = self._noised(x_g, sigma, noise, self.recipe.generator_sigma)
        f_teacher, f_fake = teacher(x_t, sigma, cond=cond), fake(x_t, sigma, cond=cond)
        y = f_fake - f_teacher
        d, grad_d = self.distance_and_grad(y)
        per_sample = -per_sample_sum(grad_d * (f_fake - x_g))
        if self.d_term:
            per_sample = per_sample + d
        if self.normaliser == "sid":
            per_sample = per_sample / self._normaliser(x_g, f_teacher)
        scale = self.loss_scale if self.weighting == "paper" else 1.0
        loss = scale * per_sample.mean()
        return loss, {"loss_g": loss.detach(), "distance": d.detach().mean()}
