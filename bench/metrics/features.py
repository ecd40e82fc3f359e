"""Features of uint8 images in a registered feature space, outside torch-fidelity's metric loop.

The coverage and diversity metrics need the feature vectors themselves, not a metric value, so this
module runs an extractor of ``fidelity.EXTRACTORS`` (Inception, the digits classifier, DINOv2, random
features, or any class registered with torch-fidelity) directly, batch by batch, on exactly the
images torch-fidelity would see (grayscale repeated to RGB where the extractor wants three channels).
"""
from __future__ import annotations

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

    @torch.no_grad()
    def features(self, images: torch.Tensor, uses=(EMBEDDING,)) -> dict[str, torch.Tensor]:
        """``{use: float32 [N, D] on the CPU}`` of uint8 NCHW ``images``, one pass for every use."""
        check_images(images, "images")
        layers = tuple(dict.fromkeys(self.layer(u) for u in uses))
        net, out = self._net(layers), {layer: [] for layer in layers}
        for i in range(0, images.shape[0], self.batch_size):
            x = images[i:i + self.batch_size]
            if self.spec.channels == 3 and x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            for layer, f in zip(layers, net(x.to(self.device))):
                out[layer].append(f.reshape(f.shape[0], -1).float().cpu())
        return {u: torch.cat(out[self.layer(u)]) for u in uses}
