"""The digits classifier as a torch-fidelity feature extractor, registered under the name ``digits``.

torch-fidelity builds extractors itself (``cls(name, features_list, **kwargs)``), so the
classifier's file arrives as ``feature_extractor_weights_path``, which :func:`extractor_spec`
supplies to the evaluation layer. Inputs are uint8 images ``[B, 3 or 1, 8, 8]`` (EDM's
quantisation of [-1, 1]); the first channel is used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ..errors import BadInput
from ..metrics.images import from_uint8
from .digits import EXTRACTOR as NAME, DigitsSuite, load_cached, load_classifier



class DigitsFeatureExtractor(FeatureExtractorBase):
    """Penultimate-layer features (FID, KID, precision/recall) and logits (IS) of the digit classifier."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)

        if feature_extractor_weights_path is None:
            raise BadInput("the digits extractor needs feature_extractor_weights_path (the classifier's cache file; "
                           "`bench teacher train --suite digits` trains it)")
        self.net = load_classifier(Path(feature_extractor_weights_path))

    def forward(self, images):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) \
                or tuple(images.shape[2:]) != (8, 8):
            raise BadInput(f"digits extractor expects uint8 [B, 1|3, 8, 8] images, got {images.dtype} "
                           f"{list(images.shape)}")
        x = from_uint8(images[:, :1])  # as the classifier was trained
        features, logits = self.net(x)
        out = {"features": features, "logits": logits}
        return tuple(out[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


def extractor_spec(path: Path | None = None):
    """The ``digits`` extractor for the evaluation layer: registered with torch-fidelity, reading the
    classifier at ``path`` (default: the digits suite's default classifier, trained if absent)."""
    from ..metrics.fidelity import ExtractorSpec, register_extractor

    path = Path(path) if path is not None else DigitsSuite().train_classifier()
    register_extractor(NAME, DigitsFeatureExtractor)
    sha = load_cached(path)[1].get("sha256", "?")[:12]  # the weights' own hash: reproducibility shows in every row
    return ExtractorSpec(NAME, weights_id=path.parent.name, impl=f"digits {path.parent.name} sha256:{sha}", channels=None,
                         kwargs={"feature_extractor_weights_path": str(path)})
