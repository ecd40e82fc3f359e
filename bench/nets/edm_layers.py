"""The layers of EDM's denoisers (``bench.nets.edm``), re-implemented with the module and parameter
names of NVlabs' released checkpoints: weight-initialised linear and convolution layers (with EDM's
resampling filters), group norm, the U-Net block with optional attention, and the noise embeddings.
Each keeps its constructor arguments in ``init_kwargs`` for the checkpoint loader to compare."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def constructor_arguments(local_vars: dict) -> dict:
    """A constructor's arguments as called, defaults filled in (``locals()`` at its first line)."""
    return {k: v for k, v in local_vars.items() if k not in ("self", "__class__")}


def random_weight(shape, mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    """Random weights of ``shape`` by the named scheme (the four EDM uses)."""
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (2 * torch.rand(*shape) - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (2 * torch.rand(*shape) - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"unknown init mode {mode!r}")


class Linear(nn.Module):
    """Fully connected layer; weights are cast to the input's dtype (fp16 execution)."""

    def __init__(self, in_features, out_features, bias=True, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        args = constructor_arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = nn.Parameter(random_weight([out_features, in_features], **fans) * init_weight)
        self.bias = nn.Parameter(random_weight([out_features], **fans) * init_bias) if bias else None

    def forward(self, x):
        x = x @ self.weight.to(x.dtype).t()
        return x if self.bias is None else x + self.bias.to(x.dtype)


class Conv2d(nn.Module):
    """Convolution with optional 2x up- or downsampling by a separable FIR ``resample_filter``.

    ``kernel=0`` means resampling only (no weights). The filter is a buffer only when resampling.
    ``fused_resample`` convolves and resamples in one strided pass (NCSN++'s residual encoder).
    """

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False,
                 resample_filter=(1, 1), fused_resample=False, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        args = constructor_arguments(locals())
        if up and down:
            raise ValueError("Conv2d: up and down are exclusive")
        super().__init__()
        self.init_kwargs = args
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = nn.Parameter(random_weight([out_channels, in_channels, kernel, kernel], **fans) * init_weight) if kernel else None
        self.bias = nn.Parameter(random_weight([out_channels], **fans) * init_bias) if kernel and bias else None
        taps = torch.as_tensor(resample_filter, dtype=torch.float32)
        fir = torch.outer(taps, taps)[None, None] / taps.sum() ** 2  # unit DC gain, [1, 1, k, k]
        self.register_buffer("resample_filter", fir if up or down else None)

    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        c_in, c_out = self.in_channels, self.out_channels
        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (4 * f).tile(c_in, 1, 1, 1), groups=c_in, stride=2, padding=w_pad + f_pad)
            x = F.conv2d(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(c_out, 1, 1, 1), groups=c_out, stride=2)
        else:
            if self.up:  # zero-stuffing then the filter (x4 keeps the mean) = transposed conv
                x = F.conv_transpose2d(x, (4 * f).tile(c_in, 1, 1, 1), groups=c_in, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(c_in, 1, 1, 1), groups=c_in, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        return x


class GroupNorm(nn.Module):
    """Group normalisation with at most ``num_groups`` groups of at least ``min_channels_per_group``."""

    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        args = constructor_arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class UNetBlock(nn.Module):
    """Residual block (norm, SiLU, conv, noise-embedding modulation, dropout, conv) with optional
    up/downsampling and an optional self-attention layer after it; the union of what DDPM++,
    NCSN++ and ADM use.

    ``adaptive_scale``: the embedding gives a scale and a shift (ADM) instead of an additive bias.
    The attention's ``qkv`` convolution orders its output channels as [head, channel, (q, k, v)].
    """

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False, attention=False,
                 num_heads=None, channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5,
                 resample_filter=(1, 1), resample_proj=False, adaptive_scale=True,
                 init=None, init_zero=None, init_attn=None):
        args = constructor_arguments(locals())
        super().__init__()
        init = {} if init is None else init
        init_zero = dict(init_weight=0) if init_zero is None else init_zero
        args.update(init=init, init_zero=init_zero)
        self.init_kwargs = args
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        self.num_heads = 0 if not attention else (num_heads if num_heads is not None else out_channels // channels_per_head)
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale

        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=3, up=up, down=down,
                            resample_filter=resample_filter, **init)
        self.affine = Linear(in_features=emb_channels, out_features=out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(in_channels=out_channels, out_channels=out_channels * 3, kernel=1,
                              **(init if init_attn is None else init_attn))
            self.proj = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        residual = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (residual if self.skip is None else self.skip(residual))) * self.skip_scale
        if self.num_heads:
            x = (self.proj(self._attention(self.norm2(x))) + x) * self.skip_scale
        return x

    def _attention(self, h):
        b, c, height, width = h.shape
        qkv = self.qkv(h).reshape(b * self.num_heads, c // self.num_heads, 3, height * width)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [batch*heads, tokens, channels]
        # softmax(q k^T / sqrt(channels)) v; SDPA picks a fused kernel where one exists.
        a = F.scaled_dot_product_attention(q, k, v)
        return a.transpose(1, 2).reshape(b, c, height, width)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding ``[cos(x f_i), sin(x f_i)]``, ``f_i = max_positions^(-i / n)``."""

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        args = constructor_arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x):
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2 pi x f), sin(2 pi x f)]`` with fixed ``f ~ N(0, scale^2)``."""

    def __init__(self, num_channels, scale=16):
        args = constructor_arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)
