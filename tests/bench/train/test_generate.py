"""``bench generate``: one seed per image, ADM's npz and EDM's PNG layout, equal to the generator's output."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from edm_helpers import perturbed, write_nvlabs_pickle
from PIL import Image

from bench.metrics.base import Evaluator, Measurement
from bench.nets import edm
from bench.suites.edm import Cifar10Suite
from bench.train.generate import seeded_latents

TINY_COND = dict(img_resolution=32, img_channels=3, model_type="SongUNet", model_channels=8, channel_mult=[1, 1],
                 num_blocks=1, attn_resolutions=[16], augment_dim=9, dropout=0.13, channel_mult_emb=2, label_dim=10)


class PixelStd(Evaluator):
    """Stands in for Inception FID (no weights here)."""

    n_samples = 8

    def evaluate(self, samples, cond=None):
        return [Measurement("fid", float(samples.std()), len(samples), "pixel std (test)")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished class-conditional cifar10 run of a tiny teacher (a few seconds)."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    write_nvlabs_pickle(root / "cond.pkl", perturbed(edm.edm_precond(**TINY_COND)))
    mp = pytest.MonkeyPatch()
    mp.setattr(Cifar10Suite, "evaluator", lambda self, device: PixelStd())
    assert main(["run", "--suite", "cifar10", "--method", "sid", "--kimg", "0.008", "--batch", "4", "--quiet",
                 "--results", str(root / "results"), "--set", f"suite.teacher={root / 'cond.pkl'}",
                 "--set", "suite.cond=true", "--device", "cpu"]) == 0
    mp.undo()
    return next((root / "results" / "cifar10").iterdir())


def expected(run_dir, seeds):
    """What the run's EMA generator makes of each seed's latent and label, as uint8 NHWC, and the labels."""
    from bench.metrics.images import to_uint8
    from bench.rundir import read_json
    from bench.train.evaluation import generate
    from bench.train.loop import Run

    run = Run(read_json(run_dir / "config.json"), torch.device("cpu"), quiet=True)
    run.attach(run_dir)
    run.load(truncate_logs=False)
    z, cond = seeded_latents(run.suite, seeds)
    images = to_uint8(generate(run.ema, z, cond, "cpu", 256, run.config["seed"])).permute(0, 2, 3, 1).numpy()
    return images, cond.argmax(1).numpy()


def test_npz_is_adm_layout_and_equals_the_generator(cli, run_dir, tmp_path):
    code, out, err = cli("generate", str(run_dir), "-o", str(tmp_path / "s.npz"), "--n", "6", "--quiet")
    assert code == 0, err
    data = np.load(tmp_path / "s.npz")
    images, labels = expected(run_dir, range(6))
    assert data["arr_0"].dtype == np.uint8 and data["arr_0"].shape == (6, 32, 32, 3)
    assert np.array_equal(data["arr_0"], images) and np.array_equal(data["arr_1"], labels)


def test_any_subset_of_seeds_is_reproducible_on_its_own(cli, run_dir, tmp_path):
    assert cli("generate", str(run_dir), "-o", str(tmp_path / "all.npz"), "--n", "6", "--batch", "4", "--quiet")[0] == 0
    assert cli("generate", str(run_dir), "-o", str(tmp_path / "part.npz"), "--n", "2", "--seed-start", "3",
               "--quiet")[0] == 0
    assert np.array_equal(np.load(tmp_path / "all.npz")["arr_0"][3:5], np.load(tmp_path / "part.npz")["arr_0"])


def test_png_folder_is_edm_layout_with_labels(cli, run_dir, tmp_path):
    out = tmp_path / "pngs"
    code, _, err = cli("generate", str(run_dir), "-o", str(out), "--n", "3", "--seed-start", "998", "--quiet")
    assert code == 0, err
    images, labels = expected(run_dir, range(998, 1001))
    names = ["000000/000998.png", "000000/000999.png", "001000/001000.png"]
    for name, image in zip(names, images):
        assert np.array_equal(np.asarray(Image.open(out / name)), image)
    assert json.loads((out / "dataset.json").read_text())["labels"] == [[n, int(c)] for n, c in zip(names, labels)]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n"),
    (["-o", "EXISTS"], "exists; give a new"),
    (["--negative-prompt", "blur"], "no text conditioning"),  # NASA needs cross-attention: not class labels
    (["--nasa-scale", "nan"], "--nasa-scale"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, run_dir, tmp_path, args, message):
    (tmp_path / "EXISTS").write_text("x")
    argv = ["generate", str(run_dir), "-o", str(tmp_path / "new.npz"), *args]
    argv = [str(tmp_path / "EXISTS") if a == "EXISTS" else a for a in argv]
    code, out, err = cli(*argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new.npz").exists()


def test_a_missing_run_or_a_run_without_checkpoint_is_refused(cli, tmp_path):
    code, _, err = cli("generate", str(tmp_path / "nope"), "-o", str(tmp_path / "s.npz"))
    assert code == 2 and "not a run directory" in err and not (tmp_path / "s.npz").exists()


# --- bench export -------------------------------------------------------------------------------

def test_export_then_generate_from_the_file_gives_the_runs_samples(cli, run_dir, tmp_path):
    code, _, err = cli("export", str(run_dir), "--format", "safetensors", "-o", str(tmp_path / "g.safetensors"))
    assert code == 0, err
    assert cli("generate", str(tmp_path / "g.safetensors"), "-o", str(tmp_path / "f.npz"), "--n", "4", "--quiet")[0] == 0
    assert cli("generate", str(run_dir), "-o", str(tmp_path / "r.npz"), "--n", "4", "--quiet")[0] == 0
    assert np.array_equal(np.load(tmp_path / "f.npz")["arr_0"], np.load(tmp_path / "r.npz")["arr_0"])
    assert np.array_equal(np.load(tmp_path / "f.npz")["arr_0"], expected(run_dir, range(4))[0])


def test_export_and_generate_refuse_bad_input_in_one_line(cli, run_dir, tmp_path):
    from safetensors.torch import save_file

    code, _, err = cli("export", str(run_dir), "--format", "onnx", "-o", str(tmp_path / "g.onnx"))
    assert code == 2 and "invalid choice" in err
    code, _, err = cli("export", str(run_dir), "-o", str(tmp_path / "g.pt"))
    assert code == 2 and ".safetensors file" in err and not (tmp_path / "g.pt").exists()
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    for name, message in (("junk", "is not a safetensors file"), ("other", "not a generator exported by bench export")):
        code, _, err = cli("generate", str(tmp_path / f"{name}.safetensors"), "-o", str(tmp_path / "s.npz"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()
