"""Transformer layers shared by the vision transformer (lth/models/vit.py) and the GPT language model
(lth/models/gpt.py): multi-head self-attention, the GELU MLP, and the pre-LayerNorm residual block.

Attention is written with four explicit `nn.Linear` projections (q, k, v and the output) rather than
`nn.MultiheadAttention`, which keeps q, k and v in one raw `in_proj_weight` Parameter: `lth.models.prunable_weights`
finds the weights of linear and conv layers, so it sees each projection as its own prunable layer, with its own
mask and (layerwise) its own rate. Layer norms, biases, position embeddings and class tokens are never prunable.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from lth.errors import ConfigError


def check_heads(width: int, heads: int, width_key: str = "model.width") -> None:
    """Raise ConfigError (one line naming the key) unless `heads` attention heads split `width` evenly."""
    if heads < 1:
        raise ConfigError(f"the number of attention heads must be an integer >= 1, not {heads}")
    if width < 1 or width % heads:
        raise ConfigError(
            f"{width_key}={width} is not allowed; {width_key} must be a multiple of the {heads} attention heads"
        )


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al. 2017) over (B, T, width) inputs; `causal`:
    position t attends to positions <= t only (a language model)."""

    def __init__(self, width: int, heads: int, causal: bool = False) -> None:
        super().__init__()
        check_heads(width, heads)
        self.heads, self.causal = heads, causal
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape

        def heads(t: Tensor) -> Tensor:  # (B, T, width) -> (B, heads, T, width / heads)
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), is_causal=self.causal)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class MLP(nn.Module):
    """width -> hidden -> width with GELU, applied to every position."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, hidden)
        self.proj = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln1(x)), then x + mlp(ln2(x)) (the layout of GPT-2 and ViT)."""

    def __init__(self, width: int, heads: int, mlp_hidden: int, causal: bool = False) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, causal)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))
