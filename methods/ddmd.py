"""Decoupled DMD (Liu et al., 2025): DMD's guided gradient as CFG Augmentation plus Distribution Matching.

With a guided teacher ``D_w = D_u + w (D_c - D_u)`` DMD's direction ``D_w - D_fake`` is the sum of
``DM = D_c - D_fake`` (distribution matching of the conditional distributions) and
``CA = (w - 1)(D_c - D_u)`` (CFG augmentation: ``sigma^2`` times the gradient of ``log p_sigma(c | x)``,
so it pushes samples towards their class). Decoupled DMD weights the two separately and renoises each
at its own level (the paper's Algorithm 1): ``schedule`` is

- ``"shared"``: one level for both (DMD2 on a guided teacher, exactly);
- ``"full"``: independent levels, each over the whole range;
- ``"constrained"``: both only below the generator step's own level (the paper's ``tau > t``);
- ``"hybrid"`` (the paper's choice): CA below the step's level, DM over the whole range.

The step's level comes with ``trajectory=`` (a ``ChainPoint``); one step is ``sigma_init``, so the
constraint only bites for few-step generators. Under ``weighting="none"`` the expected gradient is
``dm_weight sigma_DM^2`` times that of ``KL(q_sigma(.|c) || p_sigma(.|c))`` minus ``ca_weight (w - 1)
sigma_CA^2`` times that of ``E_q log p_sigma(c | x)``. The paper weighting divides each term by DMD's
normaliser ``mean |x_g - D_w|`` at its own level. The paper's proxy loss has one weight for the sum; the
two weights here are the decomposition's, 1 and 1 recover it.
"""
import torch
import torch.nn.functional as F

from .base import (KARRAS_GRID_20_980, RHO, SIGMA_MAX, SIGMA_MIN, Unguided, expand_as_batch, karras_sigma,
                   per_sample_sum, replace_recipe)
from .dmd import DMD2

SCHEDULES = ("shared", "full", "constrained", "hybrid")


def grid_below(level: torch.Tensor, dist=KARRAS_GRID_20_980) -> torch.Tensor:
    """A level of ``dist``'s Karras grid drawn uniformly among those at or below ``level`` (per sample)."""
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    top = ((level.double().clamp(SIGMA_MIN, SIGMA_MAX) ** (1 / RHO) - lo) / (hi - lo) * (dist.n - 1)).floor()
    top = top.clamp(dist.lo, dist.hi)
    i = dist.lo + (torch.rand(level.shape, device=level.device, dtype=torch.float64) * (top - dist.lo + 1)).floor()
    return karras_sigma(i.clamp_max(top) / (dist.n - 1)).to(level.dtype)


class DecoupledDMD(DMD2):
    """DMD2 with the guided direction split into CA and DM, each weighted and renoised on its own schedule.

    Needs ``guidance=`` (a conditional suite's guided teacher); ``sigma``/``noise`` fix the DM term's level
    and noise, ``sigma_ca``/``noise_ca`` the CA term's (tests).
    """
    paper = "Liu et al. 2025, Decoupled DMD: CFG Augmentation as the Spear, Distribution Matching as the Shield"
    minimises = "reverse KL of the conditionals (DM) plus CFG augmentation (CA), on decoupled noise schedules"

    name = "ddmd"
    defaults = {**DMD2.defaults, "dm_weight": 1.0, "ca_weight": 1.0, "schedule": "hybrid"}

    def check(self):
        super().check()
        for key in ("dm_weight", "ca_weight"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"ddmd: {key} must be a non-negative number, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"ddmd: schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    @property
    def training_recipe(self):
        r = super().training_recipe
        return replace_recipe(r, generator_inputs=(*r.generator_inputs, "guidance"), chain_point=True)

    def _levels(self, x_g, sigma, sigma_ca, trajectory):
        b = x_g.shape[0]
        step = (trajectory.sigma if trajectory is not None
                else torch.full((b,), self.recipe.sigma_init, device=x_g.device)).to(x_g.dtype)
        constrained = self.schedule == "constrained"
        if sigma is None:
            sigma = grid_below(step) if constrained else self.recipe.generator_sigma.sample(b, device=x_g.device)
        sigma = sigma.to(device=x_g.device, dtype=x_g.dtype)
        if self.schedule == "shared":
            return sigma, sigma
        if sigma_ca is None:
            sigma_ca = (self.recipe.generator_sigma.sample(b, device=x_g.device) if self.schedule == "full"
                        else grid_below(step))
        return sigma, sigma_ca.to(device=x_g.device, dtype=x_g.dtype)

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, guidance=None, trajectory=None,
                       sigma_ca=None, noise_ca=None, discriminator=None, **extra):
        if guidance is None:  # an unguided teacher: w = 1, no CA term, DMD2's DM term (runs are refused earlier)
            guidance = Unguided(teacher)
        w = guidance.scale
        with torch.no_grad():
            x0 = x_g.detach()
            s_dm, s_ca = self._levels(x0, sigma, sigma_ca, trajectory)
            noise = torch.randn_like(x0) if noise is None else noise
            x_dm = x0 + expand_as_batch(s_dm, x0) * noise
            shared = self.schedule == "shared"
            x_ca = x_dm if shared else x0 + expand_as_batch(s_ca, x0) * (torch.randn_like(x0) if noise_ca is None
                                                                         else noise_ca)
            cond_dm = guidance.conditional(x_dm, s_dm, cond)
            cond_ca = cond_dm if shared else guidance.conditional(x_ca, s_ca, cond)
            uncond_ca = guidance.unconditional(x_ca, s_ca)
            dm = cond_dm - fake(x_dm, s_dm, cond=cond)
            ca = (w - 1) * (cond_ca - uncond_ca)
            if self.weighting == "paper":  # DMD's normaliser, with the guided prediction, at each term's level
                uncond_dm = uncond_ca if shared else guidance.unconditional(x_dm, s_dm)
                dm = dm / expand_as_batch(self._normaliser(x0, uncond_dm + w * (cond_dm - uncond_dm)), x0)
                ca = ca / expand_as_batch(self._normaliser(x0, uncond_ca + w * (cond_ca - uncond_ca)), x0)
            target = x0 + self.dm_weight * dm + self.ca_weight * ca
        if self.weighting == "paper":
            loss = 0.5 * F.mse_loss(x_g, target, reduction="mean")
        else:
            loss = 0.5 * per_sample_sum((x_g - target) ** 2).mean()
        logs = {"loss_dm": loss.detach(), "dm_rms": dm.pow(2).mean().sqrt(), "ca_rms": ca.pow(2).mean().sqrt()}
        return self._with_gan(loss, logs, x_g, cond, discriminator)
