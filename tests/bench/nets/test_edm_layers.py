"""bench.nets.edm_layers: resampling, attention and embeddings as the EDM paper defines them."""
import math

import torch
import torch.nn.functional as F
from tolerances import assert_close_to_scale

from bench.nets import edm_layers


def test_resampling_with_box_filter_is_average_pooling_and_nearest_upsampling():
    x = torch.randn(2, 4, 8, 8)
    down = edm_layers.Conv2d(4, 4, kernel=0, down=True)
    up = edm_layers.Conv2d(4, 4, kernel=0, up=True)
    assert_close_to_scale(down(x), F.avg_pool2d(x, 2))
    assert_close_to_scale(up(x), F.interpolate(x, scale_factor=2, mode="nearest"))
    smooth = edm_layers.Conv2d(4, 4, kernel=0, down=True, resample_filter=[1, 3, 3, 1])
    assert smooth(torch.ones(1, 4, 8, 8))[0, :, 1:-1, 1:-1].allclose(torch.ones(1)), "unit DC gain"


def test_attention_is_softmax_of_scaled_dot_products_with_head_channel_qkv_layout():
    block = edm_layers.UNetBlock(64, 64, emb_channels=8, attention=True, num_heads=2, skip_scale=1.0, init_zero={})
    h = torch.randn(2, 64, 4, 4)
    qkv = block.qkv(h).reshape(2 * 2, 32, 3, 16)  # [batch*head, channel, (q, k, v), token]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k) / math.sqrt(32), dim=2)
    expected = torch.einsum("nqk,nck->ncq", weights, v).reshape(2, 64, 4, 4)
    assert_close_to_scale(block._attention(h), expected)


def test_positional_embedding_frequencies():
    emb = edm_layers.PositionalEmbedding(8, endpoint=True)(torch.tensor([1.0]))
    freqs = torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4])
    assert torch.allclose(emb, torch.cat([freqs.cos(), freqs.sin()])[None], atol=1e-6)
