"""A t2i run's generator leaves the harness: ``bench export --format diffusers`` and ``bench generate`` of t2i.

The run is a few steps of SiD on the tiny PixArt pipeline of ``t2i_helpers`` (random weights, no downloads).
"""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image
from t2i_helpers import PROMPTS, build_tiny_pixart, build_tiny_stable_diffusion

from bench.metrics.base import Evaluator, Measurement

MISSING = [m for m in ("diffusers", "transformers", "sentencepiece") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: "
                                                      "pip install 'distill-bench[t2i]'")
CPU = torch.device("cpu")


class LatentStd(Evaluator):
    """Stands in for the text-to-image metrics (no weights here)."""

    n_samples = 4

    def evaluate(self, samples, cond=None):
        return [Measurement("pickscore_raw", float(samples.std()), len(samples), "latent std (test)")]


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory):
    """A finished SiD run on the tiny PixArt pipeline, with EMA snapshots (checkpoints at 2 and 4 images)."""
    from bench.cli import main
    from bench.suites.t2i import TextToImageSuite

    root = tmp_path_factory.mktemp("t2i-export")
    path, _ = build_tiny_pixart(root)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    mp = pytest.MonkeyPatch()
    mp.setattr(TextToImageSuite, "evaluator", lambda self, device: (self._pipeline(device), LatentStd())[1])
    argv = ["run", "--suite", "t2i", "--method", "sid", "--kimg", "0.004", "--batch", "2", "--eval-every", "0.004",
            "--checkpoint-every", "0.002", "--lr", "1e-3", "--quiet", "--device", "cpu",
            "--results", str(root / "results"), "--set", f"suite.pipeline={path}",
            "--set", f"suite.prompts={root / 'prompts.txt'}", "--set", "suite.eval_batch=4",
            "--set", "train.snapshots=true"]
    assert main(argv) == 0
    mp.undo()
    return {"dir": next((root / "results" / "t2i").iterdir()), "pipeline": path}


def _run(run_dir, kimg=None):
    from bench.train.snapshots import load_run

    return load_run(run_dir, CPU, kimg)[0]


def test_diffusers_folder_loads_with_from_pretrained_and_equals_the_ema_net(cli, t2i_run, tmp_path):
    from diffusers import PixArtTransformer2DModel

    out = tmp_path / "g"
    code, _, err = cli("export", str(t2i_run["dir"]), "--format", "diffusers", "-o", str(out))
    assert code == 0, err
    info = json.loads((out / "distill_bench.json").read_text())
    run = _run(t2i_run["dir"])
    ema_net = run.ema.denoiser.net.eval()
    loaded = PixArtTransformer2DModel.from_pretrained(out).eval()
    assert info["class"] == "PixArtTransformer2DModel" and info["component"] == "transformer"
    assert info["sigma_init"] == run.ema.sigma_init == 2.5 and info["prediction_type"] == "epsilon"
    assert info["timestep"] == pytest.approx(float(run.ema.denoiser.sigma_to_t(torch.tensor([2.5]))[0]))
    assert info["run_config"] == run.config and info["kimg"] == 0.004 and info["checkpoint"] == "state.pt"
    # the exported weights are the EMA's, not the teacher's (training moved them)
    teacher_net = run.parts.teacher.net
    assert any(not torch.equal(a, b) for a, b in zip(ema_net.state_dict().values(), teacher_net.state_dict().values()))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    emb, mask = torch.randn(3, 5, 16, generator=gen), torch.ones(3, 5, dtype=torch.long)
    t = torch.full((3,), info["timestep"])
    kwargs = dict(encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=t,
                  added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)
    with torch.no_grad():
        diff = (loaded(x, **kwargs)[0] - ema_net(x, **kwargs)[0]).abs().max().item()
    print(f"round trip max abs diff {diff:g}")
    assert diff == 0.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_readme_one_step_recipe_reproduces_the_generator(cli, t2i_run, tmp_path):
    """The README's diffusers snippet (pipeline with the exported transformer, one call, VAE decode) makes
    the run's EMA generator's latents and images."""
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel

    out = tmp_path / "g"
    assert cli("export", str(t2i_run["dir"]), "--format", "diffusers", "-o", str(out))[0] == 0
    info = json.loads((out / "distill_bench.json").read_text())
    transformer = PixArtTransformer2DModel.from_pretrained(out)
    pipe = PixArtAlphaPipeline.from_pretrained(t2i_run["pipeline"], transformer=transformer)
    prompts = PROMPTS[:2]
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the README snippet
        embeds, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                                max_sequence_length=info["max_sequence_length"])
        eps = pipe.transformer(info["input_scale"] * z, encoder_hidden_states=embeds, encoder_attention_mask=mask,
                               timestep=torch.full((len(prompts),), info["timestep"]),
                               added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample[:, :4]
        latents = info["sigma_init"] * (z - eps)
        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    run = _run(t2i_run["dir"])
    with torch.no_grad():
        ours = run.ema(z, run.suite.encode_cond(prompts))
    scale, diff = ours.abs().max().item(), (latents - ours).abs().max().item()
    image_diff = (images.clamp(-1, 1) - run.suite.to_images(ours)).abs().max().item()
    print(f"README recipe: latents max abs diff {diff:g} (scale {scale:g}), images {image_diff:g}")
    assert diff <= 1e-4 * scale and image_diff <= 1e-3


def test_a_unet_generator_exports_as_its_unet(tmp_path):
    """Stable Diffusion: the folder is the UNet's, and from_pretrained gives the same outputs."""
    from diffusers import UNet2DConditionModel

    from bench.train import runconfig
    from bench.train.export_diffusers import write_folder
    from bench.train.loop import Run

    path, _ = build_tiny_stable_diffusion(tmp_path)
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS))
    config = runconfig.resolve("t2i", "sim", sets={"suite.pipeline": str(path),
                                                   "suite.prompts": str(tmp_path / "prompts.txt")})
    run = Run(config, CPU, quiet=True)
    write_folder(run, "state.pt", tmp_path / "g")
    info = json.loads((tmp_path / "g" / "distill_bench.json").read_text())
    assert info["class"] == "UNet2DConditionModel" and info["component"] == "unet"
    assert not info["learned_sigma_channels"] and not info["micro_conditions"]
    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "g").eval()
    x, t, emb = torch.randn(2, 4, 8, 8), torch.full((2,), info["timestep"]), torch.randn(2, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, encoder_hidden_states=emb).sample,
                           run.ema.denoiser.net.eval()(x, t, encoder_hidden_states=emb).sample)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_the_x0_formula_of_the_json_is_the_generators(prediction_type):
    """``distill_bench.json``'s ``x0`` (evaluated on the network's raw output) equals G(z) for every prediction type."""
    from math import sqrt

    from bench.nets.precond import OneStepGenerator
    from bench.nets.vp import VPDenoiser
    from bench.train.export_diffusers import X0

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.7))

        def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
            return (self.w * x + 0.01 * t.view(-1, 1, 1, 1),)

    abar = torch.linspace(0.9999, 0.005, 1000)
    denoiser = VPDenoiser(Net(), "unet", abar, prediction_type, torch.zeros(1, 3, 4), None)
    sigma_init, z = 2.5, torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        x_vp = sigma_init / sqrt(1 + sigma_init**2) * z
        out = denoiser.net(x_vp, denoiser.sigma_to_t(torch.full((2,), sigma_init)))[0]
        expected = OneStepGenerator(denoiser, sigma_init)(z)
    got = eval(X0[prediction_type], {"sigma_init": sigma_init, "z": z, "out": out, "sqrt": sqrt})
    assert (got - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("argv, message", [
    (["--format", "safetensors", "-o", "{tmp}/g.safetensors"], "--format diffusers"),
    (["--format", "diffusers", "-o", "{tmp}/exists"], "exists; give a new folder"),
    (["--format", "diffusers", "-o", "{tmp}/g.safetensors"], "writes a folder"),
])
def test_t2i_export_bad_input_is_one_line_exit_2_and_writes_nothing(cli, t2i_run, tmp_path, argv, message):
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "x").write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = cli("export", str(t2i_run["dir"]), *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_other_suites_refuse_format_diffusers(cli, tmp_path):
    from bench_helpers import tiny_run_args

    assert cli(*tiny_run_args(tmp_path / "results", kimg="0.128"))[0] == 0
    run_dir = next((tmp_path / "results" / "gaussian").iterdir())
    code, _, err = cli("export", str(run_dir), "--format", "diffusers", "-o", str(tmp_path / "g"))
    assert code == 2 and "exports t2i runs" in err and not (tmp_path / "g").exists()


# --- bench generate of t2i -----------------------------------------------------------------------

def expected_t2i(run_dir, seeds, kimg=None):
    """The run's EMA generator on each seed's latent and prompt, decoded by the VAE, uint8 NHWC; the prompts."""
    from bench.metrics.images import to_uint8
    from bench.train.evaluation import generate
    from bench.train.generate import seeded_latents

    run = _run(run_dir, kimg)
    z, cond = seeded_latents(run.suite, seeds)
    samples = generate(run.ema, z, cond, CPU, 256, run.config["seed"])
    return to_uint8(run.suite.to_images(samples)).permute(0, 2, 3, 1).numpy(), cond["prompts"]


def test_generate_t2i_writes_decoded_pngs_and_their_prompts(cli, t2i_run, tmp_path):
    out = tmp_path / "pngs"
    code, _, err = cli("generate", str(t2i_run["dir"]), "-o", str(out), "--n", "3", "--batch", "2", "--quiet")
    assert code == 0, err
    images, prompts = expected_t2i(t2i_run["dir"], range(3))
    names = [f"000000/{i:06d}.png" for i in range(3)]
    for name, image in zip(names, images):
        assert image.shape == (16, 16, 3) and np.array_equal(np.asarray(Image.open(out / name)), image)
    assert json.loads((out / "prompts.json").read_text()) == dict(zip(names, prompts))
    assert set(prompts) <= set(PROMPTS) and not (out / "dataset.json").exists()


def test_generate_t2i_npz_holds_images_and_a_prompt_array(cli, t2i_run, tmp_path):
    assert cli("generate", str(t2i_run["dir"]), "-o", str(tmp_path / "s.npz"), "--n", "2", "--quiet")[0] == 0
    data = np.load(tmp_path / "s.npz")  # allow_pickle=False: the prompts are a unicode array
    images, prompts = expected_t2i(t2i_run["dir"], range(2))
    assert np.array_equal(data["arr_0"], images) and list(data["prompts"]) == prompts and "arr_1" not in data


# --- snapshots and --kimg --------------------------------------------------------------------------

def test_snapshots_are_written_per_checkpoint_and_generate_picks_by_kimg(cli, t2i_run, tmp_path):
    from bench.train import checkpoint, snapshots

    run_dir = t2i_run["dir"]
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == ["ema-000000002.pt", "ema-000000004.pt"]
    state = torch.load(run_dir / "snapshots" / "ema-000000002.pt", weights_only=True)
    assert set(state) == {"ema", "progress"} and state["progress"]["nimg"] == 2
    assert snapshots.available(run_dir) == {2: run_dir / "snapshots" / "ema-000000002.pt",
                                            4: run_dir / "snapshots" / "ema-000000004.pt"}
    early, late = _run(run_dir, 0.002), _run(run_dir)
    assert any(not torch.equal(a, b) for a, b in zip(early.ema.state_dict().values(), late.ema.state_dict().values()))
    last = checkpoint.read(run_dir / "state.pt", "cpu")["ema"]
    assert all(torch.equal(v, last[k]) for k, v in _run(run_dir, 0.004).ema.state_dict().items())
    code, _, err = cli("generate", str(run_dir), "-o", str(tmp_path / "k.npz"), "--n", "2", "--kimg", "0.002",
                       "--quiet")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "k.npz")["arr_0"], expected_t2i(run_dir, range(2), kimg=0.002)[0])


def test_unknown_kimg_lists_the_available_ones(cli, t2i_run, tmp_path):
    code, _, err = cli("generate", str(t2i_run["dir"]), "-o", str(tmp_path / "k.npz"), "--kimg", "0.003")
    assert code == 2 and "available kimg: 0.002, 0.004" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "k.npz").exists()


# --- NASA: a negative prompt for the one-step generator -----------------------------------------------

def test_generate_with_a_negative_prompt_steers_with_nasa(cli, t2i_run, tmp_path):
    """``--nasa-scale 0`` gives the plain images; a positive scale gives the generator under ``nasa`` with
    the negative prompt encoded as the pipeline encodes prompts (a prompt outside the run's prompt set)."""
    from bench.metrics.images import to_uint8
    from bench.nets.nasa import nasa
    from bench.train.evaluation import generate
    from bench.train.generate import seeded_latents

    plain, _ = expected_t2i(t2i_run["dir"], range(2))
    negative = "a blurry photo"
    for scale in ("0", "0.8"):
        code, _, err = cli("generate", str(t2i_run["dir"]), "-o", str(tmp_path / f"n{scale}.npz"), "--n", "2",
                           "--quiet", "--negative-prompt", negative, "--nasa-scale", scale)
        assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "n0.npz")["arr_0"], plain)
    steered = np.load(tmp_path / "n0.8.npz")["arr_0"]
    assert not np.array_equal(steered, plain)

    run = _run(t2i_run["dir"])
    pipe = run.suite._pipeline()
    pipe.text_encoder = None  # as after training: the suite reloads it for a prompt it has not seen
    embeds, mask = run.suite.encode_prompt(negative)
    assert pipe.text_encoder is None and embeds.shape[0] == 1 and mask.shape == embeds.shape[:2]
    z, cond = seeded_latents(run.suite, range(2))
    with nasa(run.ema.denoiser.net, embeds, mask, 0.8):
        samples = generate(run.ema, z, cond, CPU, 256, run.config["seed"])
    assert np.array_equal(to_uint8(run.suite.to_images(samples)).permute(0, 2, 3, 1).numpy(), steered)


@pytest.mark.parametrize("args, message", [(["--nasa-scale", "-1"], "--nasa-scale")])
def test_generate_refuses_a_bad_nasa_scale(cli, t2i_run, tmp_path, args, message):
    code, _, err = cli("generate", str(t2i_run["dir"]), "-o", str(tmp_path / "x.npz"), "--n", "2", "--quiet",
                       "--negative-prompt", "blur", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
