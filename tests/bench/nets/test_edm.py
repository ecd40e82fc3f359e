"""EDM's networks: full-size parameter counts and checkpoint names (meta device), behaviour at tiny size."""
import math

import pytest
import torch
import torch.nn.functional as F
from edm_helpers import TINY_ADM, TINY_SONG, perturbed

from bench.nets import edm


def _meta(**kwargs):
    with torch.device("meta"):
        return edm.edm_precond(**kwargs)


def _count(net):
    return sum(p.numel() for p in net.parameters())


def test_full_size_parameter_counts_match_edm_paper():
    """EDM's paper: DDPM++ (CIFAR-10) about 56M parameters, ADM (ImageNet-64) about 296M."""
    ddpmpp = _count(_meta(**edm.DDPMPP_CIFAR10))
    ddpmpp_cond = _count(_meta(**{**edm.DDPMPP_CIFAR10, "label_dim": 10}))
    adm = _count(_meta(**edm.ADM_IMAGENET64))
    assert abs(ddpmpp - 55.73e6) < 0.01e6, ddpmpp
    assert ddpmpp_cond - ddpmpp == 10 * 128 + 128  # the label embedding, a Linear with bias
    assert abs(adm - 295.90e6) < 0.01e6, adm


def test_full_size_state_names_and_shapes_follow_the_released_checkpoints():
    song = _meta(**edm.DDPMPP_CIFAR10).state_dict()
    assert len(song) == 425
    expected = {
        "model.map_augment.weight": (128, 9),  # augmentation labels, no bias
        "model.map_layer0.weight": (512, 128),
        "model.enc.32x32_conv.weight": (128, 3, 3, 3),
        "model.enc.32x32_block0.conv0.weight": (256, 128, 3, 3),
        "model.enc.16x16_down.skip.weight": (256, 256, 1, 1),  # DDPM++ projects on resampling
        "model.enc.16x16_down.conv0.resample_filter": (1, 1, 2, 2),
        "model.enc.16x16_block0.qkv.weight": (768, 256, 1, 1),
        "model.dec.8x8_in0.proj.weight": (256, 256, 1, 1),
        "model.dec.32x32_block4.conv0.weight": (256, 384, 3, 3),
        "model.dec.32x32_aux_conv.weight": (3, 256, 3, 3),
    }
    assert {k: tuple(song[k].shape) for k in expected} == expected
    assert not any("16x16_block3.qkv" in k for k in song if k.startswith("model.dec"))  # only the last dec block
    adm = _meta(**edm.ADM_IMAGENET64).state_dict()
    assert len(adm) == 553
    expected = {
        "model.map_label.weight": (768, 1000),
        "model.enc.64x64_conv.weight": (192, 3, 3, 3),
        "model.enc.32x32_down.skip.resample_filter": (1, 1, 2, 2),  # resampling only, no weights
        "model.enc.32x32_block0.affine.weight": (768, 768),  # scale and shift
        "model.enc.8x8_block2.qkv.weight": (2304, 768, 1, 1),
        "model.out_conv.weight": (3, 192, 3, 3),
    }
    assert {k: tuple(adm[k].shape) for k in expected} == expected
    assert "model.enc.32x32_down.skip.weight" not in adm and "model.map_label.bias" not in adm


@pytest.mark.parametrize("config", [TINY_SONG, TINY_ADM], ids=["ddpmpp", "adm"])
def test_tiny_networks_denoise_batches_and_backpropagate(config):
    net = edm.edm_precond(**config)
    x, sigma = torch.randn(3, 3, 8, 8), torch.tensor([0.01, 1.0, 50.0])
    cond = F.one_hot(torch.tensor([1, 2, 3]), 10).float() if config.get("label_dim") else None
    out = net(x, sigma, cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.square().mean().backward()
    unused = {"model.map_augment.weight"}  # no augmentation labels given
    assert all(p.grad is not None for name, p in net.named_parameters() if name not in unused)


def test_missing_labels_mean_zero_labels_and_missing_augment_labels_mean_zero():
    net = perturbed(edm.edm_precond(**TINY_ADM)).eval()
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        assert torch.equal(net(x, sigma), net(x, sigma, torch.zeros(2, 10)))
        assert not torch.allclose(net(x, sigma), net(x, sigma, torch.eye(10)[:2]))
    song = perturbed(edm.edm_precond(**TINY_SONG)).eval().model
    c_noise = torch.tensor([0.1, -0.3])
    with torch.no_grad():
        assert torch.equal(song(x, c_noise, None), song(x, c_noise, None, torch.zeros(2, 9)))


def test_dropout_acts_only_in_training_mode():
    net = edm.edm_precond(**TINY_SONG)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0])
    with torch.no_grad():
        net.eval()
        assert torch.equal(net(x, sigma), net(x, sigma))
        net.train()
        assert not torch.equal(net(x, sigma), net(x, sigma))


def test_modules_keep_their_constructor_arguments():
    net = edm.edm_precond(**TINY_SONG)
    block = net.model.enc["8x8_block0"]
    assert block.init_kwargs["eps"] == 1e-6 and block.init_kwargs["skip_scale"] == math.sqrt(0.5)
    assert net.model.init_kwargs["augment_dim"] == 9
    rebuilt = edm.edm_precond(**edm.edm_precond_kwargs(net))
    assert edm._plain(list(rebuilt.model.init_kwargs.items())) == edm._plain(list(net.model.init_kwargs.items()))
    with pytest.raises(ValueError, match="model_type"):
        edm.edm_precond(img_resolution=8, img_channels=3, model_type="NotANet")


@pytest.mark.parametrize("config", [TINY_SONG, TINY_ADM], ids=["ddpmpp", "adm"])
def test_bottleneck_features_feed_dmd2_gan_head(config):
    from bench.nets.precond import BottleneckDiscriminator

    net = perturbed(edm.edm_precond(**config))
    x, c_noise = torch.randn(2, 3, 8, 8), torch.tensor([0.1, -0.2])
    cond = torch.eye(10)[:2] if config.get("label_dim") else None
    h = net.model.features(x, c_noise, cond)
    channels = config["model_channels"] * config["channel_mult"][-1]
    assert h.shape == (2, channels, 4, 4)
    logits = BottleneckDiscriminator(net, (3, 8, 8))(x, torch.tensor([0.5, 2.0]), cond)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
