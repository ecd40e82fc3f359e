"""The cifar10 and imagenet64 suites with tiny teachers of the real classes (.pt and NVlabs .pkl)."""
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from bench_helpers import read_jsonl
from edm_helpers import perturbed, write_nvlabs_pickle

from bench import suites
from bench.errors import BadInput
from bench.nets import edm
from bench.nets.edm_pickle import save_teacher
from bench.metrics.base import Evaluator, Measurement
from bench.suites.edm import Cifar10Suite, ImageNet64Suite

TINY_CIFAR = dict(img_resolution=32, img_channels=3, model_type="SongUNet", model_channels=8, channel_mult=[1, 1],
                  num_blocks=1, attn_resolutions=[16], augment_dim=9, dropout=0.13, channel_mult_emb=2)
TINY_IMAGENET = dict(img_resolution=64, img_channels=3, label_dim=1000, model_type="DhariwalUNet", model_channels=16,
                     channel_mult=[1, 1], num_blocks=1, attn_resolutions=[32], channel_mult_emb=2, use_fp16=True)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Tiny teachers: unconditional CIFAR-10 as .pt, class-conditional as NVlabs .pkl, ImageNet-64 as .pkl."""
    root = tmp_path_factory.mktemp("teachers")
    torch.manual_seed(0)
    save_teacher(perturbed(edm.edm_precond(**TINY_CIFAR)), root / "uncond.pt")
    write_nvlabs_pickle(root / "cond.pkl", perturbed(edm.edm_precond(**{**TINY_CIFAR, "label_dim": 10})))
    write_nvlabs_pickle(root / "imagenet.pkl", perturbed(edm.edm_precond(**TINY_IMAGENET)))
    return root


class CountingDenoiser:
    """Counts network evaluations of a sampler; denoises to zero."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        return torch.zeros_like(x)


def test_registered_under_the_cli_names():
    assert suites.get("cifar10") is Cifar10Suite and suites.get("imagenet64") is ImageNet64Suite


def test_cifar10_build_gives_teacher_generator_and_fake_from_the_checkpoint(teachers):
    suite = Cifar10Suite(teacher=str(teachers / "uncond.pt"))
    parts = suite.build(sigma_init=2.5, device=torch.device("cpu"))
    assert suite.latent_shape == (3, 32, 32) and suite.sample_cond(4, torch.Generator()) is None
    assert not any(p.requires_grad for p in parts.teacher.parameters())
    assert all(p.requires_grad for p in parts.generator.parameters()) and parts.fake.training
    teacher_ids = {id(p) for p in parts.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in [*parts.generator.parameters(), *parts.fake.parameters()]}
    z = torch.randn(2, 3, 32, 32)
    parts.generator.eval()
    with torch.no_grad():
        x = parts.generator(z)
        assert x.shape == (2, 3, 32, 32)
        assert torch.equal(x, parts.teacher(2.5 * z, torch.full((2,), 2.5)))  # G(z) = D(sigma_init z; sigma_init)


def test_cifar10_teacher_sample_is_heun_with_35_evaluations(teachers):
    suite = Cifar10Suite(teacher=str(teachers / "uncond.pt"))
    counter = CountingDenoiser()
    suite.teacher_sample(counter, torch.randn(2, 3, 32, 32))
    assert counter.calls == 35 and suite.teacher_info() == {"sampler": "heun", "steps": 18, "nfe": 35}
    teacher = suite.load_teacher(torch.device("cpu"))
    with torch.no_grad():
        x = suite.teacher_sample(teacher, torch.randn(2, 3, 32, 32))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()


def test_cifar10_conditional_labels_are_uniform_one_hot(teachers):
    suite = Cifar10Suite(teacher=str(teachers / "cond.pkl"), cond=True)
    labels = suite.sample_cond(5000, torch.Generator().manual_seed(0))
    assert labels.shape == (5000, 10) and torch.equal(labels.sum(1), torch.ones(5000))
    counts = labels.sum(0)
    assert counts.min() > 400 and counts.max() < 600
    parts = suite.build(2.5, torch.device("cpu"))
    with torch.no_grad():
        out = parts.generator(torch.randn(3, 3, 32, 32), labels[:3])
        samples = suite.teacher_sample(parts.teacher, torch.randn(2, 3, 32, 32), labels[:2])
    assert out.shape == (3, 3, 32, 32) and torch.isfinite(samples).all()


def test_teacher_that_does_not_fit_the_suite_is_refused(teachers):
    with pytest.raises(BadInput, match="label_dim 10.*unconditional network"):
        Cifar10Suite(teacher=str(teachers / "cond.pkl")).build(2.5, torch.device("cpu"))
    with pytest.raises(BadInput, match=r"makes \(3, 32, 32\) images, suite imagenet64 needs \(3, 64, 64\)"):
        ImageNet64Suite(teacher=str(teachers / "cond.pkl")).build(2.5, torch.device("cpu"))


def test_imagenet64_suite(teachers):
    suite = ImageNet64Suite(teacher=str(teachers / "imagenet.pkl"))
    parts = suite.build(80.0, torch.device("cpu"))
    labels = suite.sample_cond(2, torch.Generator().manual_seed(0))
    assert labels.shape == (2, 1000)
    with torch.no_grad():
        assert parts.generator(torch.randn(2, 3, 64, 64), labels).shape == (2, 3, 64, 64)
    counter = CountingDenoiser()
    suite.teacher_sample(counter, torch.randn(1, 3, 64, 64), labels[:1])
    assert counter.calls == 79 and suite.teacher_info()["steps"] == 40
    assert not parts.teacher.use_fp16 and not parts.fake.use_fp16  # the file says fp16; the runner decides
    assert ImageNet64Suite(teacher=str(teachers / "imagenet.pkl"), fp16=True).load_teacher("cpu").use_fp16


def test_missing_released_files_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(BadInput, match=rf"edm-cifar10-32x32-cond-vp.pkl .*not found in {tmp_path}.*bench weights fetch edm-cifar10-cond.*suite.teacher=PATH"):
        Cifar10Suite(cond=True).build(2.5, torch.device("cpu"))
    with pytest.raises(BadInput, match="imagenet-64x64.npz .*not found.*suite.reference=PATH"):
        ImageNet64Suite().reference()
    (tmp_path / "imagenet-64x64.npz").write_bytes(b"")
    assert ImageNet64Suite().reference() == str(tmp_path / "imagenet-64x64.npz")


@pytest.mark.parametrize("options, message", [
    ({"n_eval": 0}, "n_eval must be an integer of at least 2"),
    ({"teacher_steps": 2.5}, "suite.teacher_steps must be an integer"),
    ({"cond": "yes"}, "cond must be true or false"),
    ({"teacher": 3}, "teacher must be a path"),
    ({"steps": 3}, "unknown option 'steps'"),
])
def test_bad_options(options, message):
    with pytest.raises(BadInput, match=message):
        Cifar10Suite(**options)


def test_evaluator_asks_the_evaluation_layer_for_inception_fid_and_is(monkeypatch):
    seen = {}

    class FakeFidelity:
        def __init__(self, **kwargs):
            seen.update(kwargs)

    module = types.ModuleType("bench.metrics.fidelity")
    module.FidelityEvaluator = FakeFidelity
    monkeypatch.setitem(sys.modules, "bench.metrics.fidelity", module)
    Cifar10Suite(n_eval=5000).evaluator(torch.device("cpu"))
    assert seen == dict(reference="cifar10-train", extractor="inception", metrics=("fid", "is"),
                        device=torch.device("cpu"), n_samples=5000)


class PixelStats(Evaluator):
    """Stands in for Inception FID in the runner test (the weights are not available here)."""

    n_samples = 8

    def evaluate(self, samples, cond=None):
        return [Measurement("fid", float(samples.std()), len(samples), "pixel std (test)")]


@pytest.fixture
def runner_without_inception(monkeypatch):
    monkeypatch.setattr(Cifar10Suite, "evaluator", lambda self, device: PixelStats())


@pytest.mark.slow
def test_runner_distils_and_evaluates_the_teacher_from_a_checkpoint(tmp_path, cli, teachers, runner_without_inception):
    common = ["--suite", "cifar10", "--results", str(tmp_path), "--set", f"suite.teacher={teachers / 'cond.pkl'}",
              "--set", "suite.cond=true", "--device", "cpu"]
    code, out, err = cli("run", "--method", "sid", "--kimg", "0.008", "--batch", "4", "--eval-every", "0.004",
                         "--checkpoint-every", "0.008", "--quiet", *common)
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "done"
    assert [r["kimg"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [0.0, 0.004, 0.008]
    code, out, err = cli("run", "--method", "teacher", *common)
    assert code == 0, err
    config = json.loads((Path(out.strip().splitlines()[-1]) / "config.json").read_text())
    assert config["hparams"] == {"sampler": "heun", "steps": 18, "nfe": 35}


def test_missing_teacher_file_is_bad_input_and_leaves_no_run(tmp_path, cli):
    code, _, err = cli("run", "--suite", "cifar10", "--method", "sid", "--results", str(tmp_path / "results"),
                       "--set", f"suite.teacher={tmp_path / 'none.pkl'}", "--kimg", "1")
    assert code == 2 and "none.pkl does not exist" in err
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("config.json"))


# --- the papers' presets ------------------------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _runs(name, quick=False):
    from bench.train import launch

    runs = launch.expand(launch.load_sweep(CONFIGS / name, quick=quick))
    return [r for r in runs if r["method"] != "teacher"], [r for r in runs if r["method"] == "teacher"]


def test_robustness_preset_is_sim_sid_di_at_batch_256_and_two_learning_rates():
    runs, teacher = _runs("cifar10-robustness.yaml")
    assert sorted((r["method"], r["lr_g"], r["lr_fake"]) for r in runs) == sorted(
        (m, lr, lr) for m in ("sim", "sid", "di") for lr in (1e-4, 1e-5))
    assert {r["batch"] for r in runs} == {256} and {r["precision"] for r in runs} == {"fp32"}
    assert {r["suite_options"]["cond"] for r in runs} == {False}
    assert teacher[0]["hparams"] == {"sampler": "heun", "steps": 18, "nfe": 35}
    quick, _ = _runs("cifar10-robustness.yaml", quick=True)
    assert len(quick) == 6 and {r["kimg"] for r in quick} == {10.0}


@pytest.mark.parametrize("name, method, batch, lr, sigma_init, kimg", [
    ("cifar10-sid.yaml", "sid", 256, 1e-5, 2.5, 500000),
    ("cifar10-sim.yaml", "sim", 256, 1e-5, 2.5, 500000),  # SiD's settings
    ("cifar10-di.yaml", "di", 128, 1e-5, 1.0, 200000),
])
def test_cifar10_presets_carry_the_published_recipes(name, method, batch, lr, sigma_init, kimg):
    (run,), _ = _runs(name)
    assert (run["method"], run["batch"], run["lr_g"], run["lr_fake"]) == (method, batch, lr, lr)
    assert run["optimizer"]["name"] == "adam" and run["optimizer"]["betas"] == [0.0, 0.999]
    assert run["train"]["sigma_init"] == sigma_init and run["train"]["ema_halflife_kimg"] == 500
    assert run["precision"] == "fp32" and run["kimg"] == kimg
    assert run["hparams"]["weighting"] == "paper"
    assert run["train"]["dropout"] == 0.13 and run["train"]["augment_p"] == 0.12


def test_imagenet64_dmd2_preset_carries_the_published_recipe():
    (run,), (teacher,) = _runs("imagenet64-dmd2.yaml")
    assert (run["method"], run["batch"], run["lr_g"], run["precision"]) == ("dmd2", 280, 2e-6, "bf16")
    assert run["optimizer"] == {"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}
    assert run["train"]["grad_clip"] == 10 and run["train"]["warmup_iterations"] == pytest.approx(500 / 7)
    assert run["train"]["dropout"] == 0 and run["train"]["augment_p"] == 0
    assert run["kimg"] * 1000 / 280 * 5 == pytest.approx(410_000)  # the no-GAN run, in official iterations
    assert run["train"]["ema_halflife_kimg"] is None and run["train"]["sigma_init"] == 80
    assert run["hparams"]["fake_updates_per_generator_update"] == 5 and run["hparams"]["gan_weight"] == 0
    assert teacher["hparams"]["nfe"] == 79
