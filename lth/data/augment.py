"""Training-batch augmentation on the batch's own device: random crops with zero padding, horizontal flips.

The standard CIFAR recipe (He et al. 2016, used by Frankle et al. 2019/2020 for ResNet-20 and VGG-16): pad each
side by 4 pixels with zeros, take a random 32x32 crop, flip left-right with probability 1/2. Done for the whole
batch with one gather, never a Python loop over images, so it costs about as much as one extra read of the batch.

The random draws come from the given generator on the generator's device and are then moved to the batch, so a
seeded CPU generator gives the same crops on CPU and CUDA, and a resumed run can redraw them exactly.

lth stores images normalised, so the zero padding is the training set's mean intensity rather than black.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Each image of `x` (N, C, H, W) randomly cropped from its zero-padded self and flipped with p=0.5."""
    return _crop(x, generator, padding, flip=True)


def random_crop(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Each image of `x` (N, C, H, W) randomly cropped from its zero-padded self; never flipped."""
    return _crop(x, generator, padding, flip=False)


def _crop(x: Tensor, generator: torch.Generator, padding: int, flip: bool) -> Tensor:
    if x.dim() != 4:
        raise ValueError(f"augmentation needs image batches (N, C, H, W), got shape {tuple(x.shape)}")
    n, channels, height, width = x.shape
    draw = {"generator": generator, "device": generator.device}
    # Draw in a fixed order (rows, columns, flips) so the stream is the same with and without flips enabled.
    top = torch.randint(0, 2 * padding + 1, (n,), **draw).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), **draw).to(x.device)
    flipped = (torch.rand(n, **draw) < 0.5).to(x.device) if flip else torch.zeros(n, dtype=torch.bool, device=x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    rows = top[:, None] + torch.arange(height, device=x.device)  # (N, H) rows of the padded image
    columns = torch.arange(width, device=x.device).expand(n, width)
    columns = torch.where(flipped[:, None], columns.flip(1), columns) + left[:, None]  # (N, W); a flip reads backwards
    # One flat gather per image (shared by its channels): about 4x faster than 4-tensor advanced indexing on CPU.
    index = (rows[:, :, None] * padded_width + columns[:, None, :]).view(n, 1, height * width)
    crops = padded.reshape(n, channels, -1).gather(2, index.expand(n, channels, height * width))
    return crops.view(n, channels, height, width)
