"""LeNet-300-100 (LeCun et al. 1998), the fully connected network of Frankle & Carbin 2019."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lth.config import ModelConfig
from lth.models import register


class LeNet300100(nn.Module):
    def __init__(self, input_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        for layer in (self.fc1, self.fc2, self.fc3):
            nn.init.xavier_normal_(layer.weight)  # Glorot normal, as in the paper's code
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        x = self.fc1(x).relu()
        x = self.fc2(x).relu()
        return self.fc3(x)


@register("lenet_300_100")
def lenet_300_100(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return LeNet300100(math.prod(input_shape), num_classes)
