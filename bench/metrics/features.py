"""Features of uint8 images in a registered feature space, outside torch-fidelity's metric loop.

The coverage and diversity metrics need the feature vectors themselves, not a metric value, so this
module runs an extractor of ``fidelity.EXTRACTORS`` (Inception, the digits classifier, DINOv2, random
features, or any class registered with torch-fidelity) directly, batch by batch, on exactly the
images torch-fidelity would see (grayscale repeated to RGB where the extractor wants three channels).

Every evaluator of one feature space shares one ``FeatureSpace`` (``shared``), which remembers the
features of the last images it saw: FID, IS, KID, precision/recall, PRDC, Vendi, class balance and
FD to the teacher of one evaluation run the extractor over the samples once.
"""
from __future__ import annotations

import hashlib
import os

import torch

from ..errors import BadInput
from .fidelity import resolve_extractor
from .images import check_images

# torch-fidelity's names of the layer each use reads: "prc" the embedding (FID, PRDC, Vendi), "isc" logits
EMBEDDING, LOGITS = "prc", "isc"


class FeatureSpace:
    """Extractor ``name`` (options as for ``fidelity.resolve_extractor``), built on first use."""

    def __init__(self, name: str = "inception", device="cpu", batch_size: int = 64, options: dict | None = None):
        self.name, self.spec = name, resolve_extractor(name, **(options or {}))
        self.device, self.batch_size = torch.device(device), batch_size
        self._nets: dict[tuple[str, ...], torch.nn.Module] = {}
        self._last: tuple[str, dict[str, torch.Tensor]] = ("", {})  # (images' digest, {layer: features})

    @property
    def impl(self) -> str:
        return self.spec.impl

    def layer(self, use: str) -> str:
        """The extractor's layer for ``use`` (``EMBEDDING`` or ``LOGITS``); BadInput if it has none."""
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        cls = FEATURE_EXTRACTORS_REGISTRY[self.spec.fidelity_name]
        try:
            return cls.get_default_feature_layer_for_metric(use)
        except KeyError:
            what = "class logits" if use == LOGITS else "an embedding"
            raise BadInput(f"feature extractor {self.name!r} has no {what}") from None

    def _net(self, layers: tuple[str, ...]):
        if layers not in self._nets:
            from torch_fidelity.utils import create_feature_extractor

            self._nets[layers] = create_feature_extractor(self.spec.fidelity_name, list(layers),
                                                          cuda=self.device.type == "cuda", verbose=False,
                                                          **self.spec.kwargs)
        return self._nets[layers]

    def forget(self) -> None:
        """Drop the remembered features (a benchmark timing the extraction calls this between rounds)."""
        self._last = ("", {})

    def net(self, layers):
        """torch-fidelity's extractor module for ``layers`` (built once per set of layers)."""
        return self._net(tuple(layers))

    @torch.no_grad()
    def by_layer(self, images: torch.Tensor, layers, remember: bool = True) -> dict[str, torch.Tensor]:
        """``{layer: float32 [N, D] on the CPU}`` of uint8 NCHW ``images``; the layers already extracted
        from the same images (by content) are reused, the others come from one pass. Only the last
        images are remembered; ``remember=False`` (a reference, read once) keeps them."""
        check_images(images, "images")
        images = images.detach().cpu().contiguous()
        digest = hashlib.blake2b(images.numpy().tobytes(), digest_size=16).hexdigest() + str(tuple(images.shape))
        done = self._last[1] if self._last[0] == digest else {}
        missing = tuple(dict.fromkeys(layer for layer in layers if layer not in done))
        if missing:
            net, out = self._net(missing), {layer: [] for layer in missing}
            for i in range(0, images.shape[0], self.batch_size):
                x = images[i:i + self.batch_size]
                if self.spec.channels == 3 and x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                for layer, f in zip(missing, net(x.to(self.device))):
                    out[layer].append(f.reshape(f.shape[0], -1).float().cpu())
            done = {**done, **{layer: torch.cat(parts) for layer, parts in out.items()}}
        if remember:
            self._last = (digest, done)
        return {layer: done[layer] for layer in layers}

    def features(self, images: torch.Tensor, uses=(EMBEDDING,), remember: bool = True) -> dict[str, torch.Tensor]:
        """``{use: float32 [N, D] on the CPU}`` of uint8 NCHW ``images``, one pass for every use."""
        layers = {use: self.layer(use) for use in uses}
        found = self.by_layer(images, list(layers.values()), remember)
        return {use: found[layer] for use, layer in layers.items()}


_SHARED: dict[str, FeatureSpace] = {}


def shared(name: str = "inception", device="cpu", batch_size: int = 64, options: dict | None = None) -> FeatureSpace:
    """The one ``FeatureSpace`` of these arguments in this process (its features of the last images shared)."""
    files = [(os.stat(v).st_mtime_ns, os.stat(v).st_size) for v in (options or {}).values()
             if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]  # a weight file rewritten: a new space
    key = repr((name, str(torch.device(device)), batch_size, sorted((options or {}).items()), files))
    if key not in _SHARED:
        _SHARED[key] = FeatureSpace(name, device, batch_size, options)
    return _SHARED[key]
