"""EDM's non-leaking geometric augmentation, written from the EDM paper (Karras et al. 2022, appendix).

Each transform is applied to an image with probability ``p`` (times its own multiplier), and the
network is told what was done through 9 augment labels: trained that way, it models the
un-augmented data when its labels are zero (as when sampling), so the augmentation does not leak
into what it generates. The transforms and the label layout (EDM's, which its ``augment_dim = 9``
networks were trained with):

====  ========================================================================================
0     x-flip: 1 if mirrored left-right
1     y-flip: 1 if mirrored top-bottom
2     isotropic scaling by ``2 ** (scale_std * w)``: ``w ~ N(0, 1)``
3, 4  rotation by ``a ~ U(-pi, pi) * rotate_max``: ``cos a - 1``, ``sin a``
5, 6  anisotropic scaling by ``2 ** (aniso_std * w)`` along a direction ``r`` (``r ~ U(-pi, pi)``
      with probability ``aniso_rotate_prob``, else 0): ``w cos r``, ``w sin r``
7, 8  translation by ``translate_std * (W, H) * (u, v)``, ``u, v ~ N(0, 1)``: ``u``, ``v``
====  ========================================================================================

A transform that is not applied has label(s) 0. The flips act first, then one affine warp combining
scaling, rotation, anisotropic scaling and translation, sampled bilinearly with the image reflected
at its borders. SiD's and Diff-Instruct's training scripts use ``p = 0.12`` with every multiplier 1
except x-flip, whose huge multiplier makes it always eligible (each image mirrored with probability
1/2). EDM resamples at twice the resolution with a wavelet filter; this warp samples at the image's
own resolution.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_DIM = 9


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 2]`` rotation matrices ``[[cos, -sin], [sin, cos]]``."""
    c, s = angle.cos(), angle.sin()
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def _scaling(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 2]`` diagonal matrices."""
    zero = torch.zeros_like(sx)
    return torch.stack([torch.stack([sx, zero], -1), torch.stack([zero, sy], -1)], -2)


class AugmentPipe:
    """``pipe(images) -> (augmented images, [B, 9] augment labels)`` for images ``[B, C, H, W]``."""

    def __init__(self, p: float = 0.12, xflip: float = 1e8, yflip: float = 1.0, scale: float = 1.0,
                 rotate: float = 1.0, aniso: float = 1.0, translate: float = 1.0, scale_std: float = 0.2,
                 rotate_max: float = 1.0, aniso_std: float = 0.2, aniso_rotate_prob: float = 0.5,
                 translate_std: float = 0.125):
        if not 0 <= p <= 1:
            raise ValueError(f"augmentation probability must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.xflip, self.yflip, self.scale, self.rotate = xflip, yflip, scale, rotate
        self.aniso, self.translate = aniso, translate
        self.scale_std, self.rotate_max, self.aniso_std = scale_std, rotate_max, aniso_std
        self.aniso_rotate_prob, self.translate_std = aniso_rotate_prob, translate_std

    def _applied(self, multiplier: float, n: int, device) -> torch.Tensor:
        """Which of ``n`` images get a transform of this probability multiplier."""
        return torch.rand(n, device=device) < multiplier * self.p

    def __call__(self, images: torch.Tensor):
        n, _, h, w = images.shape
        dev = images.device
        zero = torch.zeros(n, device=dev)

        def gated(multiplier, value):
            return torch.where(self._applied(multiplier, n, dev), value, zero)

        xflip = gated(self.xflip, torch.randint(2, (n,), device=dev).float())
        yflip = gated(self.yflip, torch.randint(2, (n,), device=dev).float())
        out = torch.where(xflip.view(-1, 1, 1, 1) > 0, images.flip(3), images)
        out = torch.where(yflip.view(-1, 1, 1, 1) > 0, out.flip(2), out)

        scale_w = gated(self.scale, torch.randn(n, device=dev))
        angle = gated(self.rotate, (torch.rand(n, device=dev) * 2 - 1) * math.pi * self.rotate_max)
        aniso_w = gated(self.aniso, torch.randn(n, device=dev))
        aniso_r = torch.where(torch.rand(n, device=dev) < self.aniso_rotate_prob,
                              (torch.rand(n, device=dev) * 2 - 1) * math.pi, zero)
        shift = torch.where(self._applied(self.translate, n, dev).unsqueeze(1),
                            torch.randn(n, 2, device=dev), torch.zeros(n, 2, device=dev))  # one decision

        labels = torch.stack([xflip, yflip, scale_w, angle.cos() - 1, angle.sin(),
                              aniso_w * aniso_r.cos(), aniso_w * aniso_r.sin(), shift[:, 0], shift[:, 1]], 1)
        warped = (scale_w != 0) | (angle != 0) | (aniso_w != 0) | (shift != 0).any(1)
        if warped.any():
            out = out.clone()
            out[warped] = self._warp(out[warped], scale_w[warped], angle[warped], aniso_w[warped],
                                     aniso_r[warped], shift[warped])
        return out, labels

    def _warp(self, images, scale_w, angle, aniso_w, aniso_r, shift):
        """Resample each image at ``source = M @ output + offset`` (pixel units about the centre)."""
        n, _, h, w = images.shape
        s = torch.exp2(scale_w * self.scale_std)
        a = torch.exp2(aniso_w * self.aniso_std)
        # The inverse map, output pixel -> source pixel: undo translation, anisotropic scaling
        # (about direction r), rotation and scaling, in that order.
        m = _scaling(1 / s, 1 / s) @ _rotation(angle)
        m = m @ _rotation(-aniso_r) @ _scaling(1 / a, a) @ _rotation(aniso_r)
        size = torch.tensor([w, h], device=images.device, dtype=images.dtype)
        offset = -(m @ (shift * self.translate_std * size).unsqueeze(-1)).squeeze(-1)
        # affine_grid works in coordinates normalised to [-1, 1] across the image (align_corners=False).
        to_unit = torch.diag(2 / size)
        theta = torch.cat([to_unit @ m @ torch.diag(size / 2), (to_unit @ offset.unsqueeze(-1))], 2)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def augment_dim(net) -> int:
    """How many augment labels ``net`` takes (0: it takes none and must not be augmented)."""
    return int(getattr(net, "augment_dim", 0) or 0)
