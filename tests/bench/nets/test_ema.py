"""bench.nets.ema: EDM's EMA with a half-life in images and its ramp-up."""
import torch
from torch import nn

from bench.nets.ema import update_ema


def pair():
    net, ema = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0), net.bias.fill_(1.0), ema.weight.zero_(), ema.bias.zero_()
    return net, ema


def test_half_life_in_images():
    net, ema = pair()
    update_ema(ema, net, batch=500, nimg=10**6, halflife_kimg=0.5)  # one half-life per step
    torch.testing.assert_close(ema.weight, torch.full((1, 2), 0.5))


def test_ramp_up_caps_the_half_life_early():
    net, ema = pair()
    update_ema(ema, net, batch=10, nimg=100, halflife_kimg=500.0, rampup=0.1)  # half-life 10 images
    torch.testing.assert_close(ema.bias, torch.full((1,), 0.5))


def test_no_half_life_copies():
    net, ema = pair()
    update_ema(ema, net, batch=10, nimg=10, halflife_kimg=None)
    assert torch.equal(ema.weight, net.weight) and torch.equal(ema.bias, net.bias)
