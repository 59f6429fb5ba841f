"""Conv-2, Conv-4 and Conv-6: the VGG-like CIFAR-10 networks of Frankle & Carbin 2019, "The Lottery Ticket
Hypothesis" (arXiv 1803.03635), Figure 2 and Appendix: pairs of 3x3 convolutions (64, 128, 256 channels), each
pair followed by 2x2 max-pooling, then FC 256, 256 and the output layer; ReLU, Glorot normal init."""

from __future__ import annotations

from functools import partial

from torch import nn

from lth.models.layers import POOL, ConvClassifier, conv_stack, glorot_init_, image_shape
from lth.models.registry import register
from lth.schema import ModelConfig

# Conv-N has N/2 stages of [c, c, pool]; the paper's Figure 2 lists the stages cumulatively (Conv-4 = Conv-2 + 128).
_STAGES = (64, 128, 256)
HIDDEN = (256, 256)


def conv_net(depth: int, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Conv-`depth`; the first FC layer's input follows the image size (16x16x64 for Conv-2 on CIFAR-10)."""
    plan: list[int | str] = []
    for channels in _STAGES[: depth // 2]:
        plan += [channels, channels, POOL]
    channels_in, _, _ = image_shape(input_shape)
    model = ConvClassifier(conv_stack(plan, channels_in, batch_norm=False), input_shape, HIDDEN, num_classes)
    glorot_init_(model)
    return model


for _depth in (2, 4, 6):
    register(f"conv{_depth}")(partial(conv_net, _depth))
