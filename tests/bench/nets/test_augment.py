"""EDM's non-leaking augmentation: identity at p = 0, the label layout, the geometry, the network."""
import math

import pytest
import torch
from edm_helpers import TINY_SONG, TINY_ADM, perturbed

from bench.nets import edm
from bench.nets.augment import AUGMENT_DIM, AugmentPipe, augment_dim

ONLY = dict(xflip=0, yflip=0, scale=0, rotate=0, aniso=0, translate=0)


def only(name, p=1.0, **extra):
    """A pipe applying one transform (to every eligible image at p = 1)."""
    return AugmentPipe(p=p, **{**ONLY, name: 1.0, **extra})


def test_p_zero_is_the_identity_with_zero_labels():
    x = torch.randn(16, 3, 8, 8)
    y, labels = AugmentPipe(p=0.0)(x)
    assert torch.equal(y, x) and labels.shape == (16, AUGMENT_DIM) and not labels.any()


@pytest.mark.parametrize("name, column, dim", [("xflip", 0, 3), ("yflip", 1, 2)])
def test_flip_labels_are_zero_or_one_and_flip_exactly_those_images(name, column, dim):
    x = torch.randn(64, 3, 8, 8)
    y, labels = only(name)(x)
    flipped = labels[:, column] == 1
    assert set(labels[:, column].tolist()) == {0.0, 1.0}  # mirrored with probability 1/2
    assert torch.equal(y[flipped], x[flipped].flip(dim)) and torch.equal(y[~flipped], x[~flipped])
    assert not labels[:, [c for c in range(AUGMENT_DIM) if c != column]].any()


def test_each_transform_writes_its_own_columns():
    x = torch.randn(32, 3, 8, 8)
    columns = {"scale": [2], "rotate": [3, 4], "aniso": [5, 6], "translate": [7, 8]}
    for name, cols in columns.items():
        _, labels = only(name, aniso_rotate_prob=1.0)(x)
        others = [c for c in range(AUGMENT_DIM) if c not in cols]
        assert labels[:, cols].abs().sum(1).gt(0).all(), name  # p = 1: every image transformed
        assert not labels[:, others].any(), name
    _, rot = only("rotate")(x)
    torch.testing.assert_close((rot[:, 3] + 1) ** 2 + rot[:, 4] ** 2, torch.ones(32))  # cos a - 1, sin a


def test_probabilities_at_the_published_setting():
    """p = 0.12: x-flip always eligible (half the images mirrored), every other transform at 0.12."""
    _, labels = AugmentPipe(p=0.12)(torch.zeros(20000, 1, 2, 2))
    applied = labels.ne(0).float().mean(0)
    se = math.sqrt(0.25 / 20000)
    assert abs(applied[0] - 0.5) < 5 * se
    assert abs(applied[1] - 0.06) < 5 * math.sqrt(0.06 * 0.94 / 20000)  # eligible 0.12, then 1/2
    for col in (2, 3, 7, 8):
        assert abs(applied[col] - 0.12) < 5 * math.sqrt(0.12 * 0.88 / 20000), col


def test_warp_geometry_in_edm_conventions():
    """A label's transform, in pixels: translation moves content by +t; rotation by a maps the
    output pixel at (x, y) to the source at (x cos a - y sin a, x sin a + y cos a) about the centre."""
    pipe = AugmentPipe(p=1.0)
    img = torch.randn(1, 2, 6, 6)
    zero, none = torch.zeros(1), torch.zeros(1, 2)
    one_pixel = torch.tensor([[1 / (0.125 * 6), 0.0]])  # label u = 1 / (translate_std * W)
    moved = pipe._warp(img, zero, zero, zero, zero, one_pixel)
    torch.testing.assert_close(moved[..., 1:], img[..., :-1])
    quarter = pipe._warp(img, zero, torch.tensor([math.pi / 2]), zero, zero, none)
    torch.testing.assert_close(quarter, img.transpose(2, 3).flip(2), atol=1e-5, rtol=0)
    ramp = (torch.arange(6.0) - 2.5).expand(1, 1, 6, 6)  # x about the centre; bilinear is exact on it
    doubled = pipe._warp(ramp, torch.tensor([5.0]), zero, zero, zero, none)  # 2 ** (0.2 * 5) = 2x
    torch.testing.assert_close(doubled, ramp / 2)
    stretched = pipe._warp(ramp, zero, zero, torch.tensor([5.0]), zero, none)  # 2x along x, 1/2 along y
    torch.testing.assert_close(stretched, ramp / 2)
    identity = pipe._warp(img, zero, zero, zero, zero, none)
    torch.testing.assert_close(identity, img, atol=1e-5, rtol=0)


def test_networks_with_augment_dim_use_the_labels_and_others_take_none():
    song = perturbed(edm.edm_precond(**TINY_SONG)).eval()
    adm = edm.edm_precond(**TINY_ADM)
    assert augment_dim(song) == 9 and augment_dim(adm) == 0 and augment_dim(torch.nn.Linear(2, 2)) == 0
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0])
    labels = torch.zeros(2, AUGMENT_DIM)
    assert torch.equal(song(x, sigma, augment_labels=labels), song(x, sigma))  # zero labels = none
    labels[:, 0] = 1
    assert not torch.allclose(song(x, sigma, augment_labels=labels), song(x, sigma))
