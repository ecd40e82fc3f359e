"""SNOOPI's PG-SB (Nguyen et al., 2024): SwiftBrush's VSD with a random guidance scale for both teachers.

Proper Guidance SwiftBrush draws the classifier-free guidance scale ``w ~ U(guidance_min, guidance_max)``
(the paper's ``kappa``; Table 6 of v1, Table 6 of v3: ``(0.5, 4)`` for SDv1.5 and SDv2.1, ``(0.5, 3)`` for
PixArt-alpha) and guides the frozen teacher and the fake score (SwiftBrush's "LoRA teacher") at that same
``w``: ``D_w = D(., null) + w (D(., c) - D(., null))`` for both (v1 Table 2: guiding both is best). The
paper writes the expectation over ``kappa`` with no word on per-sample draws; ``guidance_draw="step"``
(default) draws one ``w`` per loss call, ``"sample"`` one per sample (the same expected gradient).

For the fake score to have a null condition it is trained with label dropout: SwiftBrush's
``train_swiftbrush.py`` replaces the LoRA teacher's prompt by the null prompt with probability 0.1 per
step, for the whole batch; ``fake_label_dropout`` does the same with ``cond=None`` (the null class).

Expected gradient. With ``s_w = (1 - w) grad log q_sigma(x) + w grad log q_sigma(x | c)`` the guided score
of the generator (and likewise the teacher's ``p``), the direction ``D_fake,w - D_teacher,w`` is
``sigma^2 (s_q,w - s_p,w)``, so under ``weighting="none"`` the expected gradient is ``sigma^2`` times that of
``w E_c KL(q_sigma(.|c) || p_sigma(.|c)) + (1 - w) KL(q_sigma || p_sigma)``: the conditional reverse KLs
and the class-marginal one (generator classes as drawn, teacher marginal its null). Equivalently,
``E_c E_{q_sigma(.|c)} log(q~_w / p~_w)`` with ``q~_w = q_sigma^(1-w) q_sigma(.|c)^w`` the unnormalised
guided densities: the reverse KL between the generator's and the teacher's ``w``-guided noised families,
taken under the generator's own conditionals. ``w = 1`` is DI on the conditionals.

The paper weighting is SwiftBrush's: its target ``x0 - sigma_t^2 (eps_teacher - eps_lora)`` (VP
``alpha_t, sigma_t``) moves ``x0`` by ``alpha_t sigma_t (D_fake - D_teacher) = sigma / (1 + sigma^2)
(D_fake - D_teacher)`` on EDM's ``sigma``, mean-reduced. Not here: SBv2's clamped CLIP loss (weight 0.1,
margin 0.37; needs text), and NASA, SNOOPI's inference-time negative prompt (``bench/nets/nasa.py``),
which steers cross-attention and does not apply to class labels.
"""
import math

import torch

from .base import (KARRAS_GRID, KARRAS_GRID_20_980, SID_MODES, Method, Recipe, Unguided, expand_as_batch,
                   per_sample_mean, per_sample_sum)

DRAWS = ("step", "sample")


class SNOOPI(Method):
    """PG-SB: the VSD direction between the fake score and the teacher, both guided at a random ``w``.

    Needs ``guidance=`` (a conditional suite's guided teacher; its own scale is not used). ``sigma``,
    ``noise`` and ``guidance_scale`` (a number or ``[B]``) fix the level, noise and scale (tests).
    """
    paper = "Nguyen et al. 2024, SNOOPI: Supercharged One-step Diffusion Distillation with Proper Guidance"
    minimises = "reverse KL of the w-guided families, w drawn uniformly per step (VSD with random-scale CFG)"

    name = "snoopi"
    defaults = {"guidance_min": 0.5, "guidance_max": 4.0, "guidance_draw": "step", "fake_label_dropout": 0.1}
    recipe = Recipe(
        sigma_init=80.0,  # pure noise at the top of EDM's range (SwiftBrush: SD's last timestep)
        generator_sigma=KARRAS_GRID_20_980,  # train_swiftbrush.py: VSD timesteps in [20, 981) of 1000
        fake_sigma=KARRAS_GRID,  # the LoRA teacher's timesteps in [0, 1000)
        lr=1e-6,  # v1 and v3 Table 6: lr of student 1e-6 (lr of LoRA teacher 1e-3: a LoRA's rate, see published)
        optimizer="adamw",  # the paper's AdamW; train_swiftbrush.py: betas (0.9, 0.999), weight decay 0
        betas=(0.9, 0.999),
        grad_clip=1.0,  # train_swiftbrush.py --max_grad_norm 1.0
        fresh_latents_per_phase=False,  # the LoRA update reuses the step's detached generator samples
        ema_halflife_kimg=None,  # --use_ema off
        precision="bf16",  # Table 6: mixed precision BF16
        dropout=0.0,
        modes=SID_MODES,
        fake_loss_reduction="mean",  # F.mse_loss over every element
        generator_inputs=("guidance",),
        published=dict(batch=64, iterations="60k (SDv1.5), 40k (SDv2.1), 60k (PixArt-alpha)",
                       guidance="U(0.5, 4) SDv1.5/SDv2.1, U(0.5, 3) PixArt-alpha",
                       fake="LoRA rank 64, scaling 128, lr 1e-3", clip_loss="SBv2's, weight 0.1, margin 0.37"),
    )

    def check(self):
        for key in ("guidance_min", "guidance_max"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (math.isfinite(value)
                                                                                    and value >= 0):
                raise ValueError(f"snoopi: {key} must be a finite non-negative number, got {value!r}")
        if self.guidance_min > self.guidance_max:
            raise ValueError(f"snoopi: guidance_min {self.guidance_min} is above guidance_max {self.guidance_max}")
        if self.guidance_draw not in DRAWS:
            raise ValueError(f"snoopi: guidance_draw must be one of {', '.join(DRAWS)}, got {self.guidance_draw!r}")
        p = self.fake_label_dropout
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"snoopi: fake_label_dropout must be a probability in [0, 1], got {p!r}")

    def draw_guidance(self, batch: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """Guidance scales ``[batch]`` from ``U(guidance_min, guidance_max)``: one for all or one each."""
        n = batch if self.guidance_draw == "sample" else 1
        u = torch.rand(n, device=device, dtype=dtype)
        return (self.guidance_min + (self.guidance_max - self.guidance_min) * u).expand(batch)

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, guidance=None,
                       guidance_scale=None, **extra):
        if guidance is None:  # an unguided teacher: its cond=None part is the null (runs are refused earlier)
            guidance = Unguided(teacher)
        with torch.no_grad():
            x0 = x_g.detach()
            x_t, sigma = self._noised(x0, sigma, noise, self.recipe.generator_sigma)
            w = (self.draw_guidance(x0.shape[0], x0.device, x0.dtype) if guidance_scale is None
                 else torch.as_tensor(guidance_scale, device=x0.device, dtype=x0.dtype).expand(x0.shape[0]))
            wb = expand_as_batch(w, x0)
            null = guidance.unconditional(x_t, sigma)
            f_teacher = null + wb * (guidance.conditional(x_t, sigma, cond) - null)
            null = fake(x_t, sigma, cond=None)
            f_fake = null + wb * (fake(x_t, sigma, cond=cond) - null)
            direction = f_fake - f_teacher
            if self.weighting == "paper":  # SwiftBrush's sigma_t^2 on eps: alpha_t sigma_t on x0
                direction = direction * expand_as_batch(sigma / (1 + sigma**2), x0)
        reduce = per_sample_mean if self.weighting == "paper" else per_sample_sum
        loss = reduce(direction * x_g).mean()
        return loss, {"loss_g": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt(),
                      "guidance_scale": w.mean()}

    def fake_score_loss(self, x_g, fake, cond=None, sigma=None, noise=None, **extra):
        """The base denoising loss; with probability ``fake_label_dropout`` the step's batch gets the null
        class (``cond=None``), so that the fake score's unconditional part is the generator's marginal."""
        if cond is not None and self.fake_label_dropout > 0 and torch.rand(()).item() < self.fake_label_dropout:
            cond = None
        return super().fake_score_loss(x_g, fake, cond=cond, sigma=sigma, noise=noise, **extra)
