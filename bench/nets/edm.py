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

from .precond import EDMPrecond


def _arguments(local_vars: dict) -> dict:
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
        args = _arguments(locals())
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
        args = _arguments(locals())
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
        args = _arguments(locals())
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
        args = _arguments(locals())
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
        args = _arguments(locals())
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
        args = _arguments(locals())
        super().__init__()
        self.init_kwargs = args
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


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
        args = _arguments(locals())
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
        args = _arguments(locals())
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
