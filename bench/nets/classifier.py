"""A small CNN digit classifier: the digits suite's feature extractor for FID, KID, PRC and IS."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class DigitClassifier(nn.Module):
    """``[B, 1, 8, 8]`` images in [-1, 1] -> (penultimate features ``[B, feature_dim]``, logits ``[B, classes]``).

    The features are the pre-activation output of the last hidden layer: smoother and closer to
    Gaussian than post-ReLU activations, which suits Fréchet distances on few samples.
    """

    def __init__(self, channels: int = 32, feature_dim: int = 64, classes: int = 10, dropout: float = 0.2):
        super().__init__()
        self.config = dict(channels=channels, feature_dim=feature_dim, classes=classes, dropout=dropout)
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
            nn.Flatten(),
        )
        self.hidden = nn.Linear(8 * c, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, classes)

    def forward(self, x):
        features = self.hidden(self.body(x))
        return features, self.head(self.dropout(F.relu(features)))
