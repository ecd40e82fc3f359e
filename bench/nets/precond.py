"""EDM preconditioning (Karras et al., 2022) and the one-step generator built from a denoiser."""
from __future__ import annotations

import torch
from torch import nn

from methods.base import SIGMA_DATA, ChainPoint

from .routed import prototype


class EDMPrecond(nn.Module):
    """``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, cond)`` around a raw network ``model``.

    ``model(x, noise_labels, class_labels=None)`` is any architecture in this package; ``cond`` is
    passed through as its class labels (one-hot or embeddings, as the model expects). With
    ``label_dim`` > 0 (EDM's class-conditional networks) a missing ``cond`` means all-zero labels,
    and labels are moved to the input's device.
    ``augment_labels`` (EDM's 9 augmentation labels) go to models built with ``augment_dim``.
    ``img_resolution``, ``img_channels``, ``sigma_min`` and ``sigma_max`` describe the network as
    EDM's checkpoints do; they do not change the computation.
    """

    def __init__(self, model: nn.Module, sigma_data: float = SIGMA_DATA, use_fp16: bool = False, label_dim: int = 0,
                 img_resolution: int | None = None, img_channels: int | None = None,
                 sigma_min: float = 0.0, sigma_max: float = float("inf")):
        super().__init__()
        self.model, self.sigma_data, self.use_fp16, self.label_dim = model, sigma_data, use_fp16, label_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def features(self, x, sigma, cond=None):
        """The raw network's bottleneck features at the preconditioned input (``model.features``)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return self.model.features(x / (s**2 + self.sigma_data**2).sqrt(), sigma.log() / 4, cond)

    @property
    def augment_dim(self) -> int:
        """How many augment labels the model takes (EDM's ``augment_dim``; 0 for none)."""
        return int(getattr(self.model, "init_kwargs", {}).get("augment_dim", 0) or 0)

    def forward(self, x, sigma, cond=None, augment_labels=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(x.shape[0])
        if self.label_dim:
            cond = (torch.zeros(1, self.label_dim, device=x.device) if cond is None
                    else cond.to(x.device, torch.float32).reshape(-1, self.label_dim))
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        c_noise = sigma.log() / 4  # stays float32: only the image path runs in fp16
        dtype = torch.float16 if (self.use_fp16 and x.device.type == "cuda") else torch.float32
        extra = {} if augment_labels is None else {"augment_labels": augment_labels.to(x.device, torch.float32)}
        out = self.model((c_in * x).to(dtype), c_noise, cond, **extra)
        return c_skip * x + c_out * out.to(torch.float32)


class OneStepGenerator(nn.Module):
    """``G(z) = D(sigma_init * z; sigma_init)``: a denoiser evaluated once at a fixed noise level."""

    def __init__(self, denoiser: nn.Module, sigma_init: float):
        super().__init__()
        self.denoiser, self.sigma_init = denoiser, float(sigma_init)

    def forward(self, z, cond=None):
        sigma = torch.full((z.shape[0],), self.sigma_init, device=z.device)
        return self.denoiser(self.sigma_init * z, sigma, cond=cond)

    def training_sample(self, z, cond=None):
        """The sample a training step puts its losses on: the one step itself."""
        return self(z, cond)

    def training_point(self, z, cond=None) -> ChainPoint:
        """``training_sample`` with where on the generator's chain it was made (one step: from pure noise)."""
        x_in = self.sigma_init * z
        sigma = torch.full((z.shape[0],), self.sigma_init, device=z.device)
        return ChainPoint(self.denoiser(x_in, sigma, cond=cond), x_in, sigma, torch.zeros_like(sigma))


CHAINS = ("stochastic", "deterministic")


def chain_sigmas(sigma_init: float, steps: int, sigma_min: float = 0.002, rho: float = 7.0) -> tuple[float, ...]:
    """A K-step generator's noise levels: the first ``steps`` of EDM's Karras schedule of ``steps + 1``
    levels from ``sigma_init`` down to ``sigma_min`` (the last, ~0, is where the chain ends). ``steps = 1``
    is ``(sigma_init,)``; 4 steps from 80 are 80, 17.5, 2.52 and 0.170."""
    hi, lo = float(sigma_init) ** (1 / rho), sigma_min ** (1 / rho)
    return (float(sigma_init),) + tuple((hi + i / steps * (lo - hi)) ** rho for i in range(1, steps))


class FewStepGenerator(OneStepGenerator):
    """A K-step generator: ``x_1 = D(sigma_1 z; sigma_1)``, then the next step's input at ``sigma_k``.

    ``chain="stochastic"`` (DMD2's multi-step sampler; consistency models' multistep sampling) re-noises
    each output with fresh noise, ``x_k = D(x_{k-1} + sigma_k eps_k; sigma_k)``; ``"deterministic"``
    (TDM's DDIM steps) moves along the predicted noise instead: the next input is
    ``x0 + sigma_k (x_in - x0) / sigma_{k-1}``, so a sample is a function of ``z`` alone.

    ``training_sample`` is DMD2's backward simulation: the chain runs without gradients to make each
    sample's input at a step ``k`` drawn uniformly per sample, as the generator itself would reach it at
    sampling time, and the step-``k`` output is returned with gradients. Every method's losses then act
    on the generator's output at each of its steps (DMD2 with ``backward_simulation``); the first
    noise level is ``sigma_init``, so one step is ``OneStepGenerator`` exactly.
    """

    def __init__(self, denoiser: nn.Module, sigmas: tuple[float, ...], chain: str = "stochastic"):
        super().__init__(denoiser, sigmas[0])
        if chain not in CHAINS:
            raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
        self.sigmas, self.chain = tuple(float(s) for s in sigmas), chain

    def _step(self, x_in, sigma: float, cond):
        return self.denoiser(x_in, torch.full((x_in.shape[0],), sigma, device=x_in.device), cond=cond)

    def _next_input(self, x_in, x0, sigma: float, sigma_next: float):
        if self.chain == "deterministic":
            return x0 + sigma_next / sigma * (x_in - x0)
        return x0 + sigma_next * torch.randn_like(x0)

    def forward(self, z, cond=None):
        x_in = self.sigmas[0] * z
        x = self._step(x_in, self.sigmas[0], cond)
        for previous, sigma in zip(self.sigmas, self.sigmas[1:]):
            x_in = self._next_input(x_in, x, previous, sigma)
            x = self._step(x_in, sigma, cond)
        return x

    def training_sample(self, z, cond=None):
        return self.training_point(z, cond).x0

    def training_point(self, z, cond=None) -> ChainPoint:
        k = torch.randint(0, len(self.sigmas), (z.shape[0],)).to(z.device)
        with torch.no_grad():  # K - 1 passes of the current generator make each step's input
            inputs = [self.sigmas[0] * z]
            for previous, sigma in zip(self.sigmas, self.sigmas[1:]):
                x = self._step(inputs[-1], previous, cond)
                inputs.append(self._next_input(inputs[-1], x, previous, sigma))
        x_in = torch.stack(inputs)[k, torch.arange(z.shape[0], device=z.device)]
        levels = torch.tensor((*self.sigmas, 0.0), device=z.device)
        sigma, sigma_next = levels[k], levels[k + 1]
        return ChainPoint(self.denoiser(x_in, sigma, cond=cond), x_in, sigma, sigma_next)


class BottleneckDiscriminator(nn.Module):
    """A GAN logit from the fake denoiser's bottleneck features (DMD2): ``head(features(x_t))``.

    Trained with the non-saturating loss on real against generated samples, its logit estimates
    ``log p/q`` at the noised sample: DMD2's GAN head and the density-ratio discriminator of
    f-distill, SiDA and Uni-Instruct. The fake network is shared, not copied, so the GAN loss also
    trains its trunk; ``fake`` must offer ``features(x_t, sigma, cond) -> [B, ...]``.
    """

    def __init__(self, fake: nn.Module, sample_shape: tuple[int, ...]):
        super().__init__()
        self.fake = [fake]  # a list keeps it out of this module's parameters and state
        device = next(fake.parameters()).device
        with torch.no_grad():
            probe = prototype(fake).features(torch.zeros(1, *sample_shape, device=device), torch.ones(1, device=device))
        self.head = nn.Linear(probe[0].numel(), 1).to(device)

    def forward(self, x, sigma, cond=None):
        return self.head(self.fake[0].features(x, sigma, cond).flatten(1)).squeeze(1)
