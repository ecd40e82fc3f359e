"""FD-DINOv2: timm's ViT with this project's loading equals EDM2's detector on the official architecture.

The reference below is EDM2's ``DINOv2Detector.__call__`` (torch resize mode) in front of DINOv2's
own forward pass (torch-hub ``DinoVisionTransformer``: position embeddings interpolated at run time
with the 0.1 offset, layer scale, final norm, class token), written out from their definitions on a
state dict in the official checkpoint layout. A tiny random network of the same family (patch 14,
smaller width and depth) stands in for ViT-L/14, whose weights cannot be downloaded here.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from bench.errors import BadInput

pytest.importorskip("timm", reason="timm (the dinov2 extra) is not installed")
from bench.metrics import dinov2  # noqa: E402

PATCH, DIM, DEPTH, HEADS = 14, 48, 2, 3
ARCH = {"embed_dim": DIM, "depth": DEPTH, "num_heads": HEADS}


def official_state_dict(grid: int, seed: int = 0) -> dict:
    """Random weights in the layout of dinov2_vitl14_pretrain.pth, for a ``grid`` x ``grid`` pretraining grid."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, scale=0.1: torch.randn(*shape, generator=g) * scale  # noqa: E731
    sd = {"cls_token": r(1, 1, DIM, scale=1.0), "pos_embed": r(1, 1 + grid * grid, DIM, scale=1.0),
          "mask_token": r(1, DIM), "patch_embed.proj.weight": r(DIM, 3, PATCH, PATCH, scale=0.05),
          "patch_embed.proj.bias": r(DIM), "norm.weight": 1 + r(DIM), "norm.bias": r(DIM)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(DIM), b + "norm1.bias": r(DIM),
                   b + "attn.qkv.weight": r(3 * DIM, DIM, scale=0.3), b + "attn.qkv.bias": r(3 * DIM),
                   b + "attn.proj.weight": r(DIM, DIM, scale=0.2), b + "attn.proj.bias": r(DIM),
                   b + "ls1.gamma": 0.5 + r(DIM), b + "norm2.weight": 1 + r(DIM), b + "norm2.bias": r(DIM),
                   b + "mlp.fc1.weight": r(4 * DIM, DIM, scale=0.2), b + "mlp.fc1.bias": r(4 * DIM),
                   b + "mlp.fc2.weight": r(DIM, 4 * DIM, scale=0.1), b + "mlp.fc2.bias": r(DIM),
                   b + "ls2.gamma": 0.5 + r(DIM)})
    return sd


def reference_position_embedding(sd, h, w):
    """DinoVisionTransformer.interpolate_pos_encoding: at every forward, scale factor (h0 + 0.1) / M."""
    pos = sd["pos_embed"].float()
    n = pos.shape[1] - 1
    h0, w0, m = h // PATCH, w // PATCH, int(math.sqrt(n))
    if n == h0 * w0 and h == w:
        return pos
    patches = F.interpolate(pos[:, 1:].reshape(1, m, m, DIM).permute(0, 3, 1, 2),
                            scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic", antialias=False)
    return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, -1, DIM)], dim=1)


def reference_dinov2(sd, x):
    """DINOv2's forward: patch tokens, class token, position embeddings, blocks with layer scale, norm, class token."""
    b = x.shape[0]
    t = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), t], dim=1)
    t = t + reference_position_embedding(sd, x.shape[2], x.shape[3])
    ln = lambda y, name: F.layer_norm(y, (DIM,), sd[name + ".weight"], sd[name + ".bias"], eps=1e-6)  # noqa: E731
    for i in range(DEPTH):
        p = f"blocks.{i}."
        n = t.shape[1]
        q, k, v = F.linear(ln(t, p + "norm1"), sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]) \
            .reshape(b, n, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(-1)
        y = F.linear((a @ v).transpose(1, 2).reshape(b, n, DIM), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        t = t + sd[p + "ls1.gamma"] * y
        y = F.linear(F.gelu(F.linear(ln(t, p + "norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                     sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        t = t + sd[p + "ls2.gamma"] * y
    return ln(t, "norm")[:, 0]


def edm2_detector(images, sd):
    """EDM2 calculate_metrics.py, DINOv2Detector.__call__ with resize_mode='torch'."""
    x = F.interpolate(images.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
    x = x.to(torch.float32) / 255
    x = x - torch.tensor([0.485, 0.456, 0.406]).reshape(1, -1, 1, 1)
    x = x / torch.tensor([0.229, 0.224, 0.225]).reshape(1, -1, 1, 1)
    return reference_dinov2(sd, x)


def images(n, c=3, h=32, w=32, seed=1, high=256):
    return torch.randint(0, high, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("grid", [37, 7, 16])  # ViT-L/14's 518 px pretraining grid, a coarser one, no resampling
@pytest.mark.parametrize("size", [(32, 32), (300, 200), (8, 8)])
def test_features_equal_edm2s_detector(grid, size):
    sd = official_state_dict(grid)
    x = images(3, h=size[0], w=size[1])
    with torch.no_grad():
        ours = dinov2.build(sd, **ARCH)(dinov2.preprocess(x))
        ref = edm2_detector(x, sd)
    assert ours.shape == (3, DIM)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_timms_own_resampling_would_differ():
    """Why the loader resamples the position embeddings itself: timm's way (by size, antialiased) moves the features."""
    from timm.layers import resample_abs_pos_embed

    sd = official_state_dict(37)
    ours = dinov2.resample_position_embedding(sd["pos_embed"], 16)
    timms = resample_abs_pos_embed(sd["pos_embed"], [16, 16], num_prefix_tokens=1)
    assert ours.shape == timms.shape == (1, 257, DIM)
    assert (ours - timms).abs().max() > 1e-3
    torch.testing.assert_close(ours, reference_position_embedding(sd, 224, 224))


def test_greyscale_is_repeated_and_bad_images_refused():
    x = images(2, c=1, h=8, w=8)
    torch.testing.assert_close(dinov2.preprocess(x), dinov2.preprocess(x.expand(-1, 3, -1, -1)))
    with pytest.raises(BadInput, match="uint8"):
        dinov2.preprocess(x.float())


def test_a_checkpoint_of_another_shape_is_bad_input():
    sd = official_state_dict(7)
    with pytest.raises(BadInput, match="does not fit"):
        dinov2.build(sd, embed_dim=DIM, depth=DEPTH + 1, num_heads=HEADS)


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "tiny_dinov2.pth"
    torch.save(official_state_dict(7), path)
    return path


def frechet(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fd_dinov2_through_the_evaluation_layer(checkpoint, tmp_path):
    from bench.metrics import registry

    opts = {"path": checkpoint, "arch": ARCH}
    ref, fake = images(80, seed=2), images(60, seed=3, high=128)
    ev = dinov2.fd_dinov2_evaluator(ref, reference_key="tiny", extractor_options=opts, cache_root=tmp_path / "cache",
                                    batch_size=32)
    (m,) = ev.evaluate(fake)
    assert m.metric == "fd_dinov2" and registry.get("fd_dinov2").space == "dinov2" and "vit_large_patch14_dinov2" in m.impl
    model = dinov2.load(checkpoint, ARCH)
    with torch.no_grad():
        expected = frechet(model(dinov2.preprocess(fake)), model(dinov2.preprocess(ref)))
    assert m.value == pytest.approx(expected, rel=1e-4)
    assert ev.evaluate(ref)[0].value == pytest.approx(0, abs=1e-3)


def test_coverage_and_vendi_in_dinov2_space(checkpoint):
    from bench.metrics.diversity import DiversityEvaluator

    ref = images(40, seed=4)
    ev = DiversityEvaluator(ref, extractor="dinov2", metrics=("prdc", "vendi"), batch_size=16,
                            extractor_options={"path": checkpoint, "arch": ARCH})
    values = {m.metric: m.value for m in ev.evaluate(ref)}
    assert values["coverage"] == 1 and values["prdc_precision"] == 1 and values["vendi"] > 1
    with pytest.raises(BadInput, match="no class logits"):
        DiversityEvaluator(ref, extractor="dinov2", metrics=("classes",), extractor_options={"path": checkpoint, "arch": ARCH})


def test_real_weights():
    """ViT-L/14 from the official checkpoint: 1024-d class tokens, deterministic."""
    from bench.weights import get, locate

    if locate(dinov2.WEIGHT) is None:
        pytest.skip(f"needs {get(dinov2.WEIGHT).filename} (bench weights fetch {dinov2.WEIGHT})")
    model = dinov2.load()
    x = images(2, h=64, w=64)
    with torch.no_grad():
        a, b = model(dinov2.preprocess(x)), model(dinov2.preprocess(x))
    assert a.shape == (2, 1024) and torch.isfinite(a).all() and torch.equal(a, b)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(304e6, rel=0.01)


def test_bench_fid_with_the_dinov2_extractor(checkpoint, tmp_path, monkeypatch, capsys):
    """``bench fid --extractor dinov2``: FD-DINOv2 under its own name, KID and precision/recall, no IS."""
    import json

    from bench.cli import main
    from bench.metrics import fidelity

    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, n, seed in (("a.npz", 30, 1), ("b.npz", 40, 2)):
        np.savez(tmp_path / name, images=images(n, h=16, w=16, seed=seed).permute(0, 2, 3, 1).numpy())
    argv = ["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--extractor", "dinov2", "--json"]
    assert main(argv) == 2  # no ViT-L/14 checkpoint here: one line naming the file
    assert "dinov2_vitl14_pretrain.pth" in capsys.readouterr().err
    monkeypatch.setitem(fidelity.EXTRACTORS.entries, "dinov2", lambda: dinov2.spec(checkpoint, ARCH))
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert {"fd_dinov2", "kid", "precision", "recall"} <= set(row) and "is" not in row and "fid" not in row
    assert row["fd_dinov2"] > 0
