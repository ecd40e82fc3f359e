"""sCM, continuous-time consistency distillation (Lu & Song, 2024, "Simplifying, Stabilizing and Scaling
Continuous-Time Consistency Models"), in the harness's EDM (sigma-space) conventions.

Sources: the paper (Algorithm 1; Sections 4 and 5; Appendix G) and NVIDIA's public re-implementation,
NVlabs/FastGen (``fastgen/methods/consistency_model/sCM.py``, ``configs/methods/config_scm.py``, read and
not copied). The authors' own code is not public.

**Parameterisation.** TrigFlow writes ``x_t = cos(t) x0 + sin(t) sigma_d z`` and the consistency model
``f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t)``. With ``sigma = sigma_d tan(t)`` the EDM
state is ``x = x_t / cos(t) = x0 + sigma z``, and EDM's preconditioning (``c_skip = cos^2 t``,
``c_out = sigma_d sin t``, ``c_in = cos(t) / sigma_d``) gives ``D(x; sigma) = cos(t) x_t + sigma_d sin(t) F_edm``:
the same function with ``F = -F_edm``. So the student is the harness's EDM-preconditioned denoiser, used
as it is, ``f(x, sigma) = D_theta(x; sigma)``; the boundary condition ``f(x, 0) = x`` holds exactly
(``c_skip(0) = 1``, ``c_out(0) = 0``), and the teacher initialises it. What differs from the paper is
``c_noise``: EDM's ``ln(sigma) / 4`` (the teacher's), not TrigFlow's ``t``; the paper's stability
analysis blames exactly this time embedding, but changing it would discard the teacher initialisation.

**The teacher's ODE.** EDM's probability-flow ODE is ``dx/dsigma = (x - D(x; sigma)) / sigma``. With
``x_t = cos(t) x`` and ``dsigma/dt = sigma_d / cos^2 t`` it becomes, in terms of the teacher denoiser,

    dx_t/dt = (cos(t) x_t - D(x_t / cos t; sigma_d tan t)) / sin(t)        (= sigma_d F_teacher)

**The loss** (Algorithm 1), with ``r`` the tangent warm-up ratio and ``F_-`` the detached student:

    g = -cos^2(t) (sigma_d F_- - dx_t/dt) - r cos(t) sin(t) (x_t + sigma_d dF_-/dt)    (= cos(t) df_-/dt at r = 1)
    g <- g / (||g|| + c)                                                               (tangent normalisation)
    L = e^{-w(t)} / sigma * mean ||F_theta - F_- - g||^2 + w(t)                       (adaptive weighting)

In sigma space every piece is a denoiser evaluation: ``df/dt = (sigma_d / cos^2 t) dD_-/dsigma``, the total
derivative along the teacher's ODE, computed by one ``torch.func.jvp`` of the student at ``(x, sigma)``
along ``(sigma_d sigma dx/dsigma, sigma_d sigma)`` (the JVP rearrangement: the factor ``sigma_d sigma``
keeps both tangents bounded, ``sigma_d (x - D_teacher)`` and ``sigma_d sigma``, so the log-sigma time
embedding gets tangent ``sigma_d``); the first term is ``cos^2(t) (D_- - D_teacher) / sin(t)``; and
``F_theta - F_- = -(D_theta - D_-) / (sigma_d sin t)``. ``||g||`` is the per-sample root mean square
(FastGen's spatially invariant norm). ``w(t)`` is a learned log-variance, ``AdaptiveWeight`` (EDM2's and
the paper's form: a linear layer on Fourier features of the noise level, starting at 0); ``1 / sigma`` is
the paper's prior weighting ``1 / (sigma_d tan t)``.

**Time embedding.** The JVP differentiates the network through its noise-level embedding, so a steep
embedding makes a steep tangent: the paper's stability analysis. The gaussian suite's MLP uses Fourier
features of ``ln(sigma) / 4`` at frequencies up to ``e^4``; there (batch 256, lr 1e-3, tangent warm-up 100,
200 generator updates, Frechet distance of the EMA generator) sCM reached 3.6 after swinging up to 25,
and 0.44 with the frequencies capped at ``e`` (rCM: 0.43 and 0.018; SiD: 0.017 and 0.022).

``weighting="none"`` drops warm-up, normalisation and weights: ``sum(D_theta * sg(dD_-/dsigma))``, whose
gradient is the limit, as the step ``Delta`` goes to 0, of the discrete consistency loss
``0.5 |f_theta(x_sigma) - sg f(x_{sigma - Delta})|^2`` divided by ``Delta`` (teacher ODE steps).
"""
import math

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .base import LOGNORMAL, SIGMA_DATA, Method, Recipe, SigmaDistribution, check_positive, expand_as_batch, per_sample_mean

SCM_SIGMA = SigmaDistribution("lognormal", mean=-1.0, std=1.4)  # P_mean, P_std (CIFAR-10, Appendix G)

SCM_RECIPE = Recipe(
    sigma_init=80.0,  # one step: f(sigma_max z); TrigFlow's t_max = arctan(80 / 0.5)
    generator_sigma=SCM_SIGMA,
    fake_sigma=LOGNORMAL,  # unused: no fake score
    lr=1e-4,  # FastGen config_scm.py (RAdam lr 1e-4; the harness has Adam and AdamW: Adam)
    optimizer="adam",
    betas=(0.9, 0.99),
    eps=1e-8,
    ema_halflife_kimg=500.0,
    dropout=0.2,  # FastGen config_scm.py: dropout 0.2 for CIFAR-10
    fake_score=False,
    generator_sample=False,
    generator_inputs=("real_data", "student", "loss_weight", "generator_updates"),
    published=dict(fid_cifar10_1step="3.66 (paper, sCD), 3.22 (FastGen)", tangent_warmup_iterations=10_000,
                   precision="fp32, TF32 off"),
)


def trig_time(sigma: torch.Tensor) -> torch.Tensor:
    """TrigFlow time of an EDM noise level: ``t = arctan(sigma / sigma_d)``."""
    return torch.atan(sigma / SIGMA_DATA)


def teacher_velocity(teacher, x, sigma, cond=None) -> torch.Tensor:
    """EDM's probability-flow ODE direction ``dx/dsigma = (x - D(x; sigma)) / sigma``."""
    return (x - teacher(x, sigma, cond=cond)) / expand_as_batch(sigma, x)


def trigflow_velocity(denoiser, x_t, t, cond=None) -> torch.Tensor:
    """The same ODE in TrigFlow time: ``dx_t/dt = (cos(t) x_t - D(x_t / cos t; sigma_d tan t)) / sin(t)``."""
    cos, sin = (expand_as_batch(f(t), x_t) for f in (torch.cos, torch.sin))
    return (cos * x_t - denoiser(x_t / cos, SIGMA_DATA * torch.tan(t), cond=cond)) / sin


def consistency_tangent(student, x, sigma, dx_dsigma, cond=None):
    """``(D(x; sigma), sigma_d sigma dD/dsigma)``: the student and its total derivative along ``dx_dsigma``.

    One forward-mode JVP, no graph, tangents ``(sigma_d sigma dx/dsigma, sigma_d sigma)``. The random state
    is restored afterwards, so a later call of the student draws the same dropout mask. Attention runs
    PyTorch's composite "math" kernel here: the fused (flash) kernels have no forward-mode derivative
    (rCM wrote its own flash-attention JVP kernel for this).
    """
    scale = SIGMA_DATA * sigma
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices), sdpa_kernel(SDPBackend.MATH):
        return torch.func.jvp(lambda x_, s_: student(x_, s_, cond=cond), (x, sigma),
                              (expand_as_batch(scale, x) * dx_dsigma, scale))


class AdaptiveWeight(nn.Module):
    """The learned log-variance ``w(sigma)``: a linear layer on fixed Fourier features of ``ln(sigma) / 4``.

    Its weights start at zero (``w = 0``, weight 1); trained with the loss's ``+ w`` term it tracks the
    log of the expected loss at each noise level, so every level contributes on the same scale.
    """

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(channels, generator=gen))
        self.register_buffer("phases", torch.rand(channels, generator=gen))
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, sigma):
        c = (sigma.log() / 4).to(self.linear.weight.dtype).reshape(-1, 1)
        features = math.sqrt(2) * torch.cos(2 * math.pi * (c * self.freqs + self.phases))
        return self.linear(features).reshape(-1)


class SCM(Method):
    """sCM distillation: the generator's denoiser is a consistency model trained on noised real data with
    the teacher's ODE tangent (see the module docstring for the derivation and the stabilisers)."""
    paper = "Lu & Song 2025, Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models (ICLR)"
    minimises = "continuous-time consistency loss"

    name = "scm"
    defaults = {"tangent_c": 0.1, "tangent_warmup_iterations": 10_000}
    recipe = SCM_RECIPE
    tangent_norm = "rms"  # ||g|| per sample: "rms" (FastGen's spatially invariant norm) or "l2"
    prior_weighting = True  # the paper's 1 / (sigma_d tan t) = 1 / sigma beside the learned weight

    def check(self):
        check_positive(self, "tangent_c")
        check_positive(self, "tangent_warmup_iterations", allow_zero=True)

    def loss_weight_network(self):
        return AdaptiveWeight() if self.weighting == "paper" else None

    def warmup_ratio(self, generator_updates) -> float:
        """Tangent warm-up ``r = min(1, updates / tangent_warmup_iterations)``; 1 under ``weighting="none"``."""
        if self.weighting == "none" or self.tangent_warmup_iterations == 0:
            return 1.0
        return min(1.0, generator_updates / self.tangent_warmup_iterations)

    def consistency_loss(self, x0, teacher, student, cond=None, sigma=None, noise=None, loss_weight=None,
                         generator_updates=0):
        """The sCM loss on data ``x0`` and its logs (``x0`` noised at ``sigma``, the recipe's when None)."""
        x, sigma = self._noised(x0, sigma, noise, self.training_recipe.generator_sigma)
        with torch.no_grad():
            f_teacher = teacher(x, sigma, cond=cond)
        f_minus, tangent = consistency_tangent(student, x, sigma, (x - f_teacher) / expand_as_batch(sigma, x), cond)
        f_theta = student(x, sigma, cond=cond)
        logs = {"tangent_rms": tangent.pow(2).mean().sqrt()}
        if self.weighting == "none":
            tangent = tangent / expand_as_batch(SIGMA_DATA * sigma, x)  # dD/dsigma
            loss = (f_theta * tangent).reshape(x.shape[0], -1).sum(1).mean()
            return loss, {**logs, "loss_scm": loss.detach()}
        t = trig_time(sigma)
        cos, sin = (expand_as_batch(f(t), x) for f in (torch.cos, torch.sin))
        r = self.warmup_ratio(generator_updates)
        first = SIGMA_DATA * cos**2 * (f_minus - f_teacher)  # sigma_d sin(t) times the tangent's first term
        g = (first + r * (tangent - first)) / (SIGMA_DATA * sin)
        norm = per_sample_mean(g**2) if self.tangent_norm == "rms" else g.reshape(g.shape[0], -1).pow(2).sum(1)
        g = g / (expand_as_batch(norm.sqrt(), g) + self.tangent_c)
        residual = per_sample_mean(((f_theta - f_minus.detach()) / (-SIGMA_DATA * sin) - g) ** 2)
        logvar = loss_weight(sigma) if loss_weight is not None else torch.zeros_like(sigma)
        prior = 1 / sigma if self.prior_weighting else torch.ones_like(sigma)
        loss = (prior * residual / logvar.exp() + logvar).mean()
        return loss, {**logs, "loss_scm": loss.detach(), "scm_residual": residual.mean().detach(),
                      "tangent_warmup": r, "logvar_mean": logvar.mean().detach()}

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, real=None, real_cond=None,
                       student=None, loss_weight=None, generator_updates=0, **extra):
        if real is None or student is None:
            raise ValueError(f"{self.name}: the consistency loss needs real= data and student= (the generator's denoiser)")
        loss, logs = self.consistency_loss(real, teacher, student, real_cond, sigma, noise, loss_weight,
                                           generator_updates)
        logs["loss_g"] = loss.detach()
        return loss, logs
