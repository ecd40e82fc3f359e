"""A residual MLP for vector data (the gaussian suite), with the noise level as an input feature."""
from __future__ import annotations

import torch
from torch import nn


class ResidualMLP(nn.Module):
    """Raw network ``F(x, c_noise, cond)`` for ``dim``-dimensional data; wrap it in EDMPrecond."""

    def __init__(self, dim: int, width: int = 256, depth: int = 3, cond_dim: int = 0):
        super().__init__()
        self.dim, self.width, self.depth, self.cond_dim = dim, width, depth, cond_dim
        self.embed = nn.Linear(dim + 16 + cond_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        self.register_buffer("freqs", torch.exp(torch.linspace(0, 4, 8)))

    def noise_features(self, c_noise):
        angles = c_noise.reshape(-1, 1).float() * self.freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    def features(self, x, c_noise, cond=None):
        """The last hidden layer (DMD2's GAN head reads it)."""
        parts = [x, self.noise_features(c_noise).to(x.dtype)]
        if self.cond_dim:  # no condition: the null class, an all-zero row
            parts.append(x.new_zeros(x.shape[0], self.cond_dim) if cond is None else cond.to(x.dtype))
        h = self.embed(torch.cat(parts, dim=1))
        for block in self.blocks:
            h = h + block(h)
        return h

    def forward(self, x, c_noise, cond=None):
        return self.out(self.features(x, c_noise, cond))
