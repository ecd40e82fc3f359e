"""A small EDM-style UNet for tiny images (the digits suite's teacher, generator and fake score).

Raw network ``F(x, c_noise, cond)``; wrap it in ``EDMPrecond``. Residual blocks with adaptive
group-norm scale/shift from the noise embedding, as in EDM's DDPM++ blocks, scaled down: a few
levels of ``channels * mult`` feature maps, average-pool down, nearest up, skip connections by
concatenation, optional self-attention at the bottleneck.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _groups(channels: int) -> int:
    """Group-norm groups: up to 8, at least 4 channels per group where possible."""
    for g in (8, 4, 2, 1):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


class FourierEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise label (EDM's ``c_noise = ln(sigma) / 4``)."""

    def __init__(self, dim: int, max_period: float = 100.0):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(max_period), half)))

    def forward(self, c_noise):
        angles = c_noise.reshape(-1, 1).float() * self.freqs
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, noise-conditioned scale/shift, GroupNorm-SiLU-dropout-conv, skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm0, self.conv0 = nn.GroupNorm(_groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_dim, 2 * cout)
        self.norm1, self.conv1 = nn.GroupNorm(_groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv1.weight)  # each block starts as its skip path
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        return (h + self.skip(x)) * math.sqrt(0.5)


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a small feature map, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv, self.proj = nn.Conv2d(channels, 3 * channels, 1), nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return (x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))) * math.sqrt(0.5)


class UNet(nn.Module):
    """``F(x, c_noise, cond)`` for ``[B, in_channels, H, W]`` images, H and W divisible by 2^(levels-1).

    ``channel_mult`` gives the levels (one per entry), ``blocks`` residual blocks per level,
    ``attention`` adds self-attention at the lowest resolution, ``label_dim > 0`` adds a class
    embedding from one-hot ``cond`` of that width.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, channel_mult=(1, 2), blocks: int = 1,
                 attention: bool = False, label_dim: int = 0, dropout: float = 0.0):
        super().__init__()
        self.config = dict(in_channels=in_channels, channels=channels, channel_mult=list(channel_mult),
                           blocks=blocks, attention=attention, label_dim=label_dim, dropout=dropout)
        emb_dim = 4 * channels
        self.label_dim = label_dim
        self.noise_embed = FourierEmbedding(channels)
        self.embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_embed = nn.Linear(label_dim, emb_dim, bias=False) if label_dim else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)

        widths = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        skips, c = [channels], channels
        for level, width in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResBlock(c, width, emb_dim, dropout))
                c = width
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.AvgPool2d(2))
                skips.append(c)
        self.mid = ResBlock(c, c, emb_dim, dropout)
        self.mid_attn = SelfAttention(c) if attention else nn.Identity()
        self.bottleneck_channels = c
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), width, emb_dim, dropout))
                c = width
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _embedding(self, c_noise, cond):
        emb = self.noise_embed(c_noise.reshape(-1)).to(self.conv_in.weight.dtype)
        emb = self.embed(emb)
        if self.label_embed is not None and cond is not None:  # no labels: the null class (an all-zero row)
            emb = emb + self.label_embed(cond.to(emb.dtype))
        return F.silu(emb)

    def _encode(self, x, emb):
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        h = self.mid_attn(self.mid(h, emb))
        return h, hs

    def features(self, x, c_noise, cond=None):
        """Bottleneck feature map ``[B, bottleneck_channels, h, w]`` (for a GAN head on the fake score)."""
        return self._encode(x, self._embedding(c_noise, cond))[0]

    def forward(self, x, c_noise, cond=None):
        emb = self._embedding(c_noise, cond)
        h, hs = self._encode(x, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
