"""A vision transformer for small images (Fashion-MNIST, MNIST, CIFAR, SVHN).

The architecture of Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (ICLR 2021, arXiv 2010.11929), Section 3.1 and Eq. 1-4: the image is cut into non-overlapping P x P
patches, each linearly projected to `width` (here a P x P conv with stride P, the same map); a learned class token
is prepended and learned 1-D position embeddings are added; `depth` pre-LayerNorm blocks of multi-head
self-attention and a GELU MLP (4 x width) follow; the final LayerNorm'd class token (or, with pool="mean", the mean
of the patch tokens, as in the paper's Appendix D.3 ablation) feeds one linear output layer. No dropout (Frankle &
Carbin's networks have none, and `train.replicates` refuses it).

lth's default is a small ViT sized for 28x28 and 32x32 images rather than one of the paper's ViT-B/L/H: 4x4
patches (7x7 = 49 patches on Fashion-MNIST), width 64, 6 blocks, 4 heads, 305,034 parameters on Fashion-MNIST.
`model.width` sets the width; `model.patch_size`, `model.n_layer` (depth), `model.n_head`, `model.mlp_ratio` and
`model.pool` the rest (lth.schema.ViTModelConfig; unset: the defaults here).

Initialisation as the paper's own JAX code (google-research/vision_transformer; timm's "jax" scheme, torchvision's
ViT likewise): linear weights Glorot (Xavier) uniform, biases zero, the patch projection LeCun normal (std
sqrt(1 / fan_in), truncated at 2 std), position embeddings normal with std 0.02, class token zero, layer norms ones
and zeros. The one change: the head is Glorot uniform too, where the JAX code zero-initialises it (a ticket's
output layer needs initial values to rewind to). A GPT-style normal(0, 0.02) everywhere trains a width-64 ViT
markedly slower (0.02 is small next to Glorot's sqrt(2 / (64 + 64)) = 0.125).

Prunable (found by `lth.models.prunable_weights`, linear and conv weights): the patch projection, every q, k, v
and output projection, both MLP weights, and the head (the output layer, the last of them). Never pruned: layer
norms, biases, position embeddings, the class token.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lth.errors import ConfigError
from lth.model_schemas import POOLS
from lth.models.registry import register
from lth.models.transformer import Block, check_heads
from lth.schema import ModelConfig

# The defaults of `model=vit`, and the config field (lth.schema.ViTModelConfig) each is read from (see `_option`).
DEFAULTS = {"patch_size": 4, "width": 64, "depth": 6, "heads": 4, "mlp_ratio": 4, "pool": "cls"}
CONFIG_KEYS = {"patch_size": "patch_size", "width": "width", "depth": "n_layer", "heads": "n_head"}
CONFIG_KEYS |= {"mlp_ratio": "mlp_ratio", "pool": "pool"}


class VisionTransformer(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        patch_size: int = DEFAULTS["patch_size"],
        width: int = DEFAULTS["width"],
        depth: int = DEFAULTS["depth"],
        heads: int = DEFAULTS["heads"],
        mlp_ratio: int = DEFAULTS["mlp_ratio"],
        pool: str = DEFAULTS["pool"],
    ) -> None:
        super().__init__()
        channels, height, image_width = check_vit(input_shape, patch_size, width, depth, heads, pool)
        patches = (height // patch_size) * (image_width // patch_size)
        self.pool = pool
        self.patch_embed = nn.Conv2d(channels, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + (pool == "cls"), width))
        self.blocks = nn.Sequential(*(Block(width, heads, mlp_ratio * width) for _ in range(depth)))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        fan_in = self.patch_embed.weight[0].numel()
        _trunc_normal_(self.patch_embed.weight, std=fan_in**-0.5)  # LeCun normal
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.zeros_(self.cls_token)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, patches, width), patches in row-major order
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = self.ln(self.blocks(tokens + self.pos_embed))
        return self.head(tokens[:, 0] if self.cls_token is not None else tokens.mean(dim=1))


def _trunc_normal_(tensor: Tensor, std: float) -> None:
    """Normal(0, std) truncated at 2 std (torch's trunc_normal_ bounds are absolute: a=-2, b=2 by default)."""
    nn.init.trunc_normal_(tensor, std=std, a=-2 * std, b=2 * std)


def check_vit(
    input_shape: tuple[int, ...], patch_size: int, width: int, depth: int, heads: int, pool: str
) -> tuple[int, int, int]:
    """(C, H, W) of the images, or ConfigError (one line) when the options cannot build a ViT for them."""
    if len(input_shape) != 3:
        raise ConfigError(f"a vision transformer needs image inputs of shape (C, H, W), not {tuple(input_shape)}")
    channels, height, image_width = input_shape
    if patch_size < 1 or height % patch_size or image_width % patch_size:
        raise ConfigError(
            f"model.patch_size={patch_size} is not allowed; model.patch_size must divide the {height}x{image_width} "
            "images"
        )
    check_heads(width, heads)
    if depth < 1:
        raise ConfigError(f"a vision transformer needs a depth >= 1, not {depth}")
    if pool not in POOLS:
        raise ConfigError(f"the pooling must be one of: {', '.join(POOLS)}, not {pool}")
    return channels, height, image_width


def _option(cfg: ModelConfig, option: str) -> object:
    """The config's value for `option` (field CONFIG_KEYS[option]) when it is set, else the default."""
    value = getattr(cfg, CONFIG_KEYS[option], None)
    return DEFAULTS[option] if value is None else value


@register("vit", takes_width=True)
def vit(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small ViT above; `model.width` sets its width (default 64)."""
    options = {key: _option(cfg, key) for key in DEFAULTS}
    return VisionTransformer(tuple(input_shape), num_classes, **options)  # type: ignore[arg-type]
