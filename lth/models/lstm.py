"""An LSTM language model (Hochreiter & Schmidhuber 1997; the embedding -> stacked LSTM -> linear layout of
Zaremba et al. 2014, without dropout), the recurrent baseline for lottery tickets in language models (issue 20).

Defaults (`build_lstm(vocab_size)`): a 64-wide token embedding, 2 layers of 256 hidden units, a linear output
layer: 876,929 parameters with Shakespeare's character vocabulary of 65. PyTorch's default initialisation
(uniform on +-1/sqrt(hidden) for the LSTM, normal for the embedding).

Input: int64 tokens (B, T); output: logits (B, T, vocab_size), position t depending on tokens 0..t only. The
state starts at zero for every window (windows are drawn independently, lth.data.text).

Prunable (`prunable_parameters`, the output layer last): the token embedding, every layer's input-to-hidden and
hidden-to-hidden weights (`lstm.weight_ih_l<k>`, `lstm.weight_hh_l<k>`: nn.LSTM keeps them as raw Parameters,
which `lth.models.prunable_weights` finds through this method) and the output layer. Never pruned: biases.

`model=lstm` (task `language_model`): keys `model.n_layer`, `model.hidden`, `model.n_embd`
(lth.schema.LSTMModelConfig). Not batched by `train.replicates` (torch.func.vmap has no rule for nn.LSTM's fused
kernel; refused in one line).
"""

from __future__ import annotations

from torch import Tensor, nn

from lth.model_schemas import LSTMModelConfig
from lth.models.gpt import check_lm
from lth.models.registry import register
from lth.schema import ModelConfig
from lth.tasks import LANGUAGE_MODEL

DEFAULTS = {"n_layer": 2, "hidden": 256, "n_embd": 64}


class LSTMLanguageModel(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        *,
        n_layer: int = DEFAULTS["n_layer"],
        hidden: int = DEFAULTS["hidden"],
        n_embd: int = DEFAULTS["n_embd"],
    ) -> None:
        super().__init__()
        check_lm(vocab_size, block_size, n_layer)
        self.block_size = block_size  # the training window; an LSTM itself takes any length
        self.tok_embed = nn.Embedding(vocab_size, n_embd)
        self.lstm = nn.LSTM(n_embd, hidden, num_layers=n_layer, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.lstm(self.tok_embed(tokens))
        return self.head(out)

    def prunable_parameters(self) -> dict[str, nn.Parameter]:
        """The prunable tensors by parameter name, the output layer last."""
        prunable = {"tok_embed.weight": self.tok_embed.weight}
        for layer in range(self.lstm.num_layers):
            for kind in ("ih", "hh"):
                name = f"weight_{kind}_l{layer}"
                prunable[f"lstm.{name}"] = getattr(self.lstm, name)
        prunable["head.weight"] = self.head.weight
        return prunable


def build_lstm(vocab_size: int, block_size: int = 128, **options: object) -> LSTMLanguageModel:
    """An LSTM language model for `vocab_size` tokens trained on windows of `block_size`; `options`: n_layer,
    hidden, n_embd (defaults in DEFAULTS)."""
    return LSTMLanguageModel(vocab_size, block_size, **options)  # type: ignore[arg-type]


@register("lstm", task=LANGUAGE_MODEL)
def lstm(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """`model=lstm` for windows of input_shape (T,) over a vocabulary of `num_classes` tokens."""
    assert isinstance(cfg, LSTMModelConfig)
    return LSTMLanguageModel(num_classes, input_shape[0], n_layer=cfg.n_layer, hidden=cfg.hidden, n_embd=cfg.n_embd)
