"""Residual networks for 32x32 images.

- ResNet-20/32/44/56/110: He et al. 2016, "Deep Residual Learning for Image Recognition" (arXiv 1512.03385),
  Section 4.2: a 3x3 conv stem, three stages of n two-conv blocks (6n+2 layers) with `width`, 2·width and 4·width
  channels (16, 32, 64 in the paper), global average pooling and one linear layer. Built as facebookresearch/open_lth
  models/cifar_resnet.py does (the networks of Frankle et al. 2020): a 1x1 conv + batch norm shortcut where the
  shape changes (the paper's option B; its CIFAR experiments used option A, zero-padded identity shortcuts).
- ResNet-18: He et al. 2016's 18-layer network (BasicBlocks [2, 2, 2, 2], 64 to 512 channels) with the usual CIFAR
  stem (a 3x3 stride-1 conv, no max-pool), as in kuangliu/pytorch-cifar and the LTH-at-scale literature.

All use open_lth's initialisation (Kaiming normal weights, batch norm scales uniform on [0, 1)).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import Tensor, nn

from lth.models.layers import image_shape, open_lth_init_
from lth.models.registry import register
from lth.schema import ModelConfig

CIFAR_DEPTHS = (20, 32, 44, 56, 110)


class Block(nn.Module):
    """Two 3x3 convs with batch norm around a residual connection (He et al.'s basic block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        # No conv biases: each conv feeds a batch norm, whose shift makes a bias redundant (as in open_lth).
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:  # the identity cannot be added: project it
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        out = self.bn2(self.conv2(out))
        return (out + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """Stem conv, then stages given as (channels, blocks); every stage after the first halves the resolution."""

    def __init__(self, stages: Sequence[tuple[int, int]], in_channels: int, num_classes: int) -> None:
        super().__init__()
        channels = stages[0][0]
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        blocks: list[nn.Module] = []
        for index, (stage_channels, count) in enumerate(stages):
            for block in range(count):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(Block(channels, stage_channels, stride))
                channels = stage_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        open_lth_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(self.bn(self.conv(x)).relu())
        return self.fc(out.mean(dim=(2, 3)))  # global average pooling: any image size fits


def cifar_resnet(depth: int, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-`depth` (depth = 6n + 2) with `model.width` channels in the first stage (default 16)."""
    width = cfg.width or 16
    blocks = (depth - 2) // 6
    channels, _, _ = image_shape(input_shape)
    return ResNet([(width, blocks), (2 * width, blocks), (4 * width, blocks)], channels, num_classes)


@register("resnet18", takes_width=True)
def resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-18 with a CIFAR stem and `model.width` channels in the first stage (default 64)."""
    width = cfg.width or 64
    channels, _, _ = image_shape(input_shape)
    return ResNet([(width, 2), (2 * width, 2), (4 * width, 2), (8 * width, 2)], channels, num_classes)


for _depth in CIFAR_DEPTHS:
    register(f"resnet{_depth}", takes_width=True)(partial(cifar_resnet, _depth))
