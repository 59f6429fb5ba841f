"""A decoder-only transformer language model (GPT) for lottery tickets beyond image classification (issue 20).

The GPT-2 layout (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners", Section 2.3, as
reimplemented in Karpathy's nanoGPT): token embeddings plus learned position embeddings, `n_layer` pre-LayerNorm
blocks of causal multi-head self-attention and a GELU MLP (4 x n_embd), a final LayerNorm and a linear map to the
vocabulary, optionally tied to the token embedding (Press & Wolf 2017). Initialisation as GPT-2: weights normal
with std 0.02, biases zero, and the projections that write into the residual stream (attention output, MLP
projection) at 0.02 / sqrt(2 n_layer). No dropout. The code is lth's own (lth/models/transformer.py).

Defaults (`build_gpt(vocab_size, block_size=128)`): 5 layers, 4 heads, n_embd 128, tied embeddings: 1,016,320
parameters with Shakespeare's character vocabulary of 65 (about 1M).

Input: int64 tokens (B, T) with T <= block_size; output: logits (B, T, vocab_size), position t depending on
tokens 0..t only.

Prunable (`prunable_parameters`, in module order, the output layer last): every q, k, v and output projection,
both MLP weights, the token embedding and the output layer; a tied embedding is one tensor (`tok_embed.weight`,
listed last: it is the output layer). Never pruned: layer norms, biases, position embeddings.

`model=gpt` (task `language_model`): keys `model.n_layer`, `model.n_head`, `model.n_embd`, `model.block_size`
(unset: the dataset's `dataset.block_size`), `model.tie_embeddings` (lth.schema.GPTModelConfig); the vocabulary
is the dataset's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lth.errors import ConfigError
from lth.model_schemas import GPTModelConfig
from lth.models.registry import register
from lth.models.transformer import Block, check_heads
from lth.schema import ModelConfig
from lth.tasks import LANGUAGE_MODEL

DEFAULTS = {"n_layer": 5, "n_head": 4, "n_embd": 128, "tie_embeddings": True}


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        *,
        n_layer: int = DEFAULTS["n_layer"],
        n_head: int = DEFAULTS["n_head"],
        n_embd: int = DEFAULTS["n_embd"],
        tie_embeddings: bool = DEFAULTS["tie_embeddings"],
    ) -> None:
        super().__init__()
        check_lm(vocab_size, block_size, n_layer)
        check_heads(n_embd, n_head, width_key="model.n_embd")
        self.block_size = block_size
        self.tok_embed = nn.Embedding(vocab_size, n_embd)
        self.pos_embed = nn.Parameter(torch.zeros(1, block_size, n_embd))
        self.blocks = nn.Sequential(*(Block(n_embd, n_head, 4 * n_embd, causal=True) for _ in range(n_layer)))
        self.ln = nn.LayerNorm(n_embd)
        # Tied: the logits use the embedding matrix itself, so the model holds one tensor under one name (a second
        # module sharing it would put it in the state dict twice, which safetensors refuses to save).
        self.head = None if tie_embeddings else nn.Linear(n_embd, vocab_size, bias=False)
        self.reset_parameters(n_layer)

    def reset_parameters(self, n_layer: int) -> None:
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                residual = name.endswith(("attn.out", "mlp.proj"))  # GPT-2: scaled by the depth of the stream
                nn.init.normal_(module.weight, std=0.02 / math.sqrt(2 * n_layer) if residual else 0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        if length > self.block_size:
            raise ValueError(f"a sequence of {length} tokens is longer than the block size {self.block_size}")
        x = self.tok_embed(tokens) + self.pos_embed[:, :length]
        x = self.ln(self.blocks(x))
        return self.head(x) if self.head is not None else F.linear(x, self.tok_embed.weight)

    def prunable_parameters(self) -> dict[str, nn.Parameter]:
        """The prunable tensors by parameter name (names of `named_parameters()`), the output layer last."""
        prunable = {} if self.head is None else {"tok_embed.weight": self.tok_embed.weight}
        for name, module in self.blocks.named_modules(prefix="blocks"):
            if isinstance(module, nn.Linear):
                prunable[f"{name}.weight"] = module.weight
        if self.head is None:
            prunable["tok_embed.weight"] = self.tok_embed.weight  # tied: the input embedding is the output layer
        else:
            prunable["head.weight"] = self.head.weight
        return prunable


def check_lm(vocab_size: int, block_size: int, n_layer: int) -> None:
    """Raise ConfigError (one line naming the key) for sizes no language model can have."""
    if vocab_size < 2:
        raise ConfigError(f"a language model needs a vocabulary of at least 2 tokens, not {vocab_size}")
    if block_size < 1:
        raise ConfigError(f"model.block_size={block_size} is not allowed; model.block_size must be an integer >= 1")
    if n_layer < 1:
        raise ConfigError(f"model.n_layer={n_layer} is not allowed; model.n_layer must be an integer >= 1")


def build_gpt(vocab_size: int, block_size: int = 128, **options: object) -> GPT:
    """A GPT for `vocab_size` tokens and contexts up to `block_size`; `options`: n_layer, n_head, n_embd,
    tie_embeddings (defaults in DEFAULTS)."""
    return GPT(vocab_size, block_size, **options)  # type: ignore[arg-type]


def context_length(cfg: ModelConfig, input_shape: tuple[int, ...]) -> int:
    """`model.block_size`, or the dataset's window length (T of the (T,) input shape) when unset; refused when
    shorter than the windows the model will see."""
    window = input_shape[0]
    block_size = getattr(cfg, "block_size", None) or window
    if block_size < window:
        raise ConfigError(
            f"model.block_size={block_size} is not allowed; model.block_size must be at least "
            f"dataset.block_size={window} (or null: the dataset's)"
        )
    return block_size


@register("gpt", task=LANGUAGE_MODEL)
def gpt(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """`model=gpt` for windows of input_shape (T,) over a vocabulary of `num_classes` tokens."""
    assert isinstance(cfg, GPTModelConfig)
    options = {"n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd, "tie_embeddings": cfg.tie_embeddings}
    return GPT(num_classes, context_length(cfg, input_shape), **options)  # type: ignore[arg-type]
