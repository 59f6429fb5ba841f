"""CIFAR VGG-11/13/16/19 with batch norm and a single linear output layer, as used by Frankle et al. 2020,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis" (arXiv 1912.05671), following facebookresearch/open_lth
models/cifar_vgg.py: VGG's conv plans (Simonyan & Zisserman 2015, configurations A, B, D, E), each 3x3 conv
followed by batch norm and ReLU, 2x2 average pooling after the last conv, and FC 512 → classes."""

from __future__ import annotations

from functools import partial

from torch import nn

from lth.models.layers import POOL as M
from lth.models.layers import ConvClassifier, conv_stack, image_shape, open_lth_init_
from lth.models.registry import register
from lth.schema import ModelConfig

# open_lth's plans: four max-pools, the fifth downsampling is the average pool in front of the classifier.
PLANS: dict[int, list[int | str]] = {
    11: [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512],
    13: [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512],
    16: [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512],
    19: [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512],
}


def cifar_vgg(depth: int, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG-`depth` for 32x32 images (the classifier sees 512 features there; 28x28 images pool down to nothing)."""
    channels, _, _ = image_shape(input_shape)
    features = conv_stack(PLANS[depth], channels, batch_norm=True).append(nn.AvgPool2d(2))
    model = ConvClassifier(features, input_shape, (), num_classes)
    open_lth_init_(model)
    return model


for _depth in PLANS:
    register(f"vgg{_depth}")(partial(cifar_vgg, _depth))
