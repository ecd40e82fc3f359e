"""A small fixed-seed random convolutional feature extractor for torch-fidelity.

Not a perceptual metric: it exists so that the whole evaluation path (datasets, caching, FID, IS,
KID, precision/recall, the CLI) runs in seconds on a CPU without weight files, in tests and smoke
runs. Its weights come from a fixed seed, so its features are identical in every process (which
its reference cache relies on).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

NAME = "random-features"
SEED = 0


class RandomFeatures(FeatureExtractorBase):
    """uint8 N x {1,3} x H x W -> 64-d pooled features ("pool") and 10 logits ("logits_unbiased")."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        g = torch.Generator().manual_seed(SEED)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.head = nn.Linear(64, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / max(1, p[0].numel()) ** 0.5))

    @staticmethod
    def get_provided_features_list():
        return ("pool", "logits_unbiased")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits_unbiased", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x):
        x = x.float() / 127.5 - 1
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        pool = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        out = {"pool": pool, "logits_unbiased": self.head(pool)}
        return tuple(out[name] for name in self.features_list)


def spec():
    """The ExtractorSpec of this extractor (registered with torch-fidelity on first use)."""
    from .fidelity import ExtractorSpec, register_extractor

    register_extractor(NAME, RandomFeatures)
    return ExtractorSpec(NAME, weights_id=f"seed{SEED}-v1", impl=NAME, channels=None)
