"""Text-to-image scores: LAION aesthetic, ImageReward, PickScore and CLIP score, one small interface each.

Each scorer loads from local files (``from_files``; defaults come from ``bench.weights``), scores a
uint8 NCHW batch with one prompt per image (``score`` -> a float tensor, one value per image) and
states the convention of its scale (``scale``). Their libraries (the ``t2i-metrics`` extra, see the
README section "Text-to-image metrics") are imported only here, lazily, with a message naming the
missing package.

Metric names in metrics.jsonl: ``aesthetic``, ``image_reward``, ``pickscore_raw`` (the raw
``logit_scale * cosine``, about 22; papers print it divided by 100), ``clip_score``
(``100 * max(cos, 0)``). CMMD, a distance between image sets, is ``bench.metrics.cmmd``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import BadInput
from ..registry import Registry
from . import registry as metric_registry
from .images import check_images

EXTRA = "pip install 'distill-bench[t2i-metrics]' (README: Text-to-image metrics)"


def require(module: str, package: str):
    """Import ``module`` or raise BadInput naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BadInput(f"this metric needs {package} ({exc}); {EXTRA}") from None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def to_pil(images: torch.Tensor) -> list:
    """uint8 NCHW (1 or 3 channels) -> RGB PIL images, the input every scorer's preprocessing expects."""
    from PIL import Image

    check_images(images)
    arr = images.detach().cpu()
    if arr.shape[1] == 1:
        arr = arr.expand(-1, 3, -1, -1)
    return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).numpy()]


class T2IScorer:
    """Interface shared by the scorers: ``score(images, prompts)``, ``metric``, ``scale`` and ``impl``."""

    metric: str = ""
    scale: str = ""
    batch_size: int = 16

    @property
    def impl(self) -> str:
        raise NotImplementedError

    def _score_batch(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
        """One float score per image (float64 tensor on the CPU); ``prompts[i]`` belongs to ``images[i]``."""
        check_images(images)
        prompts = list(prompts) if prompts is not None else None
        if prompts is None or len(prompts) != images.shape[0]:
            raise BadInput(f"{self.metric}: {images.shape[0]} images but "
                           f"{'no' if prompts is None else len(prompts)} prompts (one prompt per image)")
        if not all(isinstance(p, str) for p in prompts):
            raise BadInput(f"{self.metric}: prompts must be strings")
        out = [self._score_batch(images[i:i + self.batch_size], prompts[i:i + self.batch_size]).double().cpu()
               for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out)


# --- aesthetic ---------------------------------------------------------------------------------

class AestheticHead(nn.Module):
    """The LAION improved aesthetic predictor's MLP (layers.{0,2,4,6,7}; dropout only, no activations)."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)


class AestheticScorer(T2IScorer):
    """LAION aesthetic score: the head applied to the L2-normalised CLIP ViT-L/14 image embedding."""

    metric = "aesthetic"
    scale = "LAION aesthetic predictor, about 1..10 (AVA rating scale; higher is better); ignores the prompt"

    def __init__(self, clip_model, preprocess, head: AestheticHead, model_name: str, device="cpu"):
        self.clip, self.preprocess, self.head = clip_model.eval().to(device), preprocess, head.eval().to(device)
        self.model_name, self.device = model_name, torch.device(device)

    @classmethod
    def from_files(cls, clip_path=None, head_path=None, model_name: str = "ViT-L-14-quickgelu", device="cpu"):
        """Load CLIP from a local OpenAI checkpoint and the head (weights_only). ``ViT-L-14-quickgelu``:
        plain ``ViT-L-14`` would run the OpenAI weights with the wrong activation."""
        from ..weights import find_weight

        open_clip = require("open_clip", "open-clip-torch")
        clip_path = Path(clip_path or find_weight("clip-vit-l-14"))
        head_path = Path(head_path or find_weight("aesthetic-head"))
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(clip_path), device="cpu")
        state = torch.load(head_path, map_location="cpu", weights_only=True)
        head = AestheticHead(state["layers.0.weight"].shape[1])
        head.load_state_dict(state)
        return cls(model, preprocess, head, model_name, device)

    @property
    def impl(self) -> str:
        return f"open-clip-torch {_version('open-clip-torch')}/{self.model_name}+laion-aesthetic-v2"

    def _score_batch(self, images, prompts):
        x = torch.stack([self.preprocess(im) for im in to_pil(images)]).to(self.device)
        emb = self.clip.encode_image(x).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return self.head(emb).squeeze(1)


# --- ImageReward ------------------------------------------------------------------------------

def import_image_reward():
    """The ImageReward module of the image-reward package, without its training code.

    ``import ImageReward`` runs its package ``__init__``, which imports ReFL (diffusers, datasets,
    accelerate) and the CLIP/BLIP baselines. Registering bare package modules first lets Python
    import only ``ImageReward.ImageReward`` and the BLIP code it needs.
    """
    if "ImageReward.ImageReward" in sys.modules:
        return sys.modules["ImageReward.ImageReward"]
    spec = importlib.util.find_spec("ImageReward")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"ImageReward needs the image-reward package (installed with --no-deps); {EXTRA}")
    for missing in ("transformers", "timm", "fairscale"):
        require(missing, missing)
    root = Path(list(spec.submodule_search_locations)[0])
    for name, path in (("ImageReward", root), ("ImageReward.models", root / "models")):
        if name not in sys.modules:
            bare = importlib.machinery.ModuleSpec(name, None, is_package=True)
            bare.submodule_search_locations = [str(path)]
            sys.modules[name] = importlib.util.module_from_spec(bare)
    return importlib.import_module("ImageReward.ImageReward")


def bert_tokenizer(vocab_file):
    """BLIP's BERT tokenizer from a local vocabulary (the package would download bert-base-uncased)."""
    transformers = require("transformers", "transformers<4.56")
    tok = transformers.BertTokenizer(vocab_file=str(vocab_file), do_lower_case=True)
    tok.add_special_tokens({"bos_token": "[DEC]"})  # BLIP's decoder and encoder markers
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tok.enc_token_id = tok.additional_special_tokens_ids[0]
    return tok


@contextlib.contextmanager
def _patched(module, **attrs):
    old = {k: getattr(module, k) for k in attrs}
    try:
        for k, v in attrs.items():
            setattr(module, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


class ImageRewardScorer(T2IScorer):
    """ImageReward (image-reward 1.5): BLIP text-image cross encoder and an MLP, batched."""

    metric = "image_reward"
    scale = "z-score: (reward - 0.16717) / 1.03334 over the ImageReward training set; 0 is average, higher is better"

    def __init__(self, model, device="cpu"):
        self.model, self.device = model.eval().to(device), torch.device(device)
        self.model.device = self.device

    @classmethod
    def build(cls, med_config, vocab_file, vision: dict | None = None, device="cpu"):
        """The package's ImageReward model with a local tokenizer. ``vision`` (embed_dim, depth,
        num_heads) replaces its ViT-L for small test models; None keeps the real architecture."""
        IR = import_image_reward()
        blip_pretrain = sys.modules["ImageReward.models.BLIP.blip_pretrain"]
        patches = {"init_tokenizer": lambda: bert_tokenizer(vocab_file)}
        if vision is not None:
            vit = sys.modules["ImageReward.models.BLIP.vit"]
            patches["create_vit"] = lambda _name, image_size, *a: (
                vit.VisionTransformer(img_size=image_size, patch_size=16, **vision), vision["embed_dim"])
        with _patched(blip_pretrain, **patches):
            model = IR.ImageReward(med_config=str(med_config), device=device)
        return cls(model, device)

    @classmethod
    def from_files(cls, checkpoint=None, med_config=None, vocab_file=None, vision: dict | None = None, device="cpu"):
        """Load ``ImageReward.pt`` (weights_only) into the model; every model key must be present."""
        from ..weights import find_weight

        checkpoint = Path(checkpoint or find_weight("image-reward"))
        scorer = cls.build(med_config or find_weight("image-reward-med-config"),
                           vocab_file or find_weight("bert-base-uncased-vocab"), vision, device)
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        missing, _ = scorer.model.load_state_dict(state, strict=False)  # BLIP's unused heads may be absent
        missing = [k for k in missing if k.startswith(("blip.visual_encoder.", "blip.text_encoder.", "mlp."))
                   and not k.endswith("position_ids")]
        if missing:
            raise BadInput(f"{checkpoint}: not an ImageReward checkpoint (missing {missing[0]} and {len(missing) - 1} more)")
        return scorer

    @property
    def impl(self) -> str:
        return f"image-reward {_version('image-reward')}/ImageReward-v1.0"

    def _score_batch(self, images, prompts):
        m = self.model
        text = m.blip.tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        x = torch.stack([m.preprocess(im) for im in to_pil(images)]).to(self.device)
        return m.score_gard(text.input_ids.to(self.device), text.attention_mask.to(self.device), x).squeeze(1)


# --- PickScore --------------------------------------------------------------------------------

def _features(out) -> torch.Tensor:
    """transformers 4.x returns a tensor from get_*_features, 5.x an output object."""
    return out if torch.is_tensor(out) else out.pooler_output


class PickScorer(T2IScorer):
    """PickScore: ``logit_scale.exp() * cos(text, image)`` of the PickScore_v1 CLIP-H model."""

    metric = "pickscore_raw"
    scale = "raw logit_scale * cosine (about 22 for good images); papers print it divided by 100 (0.22)"

    def __init__(self, model, processor, device="cpu"):
        self.model, self.processor, self.device = model.eval().to(device), processor, torch.device(device)

    @classmethod
    def from_files(cls, model_dir=None, processor_dir=None, device="cpu"):
        """``CLIPModel`` and its processor from local directories (never the hub)."""
        from ..weights import find_weight

        transformers = require("transformers", "transformers<4.56")
        model_dir = model_dir or find_weight("pickscore")
        processor_dir = processor_dir or find_weight("pickscore-processor")
        model = transformers.CLIPModel.from_pretrained(str(model_dir), local_files_only=True)
        processor = transformers.AutoProcessor.from_pretrained(str(processor_dir), local_files_only=True)
        return cls(model, processor, device)

    @property
    def impl(self) -> str:
        return f"transformers {_version('transformers')}/PickScore_v1"

    def _score_batch(self, images, prompts):
        pix = self.processor(images=to_pil(images), return_tensors="pt")["pixel_values"].to(self.device)
        text = self.processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt")
        img = _features(self.model.get_image_features(pixel_values=pix))
        txt = _features(self.model.get_text_features(input_ids=text["input_ids"].to(self.device),
                                                     attention_mask=text["attention_mask"].to(self.device)))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return self.model.logit_scale.exp() * (img * txt).sum(-1)


# --- CLIP score -------------------------------------------------------------------------------

class ClipScorer(T2IScorer):
    """CLIP score (Hessel et al. 2021, as torchmetrics computes it): ``100 * max(cos(image, text), 0)``.

    Uses open-clip ``ViT-L-14-quickgelu`` with the OpenAI ViT-L/14 weights (``bench.weights``
    ``clip-vit-l-14``, the file the aesthetic score loads; torchmetrics' default is the same
    model). ``embed_images`` gives the L2-normalised image embeddings CMMD compares.
    """

    metric = "clip_score"
    scale = "100 * max(cosine, 0) of OpenAI CLIP ViT-L/14, 0..100 (higher is better)"

    def __init__(self, clip_model, preprocess, tokenizer, model_name: str, device="cpu"):
        self.clip, self.preprocess, self.tokenizer = clip_model.eval().to(device), preprocess, tokenizer
        self.model_name, self.device = model_name, torch.device(device)

    @classmethod
    def from_files(cls, clip_path=None, model_name: str = "ViT-L-14-quickgelu", device="cpu"):
        """Load CLIP from a local OpenAI checkpoint; the tokenizer is open-clip's bundled BPE."""
        from ..weights import find_weight

        open_clip = require("open_clip", "open-clip-torch")
        clip_path = Path(clip_path or find_weight("clip-vit-l-14"))
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(clip_path), device="cpu")
        return cls(model, preprocess, open_clip.get_tokenizer(model_name), model_name, device)

    @property
    def impl(self) -> str:
        return f"open-clip-torch {_version('open-clip-torch')}/{self.model_name}"

    def _image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.stack([self.preprocess(im) for im in to_pil(images)]).to(self.device)
        emb = self.clip.encode_image(x).float()
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]`` (float64, CPU) of a uint8 NCHW batch."""
        check_images(images)
        return torch.cat([self._image_embeddings(images[i:i + self.batch_size]).double().cpu()
                          for i in range(0, images.shape[0], self.batch_size)])

    def _score_batch(self, images, prompts):
        img = self._image_embeddings(images)
        txt = self.clip.encode_text(self.tokenizer(prompts).to(self.device)).float()
        txt = txt / txt.norm(dim=-1, keepdim=True)
        return 100 * (img * txt).sum(-1).clamp_min(0)  # negative similarity counts as 0 (Hessel et al.)


# The scorers of this module, as the metric registry names them.
SCORERS = Registry("text-to-image metric", {name: metric_registry.get(name).impl
                                            for name in metric_registry.implemented_in(__name__)})


def load(name: str, device="cpu") -> T2IScorer:
    """Scorer ``name`` (a metric name of SCORERS) from its weights in ``bench.weights`` locations."""
    return SCORERS.get(name).from_files(device=device)
