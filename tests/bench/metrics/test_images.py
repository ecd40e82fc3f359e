import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BadInput
from bench.metrics.images import check_images, load_images, make_grid, save_grid, to_uint8
from bench_helpers import save_pngs


def test_to_uint8_is_edm_quantisation():
    x = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.99, 1.0, 2.0]).view(1, 1, 1, 7)
    # EDM: (x * 127.5 + 128).clip(0, 255) truncated; -1 -> 0 (0.5 truncated), 0 -> 128, 1 -> 255
    assert to_uint8(x).flatten().tolist() == [0, 0, 64, 128, 254, 255, 255]
    assert to_uint8(x).dtype == torch.uint8


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, 4, 4)])
def test_to_uint8_rejects_non_float_or_non_nchw(bad):
    with pytest.raises(BadInput):
        to_uint8(bad)


@pytest.mark.parametrize("images, words", [
    (torch.zeros(2, 3, 8, 8), "uint8"),
    (torch.full((2, 3, 8, 8), 300, dtype=torch.int32), "300"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), "N x C x H x W"),
    (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "channels"),
    (torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "channels"),
    (torch.zeros(0, 3, 8, 8, dtype=torch.uint8), "empty"),
    (np.zeros((2, 3, 8, 8), np.uint8), "tensor"),
])
def test_check_images_names_the_problem(images, words):
    with pytest.raises(BadInput, match=words):
        check_images(images)


def test_check_images_accepts_gray_and_rgb():
    for c in (1, 3):
        x = torch.zeros(2, c, 5, 5, dtype=torch.uint8)
        assert check_images(x) is x


def _random(n, c, h=6, w=7, seed=0):
    return torch.randint(0, 256, (n, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_folder_round_trip(tmp_path, channels):
    x = _random(5, channels)
    save_pngs(x, tmp_path / "pngs")
    assert torch.equal(load_images(tmp_path / "pngs"), x)


def test_npz_nhwc_and_nchw(tmp_path):
    x = _random(4, 3)
    np.savez(tmp_path / "nhwc.npz", images=x.permute(0, 2, 3, 1).numpy())
    np.savez(tmp_path / "nchw.npz", x.numpy())
    assert torch.equal(load_images(tmp_path / "nhwc.npz"), x)
    assert torch.equal(load_images(tmp_path / "nchw.npz"), x)


def test_load_images_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no PNG"):
        load_images(tmp_path / "empty")
    with pytest.raises(BadInput, match="no such"):
        load_images(tmp_path / "missing")
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(BadInput, match="uint8"):
        load_images(tmp_path / "float.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="npz"):
        load_images(tmp_path / "bad.npz")
    mixed = tmp_path / "mixed"
    save_pngs(_random(1, 3, 4, 4), mixed)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(mixed / "zzz.png")
    with pytest.raises(BadInput, match="differ"):
        load_images(mixed)


def test_grid_layout_and_png(tmp_path):
    x = _random(5, 3, 4, 4)
    grid = make_grid(x, nrow=3, padding=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 5 + 1)
    assert torch.equal(grid[:, 1:5, 6:10], x[1])  # second image: first row, second column
    assert torch.equal(grid[:, 6:10, 1:5], x[3])  # fourth image: second row, first column
    path = save_grid(x, tmp_path / "samples" / "kimg000002.000.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 5 + 1, 2 * 5 + 1)
    assert [p.name for p in path.parent.iterdir()] == ["kimg000002.000.png"]  # no temporary left behind
