"""The digits classifier as a torch-fidelity feature extractor, registered under the name ``digits``.

torch-fidelity builds extractors itself (``cls(name, features_list, **kwargs)``), so the
classifier's weights come from ``feature_extractor_weights_path`` when given, else from the
file set by :func:`use_classifier`. Inputs are uint8 images ``[B, 3 or 1, 8, 8]`` (EDM's
quantisation of [-1, 1]); the first channel is used.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

from ..errors import BadInput

NAME = "digits"


class DigitsFeatureExtractor(FeatureExtractorBase):
    """Penultimate-layer features (FID, KID, precision/recall) and logits (IS) of the digit classifier."""

    weights_path: Path | None = None  # set by use_classifier()

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        from .digits import load_classifier

        path = feature_extractor_weights_path or type(self).weights_path
        if path is None:
            raise BadInput("the digits extractor has no classifier: train it with `bench teacher train --suite digits`")
        self.net = load_classifier(Path(path))

    def forward(self, images):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) \
                or tuple(images.shape[2:]) != (8, 8):
            raise BadInput(f"digits extractor expects uint8 [B, 1|3, 8, 8] images, got {images.dtype} "
                           f"{list(images.shape)}")
        x = (images[:, :1].float() - 127.5) / 127.5  # centre of the uint8 bin, as the classifier was trained
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


def use_classifier(path: Path) -> None:
    """Register the extractor (once) and make it load the classifier at ``path``."""
    from ..metrics.fidelity import register_extractor

    DigitsFeatureExtractor.weights_path = Path(path)
    register_extractor(NAME, DigitsFeatureExtractor)
