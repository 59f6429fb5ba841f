"""The schemas of the models whose config has keys beyond `lth.schema.ModelConfig`'s (the transformers and the
language models); `conf/model/<name>.yaml` starts from `base_<name>`. A leaf like lth.schema: no torch, no Hydra.
Unset (null) keys take the model's own defaults (lth/models/<name>.py)."""

from __future__ import annotations

from dataclasses import dataclass

from lth.schema import ModelConfig, require, require_choice

POOLS = ("cls", "mean")  # vision transformer: the class token | the mean of the patch tokens


def _at_least(key: str, value: int | None, low: int) -> None:
    require(value is None or value >= low, key, value, f"an integer >= {low}, or null (the model's default)")


@dataclass
class ViTModelConfig(ModelConfig):
    """`model=vit` (lth/models/vit.py); unset keys take the model's defaults there."""

    patch_size: int | None = None  # P: the image is cut into P x P patches (P must divide its height and width)
    n_layer: int | None = None  # transformer blocks
    n_head: int | None = None  # attention heads (must divide model.width)
    mlp_ratio: int | None = None  # MLP hidden width / model.width
    pool: str | None = None  # cls (class token) | mean (of the patch tokens)

    def __post_init__(self) -> None:
        for key in ("patch_size", "n_layer", "n_head", "mlp_ratio"):
            _at_least(f"model.{key}", getattr(self, key), 1)
        if self.pool is not None:
            require_choice("model.pool", self.pool, POOLS)


@dataclass
class GPTModelConfig(ModelConfig):
    """`model=gpt` (lth/models/gpt.py), a decoder-only transformer language model."""

    n_layer: int = 5  # the defaults of lth/models/gpt.py: about 1M parameters with a character vocabulary
    n_head: int = 4
    n_embd: int = 128
    block_size: int | None = None  # longest context (position embeddings); unset: the dataset's dataset.block_size
    tie_embeddings: bool = True  # the output layer is the token embedding (one tensor, one mask)

    def __post_init__(self) -> None:
        for key in ("n_layer", "n_head", "n_embd"):
            _at_least(f"model.{key}", getattr(self, key), 1)
        _at_least("model.block_size", self.block_size, 1)
        heads = f"a multiple of model.n_head={self.n_head}"
        require(self.n_embd % self.n_head == 0, "model.n_embd", self.n_embd, heads)


@dataclass
class LSTMModelConfig(ModelConfig):
    """`model=lstm` (lth/models/lstm.py), an LSTM language model."""

    n_layer: int = 2
    hidden: int = 256  # LSTM units per layer
    n_embd: int = 64  # token embedding size

    def __post_init__(self) -> None:
        for key in ("n_layer", "hidden", "n_embd"):
            _at_least(f"model.{key}", getattr(self, key), 1)


# Models whose config has keys beyond ModelConfig's; their YAML files start from these schemas too.
MODEL_SCHEMAS: dict[str, type[ModelConfig]] = {"vit": ViTModelConfig, "gpt": GPTModelConfig, "lstm": LSTMModelConfig}
