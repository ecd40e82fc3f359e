"""NASA on tiny random diffusers denoisers: scale 0 is the plain network bit for bit, a positive scale
changes it, and one cross-attention layer's output is ``to_out(Z+ - alpha Z-)`` computed by hand."""
import importlib.util
import math

import pytest
import torch

MISSING = [m for m in ("diffusers",) if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason="diffusers not installed: pip install 'distill-bench[t2i]'")


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4).eval()


def tiny_pixart():
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    return PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                    num_layers=2, cross_attention_dim=16, caption_channels=16, sample_size=8,
                                    patch_size=2, norm_num_groups=4).eval()


def run(net, x, embeds, mask=None):
    if hasattr(net, "caption_projection"):
        return net(x, encoder_hidden_states=embeds, encoder_attention_mask=mask, timestep=torch.tensor([500, 500]),
                   added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]
    return net(x, torch.tensor([500, 500]), encoder_hidden_states=embeds, return_dict=False)[0]


@pytest.mark.parametrize("build", [tiny_unet, tiny_pixart])
def test_scale_zero_is_the_plain_network_and_a_positive_scale_steers(build):
    from bench.nets.nasa import cross_attention_layers, nasa

    net = build()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    embeds, negative = torch.randn(2, 6, 16, generator=gen), torch.randn(1, 5, 16, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]) if hasattr(net, "caption_projection") else None
    neg_mask = None if mask is None else torch.tensor([[1, 1, 1, 0, 0]])
    before = dict(net.attn_processors)
    with torch.no_grad():
        plain = run(net, x, embeds, mask)
        with nasa(net, negative, neg_mask, scale=0.0):
            zero = run(net, x, embeds, mask)
        with nasa(net, negative, neg_mask, scale=0.5):
            steered = run(net, x, embeds, mask)
        again = run(net, x, embeds, mask)
    assert torch.equal(zero, plain) and torch.equal(again, plain)
    assert (steered - plain).abs().max() > 1e-4 * plain.abs().max()
    assert all(type(p) is type(before[k]) for k, p in net.attn_processors.items())  # restored
    layers = cross_attention_layers(net)  # every transformer block's attn2, no self-attention
    assert layers and all(name.endswith("attn2.processor") for name in layers)
    assert len(layers) < len(net.attn_processors)


@pytest.mark.parametrize("build", [tiny_unet, tiny_pixart])
def test_one_layer_is_the_formula_by_hand(build):
    """``to_out(Z+ - alpha Z-)`` with ``Z = softmax(Q K^T / sqrt(d)) V`` per head, masked keys dropped."""
    from bench.nets.nasa import NASAProcessor, cross_attention_layers

    net, alpha = build(), 0.7
    name, attn = next(iter(cross_attention_layers(net).items()))
    gen = torch.Generator().manual_seed(2)
    b, n, heads = 2, 12, attn.heads
    h = torch.randn(b, n, attn.to_q.in_features, generator=gen)
    pos, neg = (torch.randn(b, length, attn.to_k.in_features, generator=gen) for length in (6, 5))
    neg_keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    proc = NASAProcessor(net.attn_processors[name], alpha)
    proc.negative, proc.bias = neg, ((~neg_keep).float() * -10000.0).unsqueeze(1)
    with torch.no_grad():
        out = proc(attn, h, pos)

        def z(context, keep):
            q, k, v = attn.to_q(h), attn.to_k(context), attn.to_v(context)
            d = q.shape[-1] // heads
            split = lambda t: t.reshape(b, -1, heads, d).permute(0, 2, 1, 3)  # noqa: E731
            logits = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)
            logits = logits.masked_fill(~keep[:, None, None, :], -math.inf)
            return (logits.softmax(-1) @ split(v)).permute(0, 2, 1, 3).reshape(b, n, heads * d)

        everything = torch.ones(b, 6, dtype=torch.bool)
        by_hand = attn.to_out[0](z(pos, everything) - alpha * z(neg, neg_keep))
    torch.testing.assert_close(out, by_hand, rtol=1e-5, atol=1e-6)
    assert (out - proc.base(attn, h, pos)).abs().max() > 1e-3  # the negative term is not negligible


def test_a_network_without_cross_attention_is_refused():
    from diffusers import UNet2DModel

    from bench.nets.nasa import nasa

    net = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                      down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                      up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                      norm_num_groups=4)
    with pytest.raises(ValueError, match="cross-attention"):
        with nasa(net, torch.zeros(1, 2, 16)):
            pass
