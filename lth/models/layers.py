"""Building blocks shared by the model families: a conv stack from a layer plan, a conv-then-MLP classifier, and
the two initialisation schemes (Glorot for Frankle & Carbin's networks, Kaiming for open_lth's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

POOL = "M"  # in a layer plan: 2x2 max-pool, stride 2 (the notation of open_lth and torchvision's VGG)
_WEIGHTED = (nn.Linear, nn.Conv2d)


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of an image dataset; convnets cannot take flat or volumetric inputs."""
    if len(input_shape) != 3:
        raise ValueError(f"a convnet needs image inputs of shape (C, H, W), not {tuple(input_shape)}")
    channels, height, width = input_shape
    return channels, height, width


def conv_stack(plan: Sequence[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """3x3 convolutions with padding 1 (a number in `plan`: output channels), each followed by ReLU (after batch
    norm if `batch_norm`), and 2x2 max-pools (`POOL`). Convs keep their bias even before batch norm, as open_lth's
    cifar_vgg does, so the parameter counts match."""
    layers: list[nn.Module] = []
    channels = in_channels
    for spec in plan:
        if spec == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        assert isinstance(spec, int), f"layer plan entries are channel counts or {POOL!r}, not {spec!r}"
        layers.append(nn.Conv2d(channels, spec, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(spec))
        layers.append(nn.ReLU())
        channels = spec
    return nn.Sequential(*layers)


class ConvClassifier(nn.Module):
    """`features`, flattened, then fully connected ReLU layers of the `hidden` sizes, then the output layer `fc`.

    The first linear layer's input size is measured by running one zero image through `features`, so a network
    adapts to the dataset's image size (and fails here, at build time, when its poolings leave nothing)."""

    def __init__(
        self, features: nn.Module, input_shape: tuple[int, ...], hidden: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        self.features = features
        device = next(features.parameters()).device  # meta when check_fits builds the model without memory
        # Measure in eval mode: a training-mode batch norm would refuse a batch of one and update its statistics.
        features.eval()
        with torch.no_grad():
            size = features(torch.zeros(1, *image_shape(input_shape), device=device)).numel()
        features.train()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.hidden = nn.Sequential(*layers)
        self.fc = nn.Linear(size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.hidden(self.features(x).flatten(1)))


def glorot_init_(model: nn.Module) -> None:
    """Glorot (Xavier) normal weights and zero biases: Frankle & Carbin 2019 (arXiv 1803.03635), Appendix."""
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def open_lth_init_(model: nn.Module) -> None:
    """open_lth's defaults for CIFAR networks (models/initializers.py `kaiming_normal`, models/bn_initializers.py
    `uniform`): Kaiming normal conv and linear weights (fan-in, ReLU gain, std sqrt(2 / fan_in)); batch norm
    scales uniform on [0, 1) and shifts zero. Biases keep PyTorch's default init, as open_lth leaves them."""
    for module in model.modules():
        if isinstance(module, _WEIGHTED):
            nn.init.kaiming_normal_(module.weight)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.0, 1.0)
            nn.init.zeros_(module.bias)
