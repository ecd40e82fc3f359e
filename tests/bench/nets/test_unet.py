"""The small EDM-style UNet: shapes, conditioning, bottleneck features, starting point."""
import pytest
import torch

from bench.nets.precond import EDMPrecond
from bench.nets.unet import UNet


def _randomise(net):
    """Give every parameter random values (the zero-initialised output layers hide the body otherwise)."""
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


@pytest.mark.parametrize("kwargs, size", [
    ({"channels": 8, "channel_mult": (1, 2)}, 8),
    ({"channels": 8, "channel_mult": (1, 2, 2), "blocks": 2, "attention": True}, 16),
    ({"channels": 12, "channel_mult": (1,), "in_channels": 3}, 4),
])
def test_output_has_the_input_shape(kwargs, size):
    net = _randomise(UNet(**kwargs))
    c = kwargs.get("in_channels", 1)
    x = torch.randn(5, c, size, size)
    out = net(x, torch.randn(5))
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_starts_at_zero_so_the_denoiser_starts_as_its_skip_path():
    net = EDMPrecond(UNet(channels=8))
    x, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0.1, 0.5, 2.0, 10.0])
    c_skip = (0.25 / (sigma**2 + 0.25)).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(net(x, sigma), c_skip * x)


def test_output_depends_on_noise_level_and_class():
    net = _randomise(UNet(channels=8, label_dim=10))
    x = torch.randn(2, 1, 8, 8)
    labels = torch.eye(10)[[3, 3]]
    a = net(x, torch.tensor([0.0, 0.0]), labels)
    b = net(x, torch.tensor([1.0, 1.0]), labels)
    c = net(x, torch.tensor([0.0, 0.0]), torch.eye(10)[[5, 5]])
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    null = net(x, torch.zeros(2))  # no labels: the null class, an all-zero row (classifier-free guidance)
    assert torch.allclose(null, net(x, torch.zeros(2), torch.zeros(2, 10))) and not torch.allclose(null, a)


def test_features_are_the_bottleneck_and_carry_gradients():
    net = _randomise(UNet(channels=8, channel_mult=(1, 2)))
    x = torch.randn(3, 1, 8, 8, requires_grad=True)
    h = net.features(x, torch.zeros(3))
    assert h.shape == (3, net.bottleneck_channels, 4, 4) == (3, 16, 4, 4)
    h.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_config_rebuilds_the_same_architecture():
    net = UNet(channels=8, channel_mult=(1, 2), blocks=2, attention=True)
    twin = UNet(**net.config)
    assert [p.shape for p in net.parameters()] == [p.shape for p in twin.parameters()]
    twin.load_state_dict(net.state_dict())
