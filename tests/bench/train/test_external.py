"""``bench export --format edm-pickle`` and ``bench eval --generator``: generators that leave and enter the harness."""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edm_helpers import perturbed, write_nvlabs_pickle

from bench.metrics.base import Evaluator, Measurement
from bench.nets import edm
from bench.nets.edm_pickle import read_generator_pickle
from bench.nets.precond import OneStepGenerator
from bench.suites.edm import Cifar10Suite
from bench.train.evaluation import generate, latent_bank

TINY_COND = dict(img_resolution=32, img_channels=3, model_type="SongUNet", model_channels=8, channel_mult=[1, 1],
                 num_blocks=1, attn_resolutions=[16], augment_dim=9, dropout=0.13, channel_mult_emb=2, label_dim=10)


class PixelStd(Evaluator):
    """Stands in for Inception FID (no weights here)."""

    n_samples = 8

    def evaluate(self, samples, cond=None):
        return [Measurement("fid", float(samples.std()), len(samples), "pixel std (test)")]


@pytest.fixture(autouse=True)
def pixel_std(monkeypatch):
    monkeypatch.setattr(Cifar10Suite, "evaluator", lambda self, device: PixelStd())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    write_nvlabs_pickle(root / "cond.pkl", perturbed(edm.edm_precond(**TINY_COND)))
    return root / "cond.pkl"


@pytest.fixture(scope="module")
def run_dir(teacher, tmp_path_factory):
    """A finished class-conditional cifar10 SiD run of the tiny teacher (a few seconds)."""
    from bench.cli import main

    root = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setattr(Cifar10Suite, "evaluator", lambda self, device: PixelStd())
    assert main(["run", "--suite", "cifar10", "--method", "sid", "--kimg", "0.008", "--batch", "4", "--quiet",
                 "--results", str(root / "results"), "--set", f"suite.teacher={teacher}",
                 "--set", "suite.cond=true", "--device", "cpu"]) == 0
    mp.undo()
    return next((root / "results" / "cifar10").iterdir())


def suite_args(teacher):
    return ["--suite", "cifar10", "--set", "suite.cond=true", "--set", f"suite.teacher={teacher}", "--device", "cpu"]


def final_row(directory):
    return [json.loads(line) for line in (Path(directory) / "metrics.jsonl").read_text().splitlines()][-1]


def expected_value(net, sigma, teacher):
    """PixelStd of ``G(z) = net(sigma z; sigma)`` on the cifar10 latent bank of seed 0."""
    suite = Cifar10Suite(teacher=str(teacher), cond=True)
    z, cond = latent_bank(suite, 0, 8)
    return float(generate(OneStepGenerator(net, sigma), z, cond, "cpu").std())


def run_of(out: str) -> Path:
    return Path(out.strip().splitlines()[-1])


# --- bench export --format edm-pickle ------------------------------------------------------------

def test_edm_pickle_export_holds_the_runs_generator(cli, run_dir, tmp_path):
    from bench.rundir import read_json
    from bench.train.loop import Run

    code, _, err = cli("export", str(run_dir), "--format", "edm-pickle", "-o", str(tmp_path / "g.pkl"))
    assert code == 0, err
    assert "--init_sigma 2.5" in err
    net, sigma, plain = read_generator_pickle(tmp_path / "g.pkl")
    assert sigma == 2.5 and plain["kimg"] == pytest.approx(0.008) and json.loads(plain["bench_config"])["method"] == "sid"
    run = Run(read_json(run_dir / "config.json"), torch.device("cpu"), quiet=True)
    run.attach(run_dir)
    run.load(truncate_logs=False)
    z = torch.randn(3, 3, 32, 32)
    cond = torch.eye(10)[[1, 4, 9]]
    with torch.no_grad():
        assert torch.equal(OneStepGenerator(net, sigma)(z, cond), run.ema(z, cond))


def test_edm_pickle_export_refuses_other_suites_and_suffixes(cli, run_dir, tmp_path):
    code, _, err = cli("export", str(run_dir), "--format", "edm-pickle", "-o", str(tmp_path / "g.safetensors"))
    assert code == 2 and "writes a .pkl file" in err and len(err.strip().splitlines()) == 1
    other = tmp_path / "digits-run"
    shutil.copytree(run_dir, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "suite": "digits"}))
    code, _, err = cli("export", str(other), "--format", "edm-pickle", "-o", str(tmp_path / "g.pkl"))
    assert code == 2 and "for the EDM suites" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.pkl").exists()


# --- bench eval --generator ----------------------------------------------------------------------

def test_exported_pickle_and_safetensors_score_as_the_run_did(cli, run_dir, teacher, tmp_path):
    """The same generator on the same latent bank: the trained run's final row, from either file."""
    cli("export", str(run_dir), "--format", "edm-pickle", "-o", str(tmp_path / "g.pkl"))
    cli("export", str(run_dir), "--format", "safetensors", "-o", str(tmp_path / "g.safetensors"))
    trained = final_row(run_dir)
    for name in ("g.pkl", "g.safetensors"):
        code, out, err = cli("eval", "--generator", str(tmp_path / name), *suite_args(teacher),
                             "--results", str(tmp_path / "results"))
        assert code == 0, err
        row = final_row(run_of(out))
        assert row["value"] == pytest.approx(trained["value"], rel=1e-6) and row["ema"] is True
        assert row["kimg"] == 0 and row["n_samples"] == trained["n_samples"]
        config = json.loads((run_of(out) / "config.json").read_text())
        assert config["method"] == f"external:{Path(name).stem}" and config["hparams"]["sigma_init"] == 2.5
        assert json.loads((run_of(out) / "manifest.json").read_text())["status"] == "done"


def test_safetensors_is_scored_on_the_suite_options_it_was_trained_with(cli, run_dir, tmp_path):
    cli("export", str(run_dir), "--format", "safetensors", "-o", str(tmp_path / "g.safetensors"))
    code, out, err = cli("eval", "--generator", str(tmp_path / "g.safetensors"), "--suite", "cifar10",
                         "--device", "cpu", "--results", str(tmp_path / "results"))
    assert code == 0, err
    assert final_row(run_of(out))["value"] == pytest.approx(final_row(run_dir)["value"], rel=1e-6)
    code, _, err = cli("eval", "--generator", str(tmp_path / "g.safetensors"), "--suite", "imagenet64")
    assert code == 2 and "trained on suite 'cifar10'" in err


def test_persistent_sid_pickle_needs_its_sigma_and_gives_a_leaderboard_row(cli, teacher, tmp_path):
    net = perturbed(edm.edm_precond(**TINY_COND), seed=3).eval()
    write_nvlabs_pickle(tmp_path / "sid-snapshot.pkl", net)  # SiD's own layout: no init_sigma in the file
    argv = ["eval", "--generator", str(tmp_path / "sid-snapshot.pkl"), *suite_args(teacher),
            "--results", str(tmp_path / "results")]
    code, _, err = cli(*argv)
    assert code == 2 and "give --sigma-init" in err and not (tmp_path / "results").exists()
    code, out, err = cli(*argv, "--sigma-init", "2.5")
    assert code == 0, err
    assert final_row(run_of(out))["value"] == pytest.approx(expected_value(net, 2.5, teacher), rel=1e-6)
    code, out, err = cli("leaderboard", str(tmp_path / "results"), "--format", "csv")
    assert code == 0, err
    assert "external:sid-snapshot" in out


@pytest.mark.parametrize("prefix", ["", "module."], ids=["plain", "ddp-prefix"])
def test_dmd2_state_dict_is_mapped_onto_the_teachers_architecture(cli, teacher, tmp_path, prefix):
    net = perturbed(edm.edm_precond(**TINY_COND), seed=5).eval()
    torch.save({prefix + k: v for k, v in net.state_dict().items()}, tmp_path / "pytorch_model.bin")
    code, out, err = cli("eval", "--generator", str(tmp_path / "pytorch_model.bin"), *suite_args(teacher),
                         "--results", str(tmp_path / "results"))
    assert code == 0, err
    config = json.loads((run_of(out) / "config.json").read_text())
    assert config["hparams"] == {"format": "state-dict", "sigma_init": 80.0}  # DMD2's conditioning sigma
    assert final_row(run_of(out))["value"] == pytest.approx(expected_value(net, 80.0, teacher), rel=1e-6)


def _bad_files(tmp_path):
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    torch.save({"step": 3}, tmp_path / "notes.bin")
    small = dict(TINY_COND, model_channels=16)
    torch.save(edm.edm_precond(**small).state_dict(), tmp_path / "other-arch.bin")
    write_nvlabs_pickle(tmp_path / "uncond.pkl", edm.edm_precond(**dict(TINY_COND, label_dim=0)))
    (tmp_path / "file").write_text("x")


@pytest.mark.parametrize("name, extra, message", [
    ("missing.pkl", [], "does not exist"),
    ("list.pkl", [], "not a generator pickle"),
    ("notes.bin", [], "not a generator's state dict"),
    ("other-arch.bin", [], "has shape"),
    ("uncond.pkl", ["--sigma-init", "2.5"], "has label_dim 0"),
    ("file", [], "expected a .pkl"),
    ("uncond.pkl", ["--suite", "digits"], "scored on an EDM suite"),
    ("uncond.pkl", ["--sigma-init", "-1"], "--sigma-init"),
    ("uncond.pkl", ["--set", "lr=3"], "suite.KEY=VALUE options only"),
    ("uncond.pkl", ["--results", "FILE/sub"], "results"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli, teacher, tmp_path, name, extra, message):
    _bad_files(tmp_path)
    results = tmp_path / "results"
    args = suite_args(teacher) + ["--results", str(results)] + extra
    args = [str(tmp_path / "file" / "sub") if a == "FILE/sub" else a for a in args]
    code, out, err = cli("eval", "--generator", str(tmp_path / name), *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not results.exists()


def test_run_dir_and_generator_together_are_refused(cli, run_dir, teacher, tmp_path):
    code, _, err = cli("eval", str(run_dir), "--generator", str(teacher), *suite_args(teacher))
    assert code == 2 and "not both" in err
    code, _, err = cli("eval")
    assert code == 2 and "--generator FILE" in err


# --- the official code, where an extracted SiD tree is given -------------------------------------

SID_REPO = os.environ.get("BENCH_SID_REPO")

OFFICIAL_ROUND_TRIP = r"""
import pickle, sys, torch
sys.path.insert(0, sys.argv[1])
from training import networks
torch.manual_seed(0)  # the same network and inputs in both calls
net = networks.EDMPrecond(img_resolution=16, img_channels=3, label_dim=10, model_type="SongUNet", model_channels=16,
                          channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], augment_dim=9)
with torch.no_grad():
    for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
net.eval()
pickle.dump(dict(ema=net), open(sys.argv[2] + "/official.pkl", "wb"))
z, labels = torch.randn(4, 3, 16, 16), torch.eye(10)[[0, 3, 7, 9]]
torch.save(dict(z=z, labels=labels, out=net(2.5 * z, 2.5 * torch.ones(4, 1, 1, 1), labels).detach()),
           sys.argv[2] + "/ref.pt")
if len(sys.argv) > 3:  # our export, loaded by the official classes
    data = pickle.load(open(sys.argv[3], "rb"))
    assert type(data["ema"]) is networks.EDMPrecond
    s = data["init_sigma"]
    print(float((data["ema"](s * z, s * torch.ones(4, 1, 1, 1), labels) - torch.load(sys.argv[2] + "/ref.pt")["out"]).abs().max()))
"""


@pytest.mark.skipif(not SID_REPO, reason="set BENCH_SID_REPO to an extracted SiD repository to test against its code")
def test_official_sid_code_round_trip(tmp_path):
    from bench.nets.edm_pickle import write_by_name_pickle

    script = tmp_path / "official.py"
    script.write_text(OFFICIAL_ROUND_TRIP)
    subprocess.run([sys.executable, str(script), SID_REPO, str(tmp_path)], check=True, cwd=tmp_path)
    ref = torch.load(tmp_path / "ref.pt")
    net, _, _ = read_generator_pickle(tmp_path / "official.pkl")
    with torch.no_grad():
        ours = net(2.5 * ref["z"], torch.full((4,), 2.5), ref["labels"])
    assert (ours - ref["out"]).abs().max() < 1e-5
    write_by_name_pickle(tmp_path / "ours.pkl", net, {"init_sigma": 2.5})
    done = subprocess.run([sys.executable, str(script), SID_REPO, str(tmp_path), str(tmp_path / "ours.pkl")],
                          check=True, cwd=tmp_path, capture_output=True, text=True)
    assert float(done.stdout.strip().splitlines()[-1]) < 1e-5
