"""FD-DINOv2 as EDM2 computes it: DINOv2 ViT-L/14 class tokens of images resized to 224 x 224.

EDM2's ``calculate_metrics.py`` (its ``DINOv2Detector``, default ``resize_mode='torch'``) takes uint8
RGB images, resizes them to 224 x 224 with ``interpolate(mode='bicubic', antialias=True)`` on the
0..255 float values (no clamping afterwards), divides by 255, normalises with the ImageNet mean and
standard deviation, and runs the torch-hub ``dinov2_vitl14`` model, whose output is the final-norm
class token (1024-d). The Frechet distance of those features, in float64, is FD-DINOv2. The antialias
flag matters even when enlarging (8 x 8 digits, 32 x 32 CIFAR-10): PyTorch's antialiased bicubic uses
PIL's kernel (a = -0.5), the plain one a = -0.75.

Here the same network runs through timm (``vit_large_patch14_dinov2`` built at 224 x 224, which the
``dinov2`` extra installs) from the official checkpoint file, found through ``bench.weights`` (weight
``dinov2-vitl14``; never downloaded at run time). The checkpoint's 37 x 37 position embeddings are
resampled to 16 x 16 once, at load time, the way DINOv2 itself does it at every forward pass
(bicubic, no antialiasing, a scale factor of (16 + 0.1) / 37): timm's own resampling (by output
size, antialiased) gives slightly different embeddings and so different features.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ..errors import BadInput

NAME = "dinov2"  # the extractor name, in fidelity.EXTRACTORS and torch-fidelity's registry
ARCH = "vit_large_patch14_dinov2"
WEIGHT = "dinov2-vitl14"  # bench.weights entry: the official dinov2_vitl14_pretrain.pth
RESOLUTION = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATE_OFFSET = 0.1  # DINOv2's historical offset in its position-embedding scale factor
EXTRA = "pip install 'distill-bench[dinov2]'"


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x {1,3} x H x W -> the float32 N x 3 x 224 x 224 network input of EDM2's detector."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BadInput(f"DINOv2 features need uint8 [N, 1|3, H, W] images, got {images.dtype} {list(images.shape)}")
    x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    x = F.interpolate(x.to(torch.float32), size=(RESOLUTION, RESOLUTION), mode="bicubic", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).reshape(1, 3, 1, 1)
    return (x / 255 - mean) / std


def resample_position_embedding(pos_embed: torch.Tensor, grid: int, offset: float = INTERPOLATE_OFFSET) -> torch.Tensor:
    """[1, 1 + M*M, D] (class token first) -> [1, 1 + grid*grid, D], as DINOv2 interpolates at run time."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    m = math.isqrt(patches.shape[1])
    if m * m != patches.shape[1]:
        raise BadInput(f"DINOv2 checkpoint: {patches.shape[1]} patch position embeddings are not a square grid")
    if m == grid:
        return pos_embed
    x = patches.float().reshape(1, m, m, -1).permute(0, 3, 1, 2)
    scale = (grid + offset) / m  # a scale factor, not an output size: it sets where the samples fall
    x = F.interpolate(x, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    if tuple(x.shape[-2:]) != (grid, grid):
        raise AssertionError(f"position embeddings resampled to {tuple(x.shape[-2:])}, expected {grid}")
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)
    return torch.cat([cls, x], dim=1)


def _timm():
    try:
        import timm
    except ImportError as exc:
        raise BadInput(f"FD-DINOv2 needs timm ({exc}); {EXTRA}") from None
    return timm


def build(state_dict: dict[str, torch.Tensor] | None = None, **arch) -> torch.nn.Module:
    """timm's DINOv2 ViT at 224 x 224 returning the class token; ``state_dict`` in the official
    (torch-hub) layout, loaded strictly. ``arch`` overrides the architecture (small test models)."""
    timm = _timm()
    from timm.models.vision_transformer import checkpoint_filter_fn

    model = timm.create_model(ARCH, pretrained=False, img_size=RESOLUTION, num_classes=0, **arch)
    if state_dict is not None:
        state = dict(state_dict)
        if "pos_embed" not in state or "cls_token" not in state:
            raise BadInput("not a DINOv2 checkpoint (no pos_embed/cls_token)")
        state["pos_embed"] = resample_position_embedding(state["pos_embed"], model.patch_embed.grid_size[0])
        state = checkpoint_filter_fn(state, model)  # drops the mask token of the official layout
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise BadInput(f"the DINOv2 checkpoint does not fit {ARCH} {arch or ''}: {str(exc).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


def load(path=None, arch: dict | None = None) -> torch.nn.Module:
    """The model from a checkpoint file (default: weight ``dinov2-vitl14`` of ``bench.weights``)."""
    from ..weights import find_weight

    path = path or find_weight(WEIGHT)
    return build(torch.load(path, map_location="cpu", weights_only=True), **(arch or {}))


class DINOv2Features(FeatureExtractorBase):
    """torch-fidelity extractor: uint8 images -> EDM2's DINOv2 class-token features ("cls")."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, dinov2_arch=None, **kwargs):
        super().__init__(name, features_list)
        self.model = load(feature_extractor_weights_path, dinov2_arch)

    @torch.no_grad()
    def forward(self, images):
        return (self.model(preprocess(images.to(next(self.model.parameters()).device))).float(),)

    @staticmethod
    def get_provided_features_list():
        return ("cls",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "cls", "kid": "cls", "prc": "cls"}[metric]  # no logits: no IS

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, RESOLUTION, RESOLUTION, dtype=torch.uint8)


def spec(path=None, arch: dict | None = None):
    """The ``dinov2`` extractor for ``fidelity.EXTRACTORS``: the checkpoint at ``path`` (default from
    ``bench.weights``); ``arch`` (timm overrides) for small test models."""
    from ..weights import find_weight
    from .fidelity import ExtractorSpec, file_digest, register_extractor

    _timm()
    path = path or find_weight(WEIGHT)
    register_extractor(NAME, DINOv2Features)
    arch_id = "-".join(f"{k}{v}" for k, v in sorted((arch or {}).items()))
    return ExtractorSpec(NAME, weights_id=f"{file_digest(path)}{arch_id}", impl=f"timm {_timm().__version__}/{ARCH}-{RESOLUTION}",
                         channels=3, kwargs={"feature_extractor_weights_path": str(path), "dinov2_arch": dict(arch or {})})


def fd_dinov2_evaluator(reference, **kwargs):
    """FD-DINOv2 of samples against ``reference`` (anything ``FidelityEvaluator`` takes), named ``fd_dinov2``.

    ``kwargs`` go to ``FidelityEvaluator`` (``extractor_options={"path": ...}`` picks the checkpoint)."""
    from .base import Renamed
    from .fidelity import FidelityEvaluator

    return Renamed(FidelityEvaluator(reference, extractor=NAME, metrics=("fid",), **kwargs), {"fid": "fd_dinov2"})
