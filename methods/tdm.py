"""TDM, Trajectory Distribution Matching (Luo et al., 2025), in EDM's variables.

A K-step generator with deterministic (DDIM) steps, trained by backward simulation: a step ``i`` takes
the chain's own input ``x_in`` at level ``s_i`` and predicts ``x0``; moving along its predicted noise to
``s_mid`` (the chain's next level ``s_{i+1}``, 0 after the last step) gives the point of its trajectory
``x_mid = x0 + s_mid (x_in - x0) / s_i``. TDM matches the distribution of ``x_mid`` to the teacher's
marginal at ``s_mid`` by DMD's reverse-KL gradient at a noise level ``sigma`` drawn between ``s_mid`` and
``s_i`` (the sampling-steps-aware objective: each step's targets live on its own interval, so one fake
score serves every step): ``x_sigma = x_mid + sqrt(sigma^2 - s_mid^2) n`` follows the teacher's
``p_sigma`` exactly when ``x_mid`` follows ``p_{s_mid}``.

Generator loss (official ``train_tdm_demo.py``): ``|x0 - sg(x0 + D_teacher - D_fake)|^2 / mean|x0 -
D_teacher|``, with the gradient through ``x0`` alone. Since ``x_mid`` moves by ``(1 - s_mid / s_i)`` times
``x0``, under ``weighting="none"`` (no normaliser, summed) its expected gradient is
``2 sigma^2 / (1 - s_mid / s_i)`` times that of ``KL(q_sigma || p_sigma)`` for the step's input held fixed.

The fake score is trained data-free, as the official code does: it regresses the step's ``x0`` from
``x_sigma`` at ``sigma``, weighted by ``min(SNR, fake_snr_max)`` (SNR ``= 1 / sigma^2``) and by the official
importance weight ``exp(-mean(m^2) / 2) / exp(-mean(n^2) / 2)`` with ``m = (s_mid eps + sqrt(sigma^2 -
s_mid^2) n) / sigma`` the noise ``x_sigma`` carries over ``x0`` (``eps = (x_in - x0) / s_i``). After the last
step ``s_mid = 0``: the weight is 1 and the loss is denoising score matching of the generator's samples.

Not reproduced: the classifier-free-guidance term of the official generator target (a suite's teacher is
used as the suite defines it); the demo's ``--use_separate`` off mode (every step's targets over the whole
chain); gradient clipping of the generator only (the harness clips both networks at the recipe's norm).
"""
import torch

from .base import (RHO, SIGMA_MIN, SID_MODES, ChainPoint, Method, Recipe, SigmaDistribution, check_positive,
                   expand_as_batch, per_sample_mean, per_sample_sum)

TDM_RECIPE = Recipe(
    # The chain starts from pure noise at the top of EDM's range, as DMD2's; the official PixArt chain feeds
    # pure noise in at timestep 799 of 1000 (sigma ~ 8 on EDM's scale) and steps down 200 timesteps a step.
    sigma_init=80.0,
    # one step: sigma uniform in Karras's rho-space over (0.002, 80), the single step's interval
    generator_sigma=SigmaDistribution("karras_uniform", u_max=1.0),
    fake_sigma=SigmaDistribution("karras_uniform", u_max=1.0),
    lr=2e-5,  # --learning_rate 1e-4 for the fake score, learning_rate / 5 for the generator
    fake_lr_ratio=5.0,
    optimizer="adamw",
    betas=(0.0, 0.95),
    weight_decay=1e-2,
    grad_clip=1.0,  # --max_grad_norm 1.0 (on the generator)
    ema_halflife_kimg=None,  # --use_ema is off in the demo
    precision="bf16",  # the demo trains in fp16 mixed precision
    dropout=0.0,
    modes=SID_MODES,
    chain="deterministic",
    chain_point=True,
    published=dict(steps=4, batch="16 per GPU", iterations="500 (PixArt-alpha, 2 A800 hours)"),
)


def _between(lo: torch.Tensor, hi: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``u`` in [0, 1] mapped to (lo, hi) uniformly in Karras's ``sigma^(1/rho)``: the spacing of the chain."""
    a, b = lo.clamp_min(0) ** (1 / RHO), hi ** (1 / RHO)
    return (a + u * (b - a)) ** RHO


class TDM(Method):
    """Each step's trajectory distribution matched to the teacher's marginal on the step's own interval.

    Losses take ``trajectory=`` (a ``ChainPoint``: the step's input, its level and the next one;
    without it ``x_g`` is one step from pure noise at ``sigma_init``);
    ``sigma`` and ``noise`` may be given, as for the other methods (tests), ``mid_u`` too (``random_mid``).
    """
    paper = "Luo et al. 2025, Learning Few-Step Diffusion Models by Trajectory Distribution Matching (ICCV)"
    minimises = "reverse KL of each step's trajectory distribution to the teacher's marginal, per step interval"

    name = "tdm"
    # random_mid: --use_randmid (off in the demo), the trajectory point drawn between the next level and
    # this one; fake_snr_max: the fake loss's SNR cap (min(snr, 5))
    defaults = {"random_mid": False, "fake_snr_max": 5.0}
    recipe = TDM_RECIPE

    def check(self):
        if not isinstance(self.random_mid, bool):
            raise ValueError(f"tdm: random_mid must be true or false, got {self.random_mid!r}")
        check_positive(self, "fake_snr_max")

    def _point(self, x0, trajectory):
        """The chain point of ``x0``: ``trajectory``'s, or without one a single step from pure noise."""
        if trajectory is not None:
            return trajectory._replace(x0=x0)
        sigma = torch.full((x0.shape[0],), self.recipe.sigma_init, device=x0.device, dtype=x0.dtype)
        return ChainPoint(x0, x0, sigma, torch.zeros_like(sigma))  # s_mid = 0: the input is never used

    def _noised_point(self, point, sigma=None, noise=None, mid_u=None):
        """``(x_sigma, sigma, noise)`` for a ``ChainPoint``: its trajectory point noised up to ``sigma``."""
        x0, x_in, s_i, s_next = point
        b, like = x0.shape[0], dict(device=x0.device, dtype=x0.dtype)
        s_i, s_next = s_i.to(**like), s_next.to(**like)
        s_mid = s_next
        if self.random_mid:
            u = torch.rand(b, **like) if mid_u is None else mid_u.to(**like)
            s_mid = _between(s_next, s_i, u)
        if sigma is None:
            sigma = _between(s_mid.clamp_min(SIGMA_MIN), s_i, torch.rand(b, **like))
        sigma = sigma.to(**like)
        if noise is None:
            noise = torch.randn_like(x0)
        eps = (x_in - x0) / expand_as_batch(s_i, x0)
        x_mid = x0 + expand_as_batch(s_mid, x0) * eps
        spread = expand_as_batch((sigma**2 - s_mid**2).clamp_min(0).sqrt(), x0)
        return x_mid + spread * noise, sigma, noise

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, trajectory=None, mid_u=None,
                       **extra):
        with torch.no_grad():
            x_t, sigma, _ = self._noised_point(self._point(x_g.detach(), trajectory), sigma, noise, mid_u)
            f_teacher = teacher(x_t, sigma, cond=cond)
            direction = f_teacher - fake(x_t, sigma, cond=cond)
            target = x_g + direction
        if self.weighting == "paper":
            norm = expand_as_batch(self._normaliser(x_g, f_teacher), x_g)
            loss = ((x_g - target) ** 2 / norm).mean()
        else:
            loss = per_sample_sum((x_g - target) ** 2).mean()
        return loss, {"loss_g": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt()}

    def fake_score_loss(self, x_g, fake, cond=None, sigma=None, noise=None, trajectory=None, mid_u=None, **extra):
        x0 = x_g.detach()
        x_t, sigma, noise = self._noised_point(self._point(x0, trajectory), sigma, noise, mid_u)
        carried = (x_t - x0) / expand_as_batch(sigma, x0)  # the noise x_t carries over x0
        importance = (-0.5 * per_sample_mean(carried**2)).exp() / (-0.5 * per_sample_mean(noise**2)).exp()
        snr = (1 / sigma**2).clamp_max(self.fake_snr_max)
        loss = (snr * importance * per_sample_mean((fake(x_t, sigma, cond=cond) - x0) ** 2)).mean()
        return loss, {"loss_fake": loss.detach(), "importance_weight": importance.mean()}
