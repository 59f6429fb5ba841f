"""The GPT and LSTM language models (issue 20 groundwork): shapes, parameter counts, causality, what is prunable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lth.errors import ConfigError
from lth.models import names_for
from lth.models.gpt import GPT, build_gpt
from lth.models.lstm import build_lstm

VOCAB = 65  # Shakespeare's characters in nanoGPT's shakespeare_char


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gpt_count(vocab: int, block: int, layers: int, width: int, tied: bool = True) -> int:
    block_params = 2 * 2 * width + 4 * (width * width + width) + (width * 4 * width + 4 * width) + 4 * width * width
    block_params += width  # the MLP projection's bias
    return vocab * width + block * width + layers * block_params + 2 * width + (0 if tied else width * vocab)


def lstm_count(vocab: int, layers: int, hidden: int, embd: int) -> int:
    recurrent = sum(4 * hidden * ((embd if k == 0 else hidden) + hidden) + 8 * hidden for k in range(layers))
    return vocab * embd + recurrent + hidden * vocab + vocab


def test_parameter_counts_are_pinned_and_about_a_million_by_default():
    with torch.device("meta"):
        assert count(build_gpt(VOCAB, 128)) == gpt_count(VOCAB, 128, 5, 128) == 1_016_320
        assert count(build_gpt(VOCAB, 128, tie_embeddings=False)) == gpt_count(VOCAB, 128, 5, 128, False) == 1_024_640
        assert count(build_gpt(256, 64, n_layer=2, n_head=2, n_embd=32)) == gpt_count(256, 64, 2, 32) == 35_712
        assert count(build_lstm(VOCAB)) == lstm_count(VOCAB, 2, 256, 64) == 876_929
        assert count(build_lstm(256, 32, n_layer=1, hidden=32, n_embd=16)) == lstm_count(256, 1, 32, 16) == 18_944


@pytest.mark.parametrize("build", [build_gpt, build_lstm])
def test_tokens_in_logits_out_and_every_parameter_trains(build):
    torch.manual_seed(0)
    model = build(11, 16, n_layer=2, n_embd=16)
    tokens = torch.randint(11, (3, 16))
    logits = model(tokens)
    assert logits.shape == (3, 16, 11) and logits.dtype == torch.float32
    nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())
    assert model(tokens[:, :5]).shape == (3, 5, 11)  # shorter sequences too


@pytest.mark.parametrize("build", [build_gpt, build_lstm])
def test_the_output_at_position_t_does_not_depend_on_later_tokens(build):
    torch.manual_seed(0)
    model = build(11, 12, n_layer=2, n_embd=16).eval()
    tokens = torch.randint(11, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 11  # every token after position 6
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])  # ... and the later outputs do see them


def test_gpt_prunable_tensors_are_projections_mlp_embedding_and_head():
    untied = build_gpt(11, 8, n_layer=2, n_head=2, n_embd=8, tie_embeddings=False)
    block = ["attn.q.weight", "attn.k.weight", "attn.v.weight", "attn.out.weight", "mlp.fc.weight", "mlp.proj.weight"]
    layers = [f"blocks.{i}.{n}" for i in range(2) for n in block]
    assert list(untied.prunable_parameters()) == ["tok_embed.weight", *layers, "head.weight"]
    tied = build_gpt(11, 8, n_layer=2, n_head=2, n_embd=8)
    prunable = tied.prunable_parameters()
    assert list(prunable) == [*layers, "tok_embed.weight"]  # one tensor, the output layer (last)
    parameters = dict(tied.named_parameters())
    assert all(prunable[name] is parameters[name] for name in prunable)  # names of named_parameters()
    assert "head.weight" not in tied.state_dict()  # the tied tensor is saved once
    never = set(parameters) - set(prunable)
    assert "pos_embed" in never and all(n == "pos_embed" or "ln" in n or n.endswith("bias") for n in never)


def test_lstm_prunable_tensors_are_embedding_recurrent_weights_and_head():
    model = build_lstm(11, 8, n_layer=2, hidden=8, n_embd=4)
    recurrent = [f"lstm.weight_{kind}_l{layer}" for layer in range(2) for kind in ("ih", "hh")]
    assert list(model.prunable_parameters()) == ["tok_embed.weight", *recurrent, "head.weight"]
    never = set(dict(model.named_parameters())) - set(model.prunable_parameters())
    assert never == {f"lstm.bias_{kind}_l{layer}" for layer in range(2) for kind in ("ih", "hh")} | {"head.bias"}


def test_gpt_init_follows_gpt2_residual_scaling():
    torch.manual_seed(0)
    model = build_gpt(VOCAB, 128)
    assert abs(model.blocks[0].attn.q.weight.std().item() - 0.02) < 0.001
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - 0.02 / 10**0.5) < 0.0005  # 0.02 / sqrt(2 x 5)
    assert not model.blocks[0].attn.q.bias.any()


def test_bad_sizes_are_one_line_config_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"^model\.n_embd=30 is not allowed; .* multiple of the 4 attention heads$"):
        build_gpt(VOCAB, 16, n_embd=30)
    with pytest.raises(ConfigError, match=r"^model\.block_size=0 is not allowed"):
        build_lstm(VOCAB, 0)
    with pytest.raises(ConfigError, match=r"^model\.n_layer=0 is not allowed"):
        build_gpt(VOCAB, 16, n_layer=0)
    with pytest.raises(ValueError, match="longer than the block size 8"):
        GPT(VOCAB, 8, n_layer=1, n_embd=8)(torch.zeros(1, 9, dtype=torch.long))


def test_language_models_are_registered_for_the_language_model_task():
    assert names_for("language_model") == ["gpt", "lstm"] and "gpt" not in names_for("classification")
