"""The t2i suite on tiny diffusers pipelines built from configs with random weights (no downloads).

Option checks, prompt files and presets need no diffusers (the suite reads only JSON configs
until it loads the pipeline); everything that runs a network skips without the t2i extra.
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import methods
from tolerances import assert_close_to_scale
from bench.errors import BadInput
from bench.nets import vp
from bench.suites import t2i
from bench.train import runconfig
from bench.train.loop import Run
from bench.train.step import check_finite, training_step
from t2i_helpers import PROMPTS, build_tiny_pixart, build_tiny_stable_diffusion

MISSING = [m for m in ("diffusers", "transformers", "sentencepiece") if importlib.util.find_spec(m) is None]
needs_t2i = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed: "
                                                     "pip install 'distill-bench[t2i]'")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("t2i")
    path, pipe = build_tiny_pixart(root)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return {"path": path, "pipe": pipe, "prompts": prompts, "root": root}


def suite_for(tiny, **options):
    options = {"teacher_steps": 4, "eval_batch": 4, "n_eval": 8, **options}
    return t2i.TextToImageSuite(pipeline=str(tiny["path"]), prompts=str(tiny["prompts"]), **options)


@pytest.fixture
def configs_only(tmp_path):
    """The JSON files of the tiny PixArt pipeline, no weights: enough to construct the suite."""
    path = tmp_path / "pixart-configs"
    files = {"model_index.json": {"_class_name": "PixArtAlphaPipeline", "transformer": [], "vae": [],
                                  "text_encoder": [], "tokenizer": [], "scheduler": []},
             "transformer/config.json": {"in_channels": 4, "sample_size": 8, "patch_size": 2},
             "vae/config.json": {"block_out_channels": [8, 16]},
             "scheduler/scheduler_config.json": {"_class_name": "DPMSolverMultistepScheduler"}}
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(json.dumps(content))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return {"path": path, "prompts": prompts}


def test_latent_shape_and_resolution(configs_only):
    suite = suite_for(configs_only)
    assert suite.resolution == 16 and suite.latent_shape == (4, 8, 8)
    assert suite_for(configs_only, resolution=32).latent_shape == (4, 16, 16)
    with pytest.raises(BadInput, match="resolution"):
        suite_for(configs_only, resolution=17)
    assert suite.teacher_info() == {"sampler": "DPMSolverMultistepScheduler", "steps": 4, "guidance_scale": 4.5}


@needs_t2i
def test_denoiser_matches_vp_parameterisation(tiny):
    """At a discrete timestep, D(x; sigma_t) is the pipeline's x0 estimate from its epsilon output."""
    suite = suite_for(tiny)
    teacher = suite.load_teacher(CPU)
    net = tiny["pipe"].transformer.eval()
    abar = tiny["pipe"].scheduler.alphas_cumprod.clone()
    cond = suite.encode_cond(PROMPTS[:3])
    for t in (10, 500, 990):
        sigma = ((1 - abar[t]) / abar[t]).sqrt().float()
        x = torch.randn(3, 4, 8, 8) * (1 + sigma**2).sqrt()
        # timesteps are recovered by interpolating log-sigma: a few epsilons of t itself
        assert_close_to_scale(teacher.sigma_to_t(sigma.expand(3)), torch.full((3,), float(t)))
        x_vp = x / (1 + sigma**2).sqrt()
        emb, mask = cond["prompt_embeds"], cond["prompt_attention_mask"]
        null = suite.encode_cond([""] * 3)
        null_e = vp.pad_sequence(null["prompt_embeds"], emb.shape[1])
        null_m = vp.pad_sequence(null["prompt_attention_mask"], emb.shape[1])
        tt = torch.full((3,), float(t))
        no_micro = {"resolution": None, "aspect_ratio": None}
        with torch.no_grad():
            eps_c = net(x_vp, encoder_hidden_states=emb, encoder_attention_mask=mask, timestep=tt,
                        added_cond_kwargs=no_micro).sample[:, :4]
            eps_u = net(x_vp, encoder_hidden_states=null_e, encoder_attention_mask=null_m, timestep=tt,
                        added_cond_kwargs=no_micro).sample[:, :4]
            eps = eps_u + 4.5 * (eps_c - eps_u)
            expected = (x_vp - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
            got = teacher(x, sigma.expand(3), cond)
        # at t=990 the x0 estimates reach ~500 (eps amplified by 1/sqrt(abar)): tolerance to that scale
        assert_close_to_scale(got, expected)


@needs_t2i
def test_v_prediction_conversion(tmp_path):
    """v-prediction: D = sqrt(abar) x_vp - sqrt(1 - abar) v, whatever sigma."""
    path, pipe = build_tiny_pixart(tmp_path, prediction_type="v_prediction", scheduler="ddim")
    suite = t2i.TextToImageSuite(pipeline=str(path), guidance_scale=1.0)
    teacher = suite.load_teacher(CPU)
    assert teacher.guidance_scale is None  # guidance 1 is the plain conditional model
    cond = suite.sample_cond(2, torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.3, 7.0])
    x = torch.randn(2, 4, 8, 8)
    abar = 1 / (1 + sigma**2)
    x_vp = x * abar.sqrt().view(-1, 1, 1, 1)
    with torch.no_grad():
        v = teacher.vp_output(x_vp, teacher.sigma_to_t(sigma), cond)
        expected = abar.sqrt().view(-1, 1, 1, 1) * x_vp - (1 - abar).sqrt().view(-1, 1, 1, 1) * v
        assert_close_to_scale(teacher(x, sigma, cond), expected)


@needs_t2i
def test_scheduler_sampler_matches_pipeline(tiny):
    """teacher_sample with the pipeline's own scheduler reproduces the pipeline's latents."""
    suite = suite_for(tiny)
    teacher = suite.load_teacher(CPU)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    prompts = PROMPTS[:2]
    ours = suite.teacher_sample(teacher, z, suite.encode_cond(prompts))
    with torch.no_grad():
        ref = tiny["pipe"](prompt=prompts, latents=z.clone(), num_inference_steps=4, guidance_scale=4.5,
                           output_type="latent", height=16, width=16, use_resolution_binning=False,
                           clean_caption=False).images
    # Random weights give latents in the hundreds; padding differs (masked), so compare relatively.
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max(), (ours - ref).abs().max()
    heun = suite_for(tiny, teacher_sampler="heun").teacher_sample(teacher, z, suite.encode_cond(prompts))
    assert heun.shape == z.shape and torch.isfinite(heun).all()


@needs_t2i
def test_sample_cond_caches_and_is_seeded(tiny):
    suite = suite_for(tiny)
    a = suite.sample_cond(5, torch.Generator().manual_seed(1))
    b = suite.sample_cond(5, torch.Generator().manual_seed(1))
    assert a["prompts"] == b["prompts"] and set(a["prompts"]) <= set(PROMPTS)
    assert torch.equal(a["prompt_embeds"], b["prompt_embeds"])
    assert a["prompt_embeds"].shape[:2] == a["prompt_attention_mask"].shape
    assert suite._pipe.text_encoder is None  # every prompt encoded once, the encoder freed
    # Padding does not change the embedding of a prompt: trimmed rows equal the pipeline's own encoding.
    emb, mask, *_ = tiny["pipe"].encode_prompt([PROMPTS[0]], do_classifier_free_guidance=False, device=CPU)
    n = int(mask.sum())
    own = suite.encode_cond([PROMPTS[0]])
    assert_close_to_scale(own["prompt_embeds"][0, :n], emb[0, :n])


@needs_t2i
@pytest.mark.parametrize("method", [m for m in methods.available()  # guidance methods need a guided suite,
                                    if "guidance" not in methods.create(m).training_recipe.generator_inputs
                                    and methods.create(m).training_recipe.students is None])  # msd class labels
def test_distillation_steps_every_method(tiny, method, monkeypatch):
    """A runner training step of each method on the tiny pipeline: finite, both networks move (the
    generator alone for a method with no fake score).

    The suite has no real images; methods with a discriminator get random latents as real data, which
    is enough to train the head on the fake network's middle-block features.
    """
    monkeypatch.setattr(t2i.TextToImageSuite, "real_data",
                        lambda self, n, generator: (torch.randn(n, *self.latent_shape, generator=generator), None))
    sets = {"suite.pipeline": str(tiny["path"]), "suite.prompts": str(tiny["prompts"]), "suite.teacher_steps": 2,
            "suite.eval_batch": 4, "train.n_regression_pairs": 4,
            "train.warmup_iterations": 0}  # DMD2's warm-up holds the first iteration's lr at zero
    config = runconfig.resolve("t2i", method, lr=1e-4, batch=2, batch_gpu=2, kimg=1, sets=sets)
    config["device"] = "cpu"
    run = Run(config, CPU, quiet=True)
    for provider in run.inputs:
        provider.prepare(run)
    before = [p.detach().clone() for p in run.generator.parameters()]
    fake_before = [p.detach().clone() for p in run.fake.parameters()]
    row = training_step(run)
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())
    check_finite(run)
    assert any(not torch.equal(a, b) for a, b in zip(before, run.generator.parameters()))
    fake_moved = any(not torch.equal(a, b) for a, b in zip(fake_before, run.fake.parameters()))
    assert fake_moved == run.recipe.fake_score  # sCM trains no fake score
    assert all(not p.requires_grad for p in run.parts.teacher.parameters())
    if run.parts.discriminator is not None:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in run.parts.discriminator.head.parameters())


@needs_t2i
def test_to_images_decodes(tiny):
    suite = suite_for(tiny)
    suite.load_teacher(CPU)
    images = suite.to_images(torch.randn(5, 4, 8, 8))
    assert images.shape == (5, 3, 16, 16) and images.min() >= -1 and images.max() <= 1


def test_read_prompts_coco_and_text(tmp_path):
    coco = tmp_path / "captions_val2017.json"
    coco.write_text(json.dumps({"images": [], "annotations": [{"image_id": 1, "caption": " A dog. "},
                                                              {"image_id": 1, "caption": "A dog."},
                                                              {"image_id": 2, "caption": "Two cats"}]}))
    assert t2i.read_prompts(coco) == ["A dog.", "Two cats"]
    plain = tmp_path / "p.txt"
    plain.write_text("one\n\n two \n")
    assert t2i.read_prompts(plain) == ["one", "two"]
    shipped = t2i.read_prompts(t2i.DEFAULT_PROMPTS)
    assert len(shipped) >= 50
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(BadInput, match="annotations"):
        t2i.read_prompts(bad)
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(BadInput, match="no prompts"):
        t2i.read_prompts(tmp_path / "empty.txt")
    with pytest.raises(BadInput, match="does not exist"):
        t2i.read_prompts(tmp_path / "missing.txt")


def test_default_pipeline_from_bench_weights(configs_only, tmp_path, monkeypatch):
    """No ``pipeline`` option: the ``pixart-alpha`` entry of bench weights, or one message naming it."""
    weights = tmp_path / "weights"
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BadInput, match="PixArt-XL-2-512x512.*bench weights fetch pixart-alpha"):
        t2i.TextToImageSuite()
    weights.mkdir()
    configs_only["path"].rename(weights / "PixArt-XL-2-512x512")
    suite = t2i.TextToImageSuite(prompts=str(configs_only["prompts"]))
    assert suite.directory == weights / "PixArt-XL-2-512x512" and suite.latent_shape == (4, 8, 8)


def test_bad_options(configs_only, tmp_path):
    with pytest.raises(BadInput, match="model_index.json"):
        t2i.TextToImageSuite(pipeline=str(tmp_path / "nowhere"))
    for key, value, match in [("guidance_scale", 0.5, "guidance_scale"), ("teacher_steps", 0, "teacher_steps"),
                              ("teacher_sampler", "euler", "teacher_sampler"), ("dtype", "fp8", "dtype"),
                              ("metrics", ["fid"], "unknown metric"), ("nonsense", 1, "unknown option")]:
        with pytest.raises(BadInput, match=match):
            suite_for(configs_only, **{key: value})


PRESETS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("t2i-*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.name for p in PRESETS])
def test_presets_expand(configs_only, tmp_path, preset):
    """Every t2i preset resolves to valid runs once its pipeline exists; without it, one clear error."""
    import yaml

    from bench.train import launch

    spec = yaml.safe_load(preset.read_text())
    if not (Path(spec["suite_options"]["pipeline"]).expanduser() / "model_index.json").exists():
        with pytest.raises(BadInput, match="model_index.json"):
            launch.expand(launch.load_sweep(preset))
    spec["suite_options"]["pipeline"] = str(configs_only["path"])
    local = tmp_path / preset.name
    local.write_text(yaml.safe_dump(spec))
    for quick in (False, True):
        configs = launch.expand(launch.load_sweep(local, quick=quick))
        runs = [c for c in configs if c["method"] != runconfig.TEACHER]
        assert runs and all(c["suite"] == "t2i" and c["suite_options"]["guidance_scale"] == 4.5 for c in configs)
        assert {c["method"] for c in runs} == set(spec["grid"]["method"])


@needs_t2i
def test_unet_pipeline_sampler_and_step(tmp_path):
    """The pipeline class decides: a UNet/CLIP pipeline samples as diffusers does and trains a step."""
    path, pipe = build_tiny_stable_diffusion(tmp_path)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    suite = t2i.TextToImageSuite(pipeline=str(path), prompts=str(prompts), teacher_steps=3, guidance_scale=3.0)
    assert suite.kind == "unet" and suite.latent_shape == (4, 8, 8)
    teacher = suite.load_teacher(CPU)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    cond = suite.encode_cond(PROMPTS[:2])
    assert cond["prompt_attention_mask"] is None and cond["prompt_embeds"].shape == (2, 16, 16)
    ours = suite.teacher_sample(teacher, z, cond)
    with torch.no_grad():
        ref = pipe(prompt=PROMPTS[:2], latents=z.clone(), num_inference_steps=3, guidance_scale=3.0,
                   output_type="latent", height=16, width=16).images
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max(), (ours - ref).abs().max()
    parts = suite.build(2.5, CPU)
    loss, _ = methods.create("sim").generator_loss(parts.generator(z, cond), parts.teacher, parts.fake, cond=cond)
    loss.backward()
    assert all(p.grad is not None for p in parts.generator.parameters() if p.requires_grad)


def _metrics_t2i():
    """``bench.metrics.t2i`` (branch metrics) or a skip naming what is missing."""
    if importlib.util.find_spec("bench.metrics") is None or importlib.util.find_spec("bench.metrics.t2i") is None:
        pytest.skip("bench.metrics.t2i (the text-to-image metrics) is not merged yet")
    from bench.metrics import t2i as metrics_t2i

    return metrics_t2i


def tiny_pickscore(model_dir: Path, processor_dir: Path):
    """A tiny CLIP model and processor in PickScore's layout (character-level tokenizer)."""
    import transformers
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    work = processor_dir.parent
    work.mkdir(parents=True, exist_ok=True)
    (work / "clip-vocab.json").write_text(json.dumps(vocab))
    (work / "clip-merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(work / "clip-vocab.json"), str(work / "clip-merges.txt"))
    images = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(processor_dir)
    text = {"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": vocab["<|startoftext|>"],
            "eos_token_id": vocab["<|endoftext|>"]}
    vision = {"image_size": 32, "patch_size": 16, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2}
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)
                           ).save_pretrained(model_dir)


def tiny_scorers(metrics_t2i, directory: Path) -> dict:
    """Every text-to-image metric whose library is installed, as tiny random models of the real classes."""
    scorers = {}
    tiny_pickscore(directory / "pick-model", directory / "pick-processor")
    scorers["pickscore_raw"] = metrics_t2i.PickScorer.from_files(directory / "pick-model", directory / "pick-processor")
    if importlib.util.find_spec("open_clip") is not None:
        import open_clip

        cfg = {"embed_dim": 16, "quick_gelu": True,
               "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
        (directory / "t2i-suite-tiny-clip.json").write_text(json.dumps(cfg))
        open_clip.add_model_config(directory / "t2i-suite-tiny-clip.json")
        torch.save(open_clip.create_model("t2i-suite-tiny-clip", pretrained=None).state_dict(), directory / "clip.pt")
        torch.save(metrics_t2i.AestheticHead(16).state_dict(), directory / "head.pth")
        scorers["aesthetic"] = metrics_t2i.AestheticScorer.from_files(directory / "clip.pt", directory / "head.pth",
                                                                      model_name="t2i-suite-tiny-clip")
        scorers["clip_score"] = metrics_t2i.ClipScorer.from_files(directory / "clip.pt", model_name="t2i-suite-tiny-clip")
    if all(importlib.util.find_spec(m) is not None for m in ("ImageReward", "fairscale")):
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "in", "of", "on", "red", "cat", "##s"]
        (directory / "vocab.txt").write_text("\n".join(words) + "\n")
        med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 768, "intermediate_size": 32,
               "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 2,
               "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(words) + 2,
               "encoder_width": 32, "add_cross_attention": True, "attention_probs_dropout_prob": 0.0,
               "hidden_dropout_prob": 0.0, "initializer_range": 0.02}
        (directory / "med_config.json").write_text(json.dumps(med))
        vision = {"embed_dim": 32, "depth": 1, "num_heads": 2}
        built = metrics_t2i.ImageRewardScorer.build(directory / "med_config.json", directory / "vocab.txt", vision)
        torch.save(built.model.state_dict(), directory / "ImageReward.pt")
        scorers["image_reward"] = metrics_t2i.ImageRewardScorer.from_files(
            directory / "ImageReward.pt", directory / "med_config.json", directory / "vocab.txt", vision=vision)
    return scorers


@needs_t2i
def test_evaluator_with_tiny_metric_models(tiny, tmp_path):
    """Latents -> VAE -> uint8 -> each text-to-image metric (tiny models of the real classes), mean per metric."""
    metrics_t2i = _metrics_t2i()
    from bench.metrics.images import to_uint8

    suite = suite_for(tiny)
    suite.load_teacher(CPU)
    scorers = tiny_scorers(metrics_t2i, tmp_path)
    evaluator = t2i.TextToImageEvaluator(suite, CPU, scorers=scorers)
    latents = torch.randn(6, 4, 8, 8)
    cond = suite.sample_cond(6, torch.Generator().manual_seed(2))
    measured = {m.metric: m for m in evaluator.evaluate(latents, cond)}
    assert set(measured) == set(scorers)
    images = to_uint8(suite.to_images(latents))
    for name, scorer in scorers.items():
        expected = scorer.score(images, cond["prompts"]).mean().item()
        assert measured[name].value == pytest.approx(expected, rel=1e-6)
        assert measured[name].n_samples == 6 and measured[name].impl == scorer.impl


@needs_t2i
def test_evaluator_cmmd_to_teacher_reference(tiny, tmp_path):
    """CMMD: the evaluated images' CLIP embeddings against the teacher's own samples (drawn once)."""
    metrics_t2i = _metrics_t2i()
    if "clip_score" not in (scorers := tiny_scorers(metrics_t2i, tmp_path)):
        pytest.skip("needs open-clip-torch (the t2i-metrics extra)")
    from bench.metrics.cmmd import cmmd
    from bench.metrics.images import to_uint8

    suite = suite_for(tiny, n_eval=4)
    assert "clip_score" in suite.metrics and suite.metrics[-1] == "cmmd"  # on by default
    suite.load_teacher(CPU)
    clip = scorers["clip_score"]
    evaluator = t2i.TextToImageEvaluator(suite, CPU, scorers={"clip_score": clip}, embedder=clip)
    reference = suite.teacher_reference(CPU, 4)
    assert reference.shape == (4, 3, 16, 16) and reference.dtype == torch.uint8
    assert torch.equal(reference, suite.teacher_reference(CPU, 4))  # its own seed: the same every time
    latents = torch.randn(4, 4, 8, 8)
    cond = suite.sample_cond(4, torch.Generator().manual_seed(2))
    measured = {m.metric: m for m in evaluator.evaluate(latents, cond)}
    assert set(measured) == {"clip_score", "cmmd"} and measured["cmmd"].n_samples == 4
    images = to_uint8(suite.to_images(latents))
    expected = cmmd(clip.embed_images(images), clip.embed_images(reference))
    assert measured["cmmd"].value == pytest.approx(expected, rel=1e-6) and measured["cmmd"].value > 0
    assert "cmmd" in measured["cmmd"].impl and clip.impl in measured["cmmd"].impl
    same = t2i.TextToImageEvaluator(suite, CPU, scorers={}, embedder=clip, reference=lambda: images)
    assert same.evaluate(latents, cond)[0].value == pytest.approx(0.0, abs=1e-9)  # identical sets


def test_evaluator_loads_clip_for_cmmd_alone(configs_only, monkeypatch):
    """``metrics: [cmmd]``: no per-image rows, but the CLIP scorer is loaded as CMMD's embedder."""
    metrics_t2i = _metrics_t2i()
    monkeypatch.setattr(metrics_t2i, "load", lambda name, device="cpu": f"loaded {name}")
    suite = suite_for(configs_only, metrics=["cmmd"])
    evaluator = t2i.TextToImageEvaluator(suite, CPU)
    assert evaluator.scorers == {} and evaluator.embedder == "loaded clip_score"


def _real_pixart():
    from bench import weights

    return weights.locate(t2i.PIPELINE_WEIGHT)


@needs_t2i
@pytest.mark.skipif(_real_pixart() is None, reason="PixArt-alpha weights not found: PixArt-XL-2-512x512 "
                                                    "(bench weights fetch pixart-alpha; docs/t2i.md)")
def test_real_pixart_alpha_pipeline():
    """Where the real weights exist: 512px PixArt-XL-2 (about 611M parameters), a short guided sample, decoded."""
    suite = t2i.TextToImageSuite(teacher_steps=2, eval_batch=1)
    assert suite.latent_shape == (4, 64, 64)
    teacher = suite.load_teacher(CPU)
    assert 600e6 < sum(p.numel() for p in teacher.net.parameters()) < 620e6
    cond = suite.sample_cond(1, torch.Generator().manual_seed(0))
    latents = suite.teacher_sample(teacher, torch.randn(1, *suite.latent_shape), cond)
    images = suite.to_images(latents)
    assert images.shape == (1, 3, 512, 512) and torch.isfinite(images).all()


@pytest.mark.slow
@needs_t2i
def test_runner_end_to_end_with_teacher_row(tiny, tmp_path, monkeypatch):
    """``execute`` trains, evaluates (decoded, scored by PickScore found through bench weights) and writes
    the run directory and the teacher's baseline row."""
    _metrics_t2i()
    from bench.rundir import read_json, read_jsonl
    from bench.train.runner import execute

    weights = tmp_path / "weights"
    tiny_pickscore(weights / "PickScore_v1", weights / "CLIP-ViT-H-14-laion2B-s32B-b79K")
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(weights))
    sets = {"suite.pipeline": str(tiny["path"]), "suite.prompts": str(tiny["prompts"]), "suite.teacher_steps": 2,
            "suite.eval_batch": 4, "suite.n_eval": 4, "suite.metrics": ["pickscore_raw"]}
    for method, kwargs in (("teacher", {}), ("sim", dict(lr=1e-4, batch=2, batch_gpu=2, kimg=0.004,
                                                         eval_every=0.002, checkpoint_every=0.004))):
        config = runconfig.resolve("t2i", method, sets=sets, **kwargs)
        config["device"] = "cpu"
        directory, status = execute(config, tmp_path / "results", CPU, quiet=True)
        assert status == "done" and read_json(directory / "manifest.json")["status"] == "done"
        rows = read_jsonl(directory / "metrics.jsonl")
        assert {r["metric"] for r in rows} == {"pickscore_raw"}
        assert all(r["n_samples"] == 4 and "PickScore" in r["impl"] for r in rows)
        assert {r["kimg"] for r in rows} == ({0.0} if method == "teacher" else {0.0, 0.002, 0.004})
        assert list((directory / "samples").glob("*.png"))


def test_cli_run_without_weights_is_bad_input(cli, tmp_path):
    """A missing pipeline: exit 2, one line naming the file, no run directory left behind."""
    code, out, err = cli("run", "--suite", "t2i", "--method", "sim", "--results", str(tmp_path / "results"),
                         "--set", f"suite.pipeline={tmp_path / 'PixArt'}", "--quiet")
    assert code == 2 and "model_index.json" in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / "results").rglob("*.json"))
