"""The LeNet family: LeNet-300-100 (the fully connected network of Frankle & Carbin 2019) and LeNet-5."""

from __future__ import annotations

import math

from torch import Tensor, nn

from lth.models.layers import ConvClassifier, glorot_init_, image_shape
from lth.models.registry import register
from lth.schema import ModelConfig


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
    """LeNet-300-100 (LeCun et al. 1998): 784-300-100-10 on MNIST; flattens any input."""
    return LeNet300100(math.prod(input_shape), num_classes)


@register("lenet5")
def lenet5(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition", Fig. 2) in its
    common modern form for 28x28 inputs: conv 5x5 → 6 (padding 2, so 28x28 MNIST plays the paper's 32x32 input),
    2x2 max-pool, conv 5x5 → 16, 2x2 max-pool, FC 120, 84, classes; ReLU throughout. 61,706 parameters on MNIST.

    Differences from the paper, shared by the usual reimplementations (e.g. the PyTorch and d2l tutorials): ReLU
    instead of the scaled tanh, max-pooling instead of trainable subsampling, full C3 connectivity, and a linear
    output layer instead of RBF units. Weights are Glorot normal with zero biases, like lth's other MNIST network.
    """
    channels, _, _ = image_shape(input_shape)
    features = nn.Sequential(
        nn.Conv2d(channels, 6, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    model = ConvClassifier(features, input_shape, (120, 84), num_classes)
    glorot_init_(model)
    return model
