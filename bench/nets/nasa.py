"""NASA, SNOOPI's Negative-Away Steer Attention (Nguyen et al., 2024): a negative prompt for one-step models.

Training-free, at inference: in every cross-attention layer the attention output computed with the
negative prompt's keys and values is subtracted from the positive one before the output projection,
``Z_NASA = Z+ - alpha Z-`` with ``Z+- = softmax(Q K+-^T / sqrt(d)) V+-`` (the paper's Eq. 7-9 and its
Algorithm 1; the layer's own projections serve both prompts). The paper's ``alpha``: 0.1 (SDv1.5), 0.2
(SDv2.1), 0.5 (PixArt-alpha) in v3; 0.04, 0.30 and 0.80 for its PG-SB models in v1. It needs text
cross-attention, so it applies to the t2i suite's diffusers denoisers only, not to class labels.

As the output projection ``W z + b`` is affine, ``to_out(Z+ - alpha Z-) = to_out(Z+) - alpha W Z-``: the
layer's own processor makes the positive output unchanged and only ``alpha W Z-`` is added here, so
``alpha = 0`` gives the plain network bit for bit.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def attention_values(attn, hidden_states: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None):
    """``softmax(Q K^T / sqrt(d)) V`` of a diffusers ``Attention`` layer, heads merged, before ``to_out``:
    queries from ``hidden_states`` ``[B, N, C]``, keys and values from ``context`` ``[B, L, D]``, ``bias`` an
    additive mask ``[B, 1, L]`` (0 keeps, large negative drops) or None."""
    b = hidden_states.shape[0]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    d = k.shape[-1] // attn.heads
    q, k, v = (t.view(b, -1, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if bias is not None:
        bias = attn.prepare_attention_mask(bias, context.shape[1], b).view(b, attn.heads, -1, bias.shape[-1])
    z = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=0.0, is_causal=False)
    return z.transpose(1, 2).reshape(b, -1, attn.heads * d).to(q.dtype)


class NASAProcessor:
    """A cross-attention processor: the layer's ``base`` processor minus ``scale`` times the negative
    prompt's attention output through the output projection's weight. ``negative`` (``[B or 1, L, D]``,
    as the layer receives its context) and ``bias`` (``[B or 1, 1, L]`` or None) are set by ``nasa``."""

    def __init__(self, base, scale: float):
        self.base, self.scale = base, float(scale)
        self.negative, self.bias = None, None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        out = self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if self.scale == 0 or self.negative is None or encoder_hidden_states is None:
            return out
        h = hidden_states
        if attn.spatial_norm is not None:
            h = attn.spatial_norm(h, temb)
        shape = h.shape
        if h.ndim == 4:
            h = h.view(shape[0], shape[1], -1).transpose(1, 2)
        b = h.shape[0]
        negative = self.negative.to(h.dtype).expand(b, -1, -1)
        bias = None if self.bias is None else self.bias.to(h.dtype).expand(b, -1, -1)
        steer = F.linear(attention_values(attn, h, negative, bias), attn.to_out[0].weight)
        if len(shape) == 4:
            steer = steer.transpose(-1, -2).reshape(shape)
        return out - self.scale * steer / attn.rescale_output_factor


def cross_attention_layers(net) -> dict:
    """``{processor name: Attention module}`` of the network's cross-attention layers."""
    return {f"{name}.processor": m for name, m in net.named_modules()
            if getattr(m, "is_cross_attention", False) and hasattr(m, "processor")}


@contextlib.contextmanager
def nasa(net, negative_embeds: torch.Tensor, negative_mask: torch.Tensor | None = None, scale: float = 0.5):
    """Within the block, ``net`` (a diffusers UNet2DConditionModel or PixArt transformer) steers away from
    the negative prompt (text-encoder output ``[B or 1, L, D]``, attention mask ``[B or 1, L]`` or None) in
    every cross-attention layer at NASA scale ``scale``; its processors are restored afterwards."""
    layers = cross_attention_layers(net)
    if not layers:
        raise ValueError("NASA needs cross-attention layers (text conditioning); this network has none")
    context = negative_embeds.to(next(net.parameters()).dtype)
    with torch.no_grad():
        if getattr(net, "caption_projection", None) is not None:  # PixArt projects captions before its blocks
            context = net.caption_projection(context).view(context.shape[0], -1, net.inner_dim)
        elif getattr(net, "encoder_hid_proj", None) is not None:
            context = net.encoder_hid_proj(context)
    bias = None if negative_mask is None else ((1 - negative_mask.to(context.dtype)) * -10000.0).unsqueeze(1)
    saved = net.attn_processors
    processors = dict(saved)
    for name in layers:
        proc = NASAProcessor(saved[name], scale)
        proc.negative, proc.bias = context, bias
        processors[name] = proc
    net.set_attn_processor(processors)
    try:
        yield net
    finally:
        net.set_attn_processor(saved)
