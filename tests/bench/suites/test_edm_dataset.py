"""Real images from EDM's dataset format (zip or folder of PNGs plus dataset.json), made here."""
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from bench.train import runconfig
from bench.errors import BadInput
from bench.suites.edm import Cifar10Suite
from bench.suites.edm_dataset import EDMDataset


def make_dataset(root, n=6, size=32, labels=True, as_zip=False):
    """Images ``i`` filled with value ``10 * i`` (channel c adds c) in dataset_tool's layout; label ``i % 10``."""
    files = {}
    for i in range(n):
        array = np.full((size, size, 3), 10 * i, dtype=np.uint8) + np.arange(3, dtype=np.uint8)
        name = f"{i // 4:05d}/img{i:08d}.png"
        path = root / "folder" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        files[name] = path.read_bytes()
    meta = {"labels": [[name, i % 10] for i, name in enumerate(files)] if labels else None}
    (root / "folder" / "dataset.json").write_text(json.dumps(meta))
    if not as_zip:
        return root / "folder"
    with zipfile.ZipFile(root / "data.zip", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("dataset.json", json.dumps(meta))
    return root / "data.zip"


@pytest.mark.parametrize("as_zip", [False, True])
def test_images_and_labels_come_back_in_range_and_paired(tmp_path, as_zip):
    data = EDMDataset(make_dataset(tmp_path, as_zip=as_zip), (3, 32, 32), label_dim=10)
    assert len(data) == 6
    images, labels = data.sample(50, torch.Generator().manual_seed(0))
    assert images.shape == (50, 3, 32, 32) and labels.shape == (50, 10)
    index = torch.round((images[:, 0, 0, 0] + 1) * 127.5 / 10).long()  # which image was drawn
    assert set(index.tolist()) == set(range(6))  # uniform with replacement: all six drawn
    torch.testing.assert_close(images[:, 2], images[:, 0] + 2 / 127.5)  # channel order kept
    assert torch.equal(labels.argmax(1), index % 10) and torch.equal(labels.sum(1), torch.ones(50))


def test_unlabelled_dataset_serves_an_unconditional_suite_only(tmp_path):
    path = make_dataset(tmp_path, labels=False)
    images, labels = EDMDataset(path, (3, 32, 32)).sample(3)
    assert labels is None and images.min() >= -1 and images.max() <= 1
    with pytest.raises(BadInput, match="no labels"):
        EDMDataset(path, (3, 32, 32), label_dim=10)


def test_bad_datasets_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not a folder or zip"):
        EDMDataset(tmp_path / "missing.zip", (3, 32, 32))
    with pytest.raises(BadInput, match=r"images are \(3, 16, 16\).*needs \(3, 32, 32\)"):
        EDMDataset(make_dataset(tmp_path, size=16), (3, 32, 32))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no images"):
        EDMDataset(tmp_path / "empty", (3, 32, 32))


def test_suite_serves_real_data_from_the_data_option(tmp_path):
    suite = Cifar10Suite(data=str(make_dataset(tmp_path, as_zip=True)), cond=True)
    images, labels = suite.real_data(4, None)
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 10)
    with pytest.raises(BadInput, match="suite.data=PATH"):
        Cifar10Suite().real_data(4, None)


def test_gan_term_without_data_is_refused_before_the_run(tmp_path, cli):
    """DMD2's GAN term needs real images: exit 2 naming the option, nothing written."""
    results = tmp_path / "results"
    code, _, err = cli("run", "--suite", "cifar10", "--method", "dmd2", "--set", "gan_weight=3e-3",
                       "--results", str(results), "--kimg", "1")
    assert code == 2 and "suite.data=PATH" in err and len(err.strip().splitlines()) == 1
    assert not results.exists()
    config = runconfig.resolve("cifar10", "dmd2", sets={"gan_weight": 3e-3, "suite.data": str(make_dataset(tmp_path))})
    assert config["suite_options"]["data"].endswith("folder")
