"""The digits classifier's architecture.

The deployed function loads only the weights (a state dict); serverless-torch
calls ``build()`` (``factory: net:build`` in serverless.yml) to create the module
they are loaded into, so training and serving share this one definition.
"""

import torch
from torch import nn

# Pixels in the data set are counts of "on" bits in 4x4 blocks: integers 0..16.
PIXEL_MAX = 16.0
FEATURES = 64
CLASSES = 10


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.hidden = nn.Linear(FEATURES, hidden)
        self.output = nn.Linear(hidden, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Scaling lives in the model, not in the caller, so a client sends the raw
        # 0..16 pixel values and cannot forget the preprocessing.
        x = x / PIXEL_MAX
        return self.output(torch.relu(self.hidden(x)))


def build() -> nn.Module:
    return DigitsMLP()
