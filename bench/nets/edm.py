"""EDM's image denoisers, re-implemented: SongUNet (DDPM++ / NCSN++) and DhariwalUNet (ADM).

Written from the architecture descriptions of Song et al. (2021), Dhariwal & Nichol (2021) and
Karras et al. (2022, appendix F), not from EDM's code. Module and parameter names, shapes and
constructor arguments follow the modules of NVlabs' released checkpoints, so their state loads
exactly (``bench.nets.edm_pickle``). Every module keeps its constructor arguments, defaults
filled in, in ``init_kwargs``: the loader compares them with the checkpoint's records, which
catches differences (an ``eps``, a ``skip_scale``) that shapes alone would not.

Raw networks are called ``net(x, noise_labels, class_labels, augment_labels=None)``; wrap them in
``EDMPrecond`` (``edm_precond`` builds one from the keyword arguments EDM's checkpoints record).
Augmentation labels of ``None`` act as zeros (the conditioning of an un-augmented image), and so
do missing class labels of a conditional network.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .edm_layers import (Conv2d, FourierEmbedding, GroupNorm, Linear, PositionalEmbedding, UNetBlock,
                         constructor_arguments)
from .precond import EDMPrecond


def _concat_skip(x, skips, block):
    """Decoder blocks whose input width differs from ``x`` take the matching encoder output too."""
    return torch.cat([x, skips.pop()], dim=1) if x.shape[1] != block.in_channels else x


def _bottleneck(decoder, x, emb):
    """The decoder's first two blocks (``_in0``, ``_in1``) at the lowest resolution."""
    for name, block in decoder.items():
        if name.endswith(("_in0", "_in1")):
            x = block(x, emb)
    return x


class _EDMUNet(nn.Module):
    """What both EDM architectures share: the bottleneck features for DMD2's GAN head."""

    def features(self, x, noise_labels, class_labels=None, augment_labels=None):
        """Bottleneck activations (after the lowest level's ``_in0``/``_in1``): DMD2's GAN head input."""
        emb = self._embedding(noise_labels, class_labels, augment_labels)
        return _bottleneck(self.dec, self._encoder(x, emb)[0], emb)


class SongUNet(_EDMUNet):
    """DDPM++ (``embedding_type='positional'``, standard encoder) and NCSN++ (``'fourier'``,
    residual encoder, filter [1,3,3,1]) of Song et al. as configured in EDM.

    Encoder: per level ``{res}x{res}_conv`` (first level) or ``_down``, then ``num_blocks`` blocks
    (attention at ``attn_resolutions``); decoder: ``_in0``/``_in1`` (lowest level) or ``_up``, then
    ``num_blocks + 1`` blocks taking the skips, attention in the last one; output through
    ``_aux_norm``/``_aux_conv`` at full resolution (at every level for ``decoder_type='skip'``).
    """

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4,
                 attn_resolutions=(16,), dropout=0.10, label_dropout=0, embedding_type="positional",
                 channel_mult_noise=1, encoder_type="standard", decoder_type="standard", resample_filter=(1, 1)):
        args = constructor_arguments(locals())
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"SongUNet: unknown embedding_type {embedding_type!r}")
        if encoder_type not in ("standard", "skip", "residual") or decoder_type not in ("standard", "skip"):
            raise ValueError(f"SongUNet: unknown encoder/decoder type {encoder_type!r}/{decoder_type!r}")
        super().__init__()
        self.init_kwargs = args
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=math.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False,
                     init=init, init_zero=init_zero, init_attn=init_attn)

        self.map_noise = (PositionalEmbedding(num_channels=noise_channels, endpoint=True) if embedding_type == "positional"
                          else FourierEmbedding(num_channels=noise_channels))
        self.map_label = Linear(in_features=label_dim, out_features=noise_channels, **init) if label_dim else None
        self.map_augment = (Linear(in_features=augment_dim, out_features=noise_channels, bias=False, **init)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=noise_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)

        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cout, out_channels=model_channels, kernel=3, **init)
                cout = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(in_channels=caux, out_channels=caux, kernel=0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(in_channels=caux, out_channels=cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        in_channels=caux, out_channels=cout, kernel=3, down=True, resample_filter=resample_filter,
                        fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(
                    in_channels=cin, out_channels=cout, attention=idx == num_blocks and res in attn_resolutions, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(in_channels=out_channels, out_channels=out_channels,
                                                             kernel=0, up=True, resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3,
                                                           **init_zero)

    def _embedding(self, noise_labels, class_labels, augment_labels):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # DDPM++ orders sin before cos
        if self.map_label is not None:
            labels = _class_labels(class_labels, self, emb)
            emb = emb + self.map_label(labels * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def _encoder(self, x, emb):
        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        return x, skips

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self._embedding(noise_labels, class_labels, augment_labels)
        x, skips = self._encoder(x, emb)
        out = hidden = None
        for name, block in self.dec.items():
            if "aux_up" in name:
                out = block(out)
            elif "aux_norm" in name:
                hidden = block(x)
            elif "aux_conv" in name:
                hidden = block(F.silu(hidden))
                out = hidden if out is None else hidden + out
            else:
                x = block(_concat_skip(x, skips, block), emb)
        return out


class DhariwalUNet(_EDMUNet):
    """ADM of Dhariwal & Nichol as configured in EDM: adaptive group-norm blocks, 64 channels per
    attention head, attention at ``attn_resolutions`` in encoder and decoder, class embedding added
    to the noise embedding, output through ``out_norm``/``out_conv``.
    """

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0,
                 model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3,
                 attn_resolutions=(32, 16, 8), dropout=0.10, label_dropout=0):
        args = constructor_arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=math.sqrt(1 / 3), init_bias=math.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = (Linear(in_features=augment_dim, out_features=model_channels, bias=False, **init_zero)
                            if augment_dim else None)
        self.map_layer0 = Linear(in_features=model_channels, out_features=emb_channels, **init)
        self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)
        self.map_label = (Linear(in_features=label_dim, out_features=emb_channels, bias=False,
                                 init_mode="kaiming_normal", init_weight=math.sqrt(label_dim)) if label_dim else None)

        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(in_channels=cout, out_channels=model_channels * mult, kernel=3,
                                                       **init)
                cout = model_channels * mult
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(in_channels=cout, out_channels=cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(in_channels=cin, out_channels=cout,
                                                                attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3, **init_zero)

    def _embedding(self, noise_labels, class_labels, augment_labels):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(F.silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(_class_labels(class_labels, self, emb))
        return F.silu(emb)

    def _encoder(self, x, emb):
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        return x, skips

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        emb = self._embedding(noise_labels, class_labels, augment_labels)
        x, skips = self._encoder(x, emb)
        for block in self.dec.values():
            x = block(_concat_skip(x, skips, block), emb)
        return self.out_conv(F.silu(self.out_norm(x)))


def _class_labels(labels, net, emb):
    """Labels on ``emb``'s device, all-zero when missing; whole vectors zeroed with probability
    ``net.label_dropout`` while training (classifier-free guidance)."""
    if labels is None:
        return torch.zeros(1, net.map_label.in_features, device=emb.device)
    labels = labels.to(emb.device, torch.float32)
    if net.training and net.label_dropout:
        keep = torch.rand(labels.shape[0], 1, device=labels.device) >= net.label_dropout
        labels = labels * keep.to(labels.dtype)
    return labels


ARCHITECTURES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


# The published configurations (EDM's train.py options --arch ddpmpp / adm), as EDMPrecond kwargs.
DDPMPP_CIFAR10 = dict(img_resolution=32, img_channels=3, model_type="SongUNet", embedding_type="positional",
                      encoder_type="standard", decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1],
                      model_channels=128, channel_mult=[2, 2, 2], augment_dim=9, dropout=0.13, use_fp16=False)


ADM_IMAGENET64 = dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet",
                      model_channels=192, channel_mult=[1, 2, 3, 4], dropout=0.10, use_fp16=True)


def edm_precond(img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0.0, sigma_max=float("inf"),
                sigma_data=0.5, model_type="DhariwalUNet", **model_kwargs) -> EDMPrecond:
    """An ``EDMPrecond`` around ``model_type`` from the keyword arguments EDM's checkpoints record."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unknown model_type {model_type!r} (known: {', '.join(ARCHITECTURES)})")
    model = ARCHITECTURES[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                      out_channels=img_channels, label_dim=label_dim, **model_kwargs)
    return EDMPrecond(model, sigma_data=sigma_data, use_fp16=use_fp16, label_dim=label_dim,
                      img_resolution=img_resolution, img_channels=img_channels, sigma_min=sigma_min, sigma_max=sigma_max)


def edm_precond_kwargs(net: EDMPrecond) -> dict:
    """The keyword arguments that rebuild ``net`` with ``edm_precond`` (for this project's ``.pt``)."""
    model_kwargs = {k: v for k, v in net.model.init_kwargs.items()
                    if k not in ("img_resolution", "in_channels", "out_channels", "label_dim")}
    return dict(img_resolution=net.img_resolution, img_channels=net.img_channels, label_dim=net.label_dim,
                use_fp16=net.use_fp16, sigma_min=net.sigma_min, sigma_max=net.sigma_max, sigma_data=net.sigma_data,
                model_type=type(net.model).__name__, **{k: _plain(v) for k, v in model_kwargs.items()})


def _plain(value):
    """Tuples as lists, so kwargs survive ``torch.load(weights_only=True)`` and compare equal."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value
