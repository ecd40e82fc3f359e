"""An EDM denoiser around a diffusers VP-trained latent denoiser (PixArt's transformer, SD's UNet).

The pipelines are trained DDPM/VP style: ``x_vp = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` on discrete ``t`` with
``abar_t = alphas_cumprod[t]``. With ``sigma^2 = (1 - abar) / abar`` this is
``x_vp = x_edm / sqrt(1 + sigma^2)`` where ``x_edm = x0 + sigma eps``. So ``D`` scales its input
by ``1 / sqrt(1 + sigma^2)``, finds the (fractional) timestep whose discrete sigma matches by
linear interpolation in ``log sigma`` (clamped to the trained range), and turns the output into
``x0``: epsilon-prediction ``D = x - sigma eps``; v-prediction
``D = x / (1 + sigma^2) - sigma v / sqrt(1 + sigma^2)``;
sample-prediction ``D = out``. The teacher applies classifier-free guidance on the raw output
(linear, so the same in eps, v or x0 form): ``out = out_null + w (out_cond - out_null)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import BadInput


class VPDenoiser(nn.Module):
    """An EDM denoiser ``D(x, sigma, cond)`` around a diffusers VP-trained latent denoiser.

    ``kind`` is ``"transformer"`` (PixArt: text attention mask, learned-sigma output channels,
    optional resolution micro-conditions) or ``"unet"``. ``guidance_scale`` None: no guidance.
    """

    def __init__(self, net: nn.Module, kind: str, alphas_cumprod: torch.Tensor, prediction_type: str,
                 null_embeds: torch.Tensor, null_mask: torch.Tensor | None, guidance_scale: float | None = None,
                 vae_factor: int = 8):
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise BadInput(f"unsupported scheduler prediction_type {prediction_type!r}")
        self.net, self.kind, self.prediction_type = net, kind, prediction_type
        self.guidance_scale, self.vae_factor = guidance_scale, vae_factor
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt().double()
        self.register_buffer("log_sigmas", sigmas.log().float(), persistent=False)
        self.sigma_min, self.sigma_max = float(sigmas[0]), float(sigmas[-1])
        self.register_buffer("null_embeds", null_embeds, persistent=False)  # [1, L, D]
        self.register_buffer("null_mask", null_mask, persistent=False)  # [1, L] or None

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timestep whose discrete sigma equals ``sigma`` (interpolated in log sigma)."""
        log_s = sigma.float().clamp(self.sigma_min, self.sigma_max).log()
        log_sigmas = self.log_sigmas
        idx = torch.searchsorted(log_sigmas, log_s.contiguous()).clamp(1, len(log_sigmas) - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        return (idx - 1).float() + ((log_s - lo) / (hi - lo)).clamp(0, 1)

    def _text(self, cond: Any, batch: int, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        if cond is None:
            embeds = self.null_embeds.expand(batch, -1, -1)
            mask = None if self.null_mask is None else self.null_mask.expand(batch, -1)
            return embeds, mask
        mask = cond.get("prompt_attention_mask")
        return cond["prompt_embeds"].to(device), None if mask is None else mask.to(device)

    def _call_net(self, x, t, embeds, mask):
        dtype = next(self.net.parameters()).dtype
        x, embeds = x.to(dtype), embeds.to(dtype)
        if self.kind == "unet":
            out = self.net(x, t, encoder_hidden_states=embeds, return_dict=False)[0]
        else:
            added = {"resolution": None, "aspect_ratio": None}
            if getattr(self.net, "use_additional_conditions", False):  # PixArt 1024px micro-conditions
                h, w = x.shape[-2] * self.vae_factor, x.shape[-1] * self.vae_factor
                added = {"resolution": torch.tensor([[h, w]], dtype=dtype, device=x.device).expand(x.shape[0], 2),
                         "aspect_ratio": torch.tensor([[h / w]], dtype=dtype, device=x.device).expand(x.shape[0], 1)}
            out = self.net(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=t,
                           added_cond_kwargs=added, return_dict=False)[0]
        if out.shape[1] == 2 * x.shape[1]:  # learned variance channels: keep the mean prediction
            out = out[:, : x.shape[1]]
        return out.float()

    def vp_output(self, x_vp: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        """The network's raw prediction (eps, v or x0) at VP input ``x_vp`` and timesteps ``t``,
        with classifier-free guidance when this denoiser has a guidance scale."""
        b = x_vp.shape[0]
        embeds, mask = self._text(cond, b, x_vp.device)
        if self.guidance_scale is None:
            return self._call_net(x_vp, t, embeds, mask)
        null_e, null_m = self._text(None, b, x_vp.device)
        length = max(embeds.shape[1], null_e.shape[1])
        embeds2 = torch.cat([pad_sequence(null_e, length), pad_sequence(embeds, length)])
        mask2 = None if mask is None else torch.cat([pad_sequence(null_m, length), pad_sequence(mask, length)])
        out_null, out_cond = self._call_net(torch.cat([x_vp, x_vp]), torch.cat([t, t]), embeds2, mask2).chunk(2)
        return out_null + self.guidance_scale * (out_cond - out_null)

    def features(self, x, sigma, cond=None) -> torch.Tensor:
        """Pooled activations ``[B, C]`` of the network's middle block at ``(x, sigma)``: the input of
        a GAN / density-ratio head (the UNet's mid block, or the middle transformer block)."""
        blocks = None if self.kind == "unet" else self.net.transformer_blocks
        block = self.net.mid_block if blocks is None else blocks[len(blocks) // 2]
        captured = []
        handle = block.register_forward_hook(lambda m, i, out: captured.append(out[0] if isinstance(out, tuple) else out))
        try:
            sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
            c_in = (1 + sigma.reshape(-1, 1, 1, 1) ** 2).rsqrt()
            self._call_net(c_in * x, self.sigma_to_t(sigma), *self._text(cond, x.shape[0], x.device))
        finally:
            handle.remove()
        h = captured[0].float()
        return h.mean(dim=(2, 3)) if h.ndim == 4 else h.mean(1)

    def forward(self, x, sigma, cond=None):
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(x.shape[0])
        s = sigma.reshape(-1, 1, 1, 1)
        c_in = (1 + s**2).rsqrt()
        out = self.vp_output(c_in * x, self.sigma_to_t(sigma), cond)
        if self.prediction_type == "epsilon":
            return x - s * out
        if self.prediction_type == "v_prediction":
            return c_in**2 * x - s * c_in * out
        return out


def pad_sequence(t: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (dim 1) to ``length``; padded positions are masked out."""
    if t.shape[1] == length:
        return t
    pad = [0, 0] * (t.ndim - 2) + [0, length - t.shape[1]]
    return torch.nn.functional.pad(t, pad)
