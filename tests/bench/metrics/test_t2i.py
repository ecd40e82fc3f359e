"""Every text-to-image scorer end to end with tiny random models of the real classes.

These need the t2i-metrics extra; without it they skip naming the missing package.
"""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from bench.errors import BadInput
from bench.metrics import t2i

PROMPTS = ["a photo of a cat", "a red dog", "a blue cat", "a photo of a dog", "red", "a cat of a dog"]


def images(n=6, size=40, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def needs(module, package):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"needs {package} (the t2i-metrics extra)")


# --- aesthetic --------------------------------------------------------------------------------

def tiny_clip(tmp_path, name: str):
    """A tiny random open-clip model registered as ``name``, its weights saved as ``tmp_path/clip.pt``."""
    needs("open_clip", "open-clip-torch")
    import open_clip

    cfg = {"embed_dim": 16, "quick_gelu": True,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    torch.save(model.state_dict(), tmp_path / "clip.pt")
    return model

@pytest.fixture
def aesthetic(tmp_path):
    tiny_clip(tmp_path, "bench-tiny-quickgelu")
    head = t2i.AestheticHead(16)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    return t2i.AestheticScorer.from_files(tmp_path / "clip.pt", tmp_path / "head.pth", model_name="bench-tiny-quickgelu")


def test_aesthetic_end_to_end(aesthetic):
    x = images()
    s = aesthetic.score(x, PROMPTS)
    assert s.shape == (6,) and s.dtype == torch.float64 and torch.isfinite(s).all()
    # independently: head(normalised embedding of the preprocessed image)
    with torch.no_grad():
        emb = aesthetic.clip.encode_image(aesthetic.preprocess(t2i.to_pil(x[:1])[0])[None])
        expected = aesthetic.head(emb / emb.norm(dim=-1, keepdim=True)).item()
    assert s[0].item() == pytest.approx(expected, rel=1e-5)
    aesthetic.batch_size = 4  # batching does not change scores
    assert torch.allclose(aesthetic.score(x, PROMPTS), s, rtol=1e-5, atol=1e-6)
    assert aesthetic.metric == "aesthetic" and "open-clip-torch" in aesthetic.impl
    gray = aesthetic.score(x[:2, :1], PROMPTS[:2])  # grayscale is scored as RGB
    assert torch.allclose(gray, aesthetic.score(x[:2, :1].expand(-1, 3, -1, -1).contiguous(), PROMPTS[:2]))


def test_aesthetic_head_keys_match_laion_file():
    assert sorted(t2i.AestheticHead().state_dict()) == sorted(
        f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))


# --- ImageReward ------------------------------------------------------------------------------

@pytest.fixture
def image_reward(tmp_path):
    needs("ImageReward", "image-reward (installed with --no-deps)")
    needs("fairscale", "fairscale")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "red", "blue", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    med = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
           "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 32,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 2,
           "num_hidden_layers": 1, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": len(words) + 2,
           "encoder_width": 32, "add_cross_attention": True}
    (tmp_path / "med_config.json").write_text(json.dumps(med))
    vision = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    built = t2i.ImageRewardScorer.build(tmp_path / "med_config.json", tmp_path / "vocab.txt", vision)
    torch.save(built.model.state_dict(), tmp_path / "ImageReward.pt")
    return t2i.ImageRewardScorer.from_files(tmp_path / "ImageReward.pt", tmp_path / "med_config.json",
                                            tmp_path / "vocab.txt", vision=vision)


@pytest.mark.slow
def test_image_reward_adapter_skips_the_training_module():
    needs("ImageReward", "image-reward (installed with --no-deps)")
    # In a fresh process: other tests in this session import diffusers on their own. (accelerate may
    # be loaded by transformers itself when it is installed; ReFL would need it for training.)
    code = ("import sys; from bench.metrics import t2i; t2i.import_image_reward(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'diffusers', 'datasets'}), "
            "'ImageReward.ReFL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]", "False"]


def test_image_reward_end_to_end(image_reward):
    x = images(3)
    s = image_reward.score(x, PROMPTS[:3])
    assert s.shape == (3,) and torch.isfinite(s).all()
    # the package's own one-image path gives the same numbers
    pil = t2i.to_pil(x)
    with torch.no_grad():
        own = [image_reward.model.score(p, im) for p, im in zip(PROMPTS[:3], pil)]
    assert s.tolist() == pytest.approx(own, rel=1e-4, abs=1e-5)
    assert image_reward.metric == "image_reward" and image_reward.impl.startswith("image-reward 1.5")


def test_image_reward_rejects_foreign_checkpoint(image_reward, tmp_path):
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(BadInput, match="not an ImageReward checkpoint"):
        t2i.ImageRewardScorer.from_files(tmp_path / "bad.pt", tmp_path / "med_config.json", tmp_path / "vocab.txt",
                                         vision={"embed_dim": 32, "depth": 1, "num_heads": 2})


# --- PickScore --------------------------------------------------------------------------------

@pytest.fixture
def pickscore(tmp_path):
    needs("transformers", "transformers")
    import transformers
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    chars = sorted(set(bytes_to_unicode().values()))
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["ca", "cat</w>"]
                                        + ["<|startoftext|>", "<|endoftext|>"])}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path / "processor")
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
        vision_config={"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPModel(config).save_pretrained(tmp_path / "model")
    return t2i.PickScorer.from_files(tmp_path / "model", tmp_path / "processor")


def test_pickscore_end_to_end(pickscore):
    x = images()
    s = pickscore.score(x, PROMPTS)
    assert s.shape == (6,) and torch.isfinite(s).all()
    # independently: CLIP's own logits_per_image (logit_scale * cosine) for each (image, prompt) pair
    inputs = pickscore.processor(text=PROMPTS, images=t2i.to_pil(x), padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = pickscore.model(**inputs).logits_per_image.diagonal()
    assert torch.allclose(s.float(), expected, rtol=1e-4, atol=1e-5)
    assert pickscore.metric == "pickscore_raw" and "divided by 100" in pickscore.scale


# --- CLIP score -------------------------------------------------------------------------------

@pytest.fixture
def clip_score(tmp_path):
    tiny_clip(tmp_path, "bench-tiny-clipscore")
    return t2i.ClipScorer.from_files(tmp_path / "clip.pt", model_name="bench-tiny-clipscore")


def test_clip_score_by_hand(clip_score):
    import open_clip

    x = images()
    s = clip_score.score(x, PROMPTS)
    assert s.shape == (6,) and s.dtype == torch.float64 and ((s >= 0) & (s <= 100)).all()
    # independently: 100 * max(cos, 0) from the model's own encode_image / encode_text
    with torch.no_grad():
        img = clip_score.clip.encode_image(torch.stack([clip_score.preprocess(p) for p in t2i.to_pil(x)]))
        txt = clip_score.clip.encode_text(open_clip.tokenize(PROMPTS))
    cos = torch.nn.functional.cosine_similarity(img.double(), txt.double(), dim=-1)
    assert torch.allclose(s, 100 * cos.clamp_min(0), rtol=1e-4, atol=1e-4)
    emb = clip_score.embed_images(x)
    assert emb.shape == (6, 16) and torch.allclose(emb.norm(dim=1), torch.ones(6, dtype=torch.float64))
    assert clip_score.metric == "clip_score" and "open-clip-torch" in clip_score.impl


def test_clip_score_clamps_negative_cosine(clip_score, monkeypatch):
    x = images(2)
    with torch.no_grad():
        opposite = -clip_score._image_embeddings(x)  # text embeddings pointing away from the images: cos = -1
    monkeypatch.setattr(clip_score.clip, "encode_text", lambda tokens: opposite)
    assert clip_score.score(x, PROMPTS[:2]).tolist() == [0.0, 0.0]


def test_clip_score_prompt_count(clip_score):
    with pytest.raises(BadInput, match="6 images but 5 prompts"):
        clip_score.score(images(), PROMPTS[:5])


# --- shared interface -------------------------------------------------------------------------

def test_prompt_count_and_image_checks(aesthetic):
    with pytest.raises(BadInput, match="6 images but 2 prompts"):
        aesthetic.score(images(), PROMPTS[:2])
    with pytest.raises(BadInput, match="no prompts"):
        aesthetic.score(images(), None)
    with pytest.raises(BadInput, match="uint8"):
        aesthetic.score(images().float(), PROMPTS)


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # makes the import fail
    with pytest.raises(BadInput, match="open-clip-torch.*t2i-metrics"):
        t2i.AestheticScorer.from_files("clip.pt", "head.pth")


def test_missing_weights_name_file(monkeypatch, tmp_path):
    needs("transformers", "transformers")
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(BadInput, match="PickScore_v1.*bench weights fetch pickscore"):
        t2i.PickScorer.from_files()


# --- real weights (skip where the files are not present) -----------------------------------------

@pytest.mark.parametrize("cls, names, low, high", [
    (t2i.AestheticScorer, ["clip-vit-l-14", "aesthetic-head"], 1, 10),
    (t2i.ImageRewardScorer, ["image-reward", "image-reward-med-config", "bert-base-uncased-vocab"], -3, 3),
    (t2i.PickScorer, ["pickscore", "pickscore-processor"], 5, 40),
    (t2i.ClipScorer, ["clip-vit-l-14"], 0, 100),
])
def test_real_weights_score_in_documented_range(cls, names, low, high):
    from bench.weights import REGISTRY, locate

    for name in names:
        if locate(name) is None:
            pytest.skip(f"needs {REGISTRY[name].filename} (bench weights fetch {name})")
    scorer = cls.from_files()
    s = scorer.score(images(2, size=64), PROMPTS[:2])
    assert ((s > low) & (s < high)).all()


def test_load_by_metric_name(monkeypatch, tmp_path):
    with pytest.raises(BadInput, match="unknown text-to-image metric"):
        t2i.load("cmmd")  # a set distance (bench.metrics.cmmd), not a per-image scorer
    monkeypatch.setenv("BENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(BadInput, match="open-clip-torch"):  # the package is checked before the weights
        t2i.load("aesthetic")
