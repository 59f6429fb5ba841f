"""Model registry: published parameter counts, prunable tensors, output layer, initialisation."""

from __future__ import annotations

import torch

from lth.config import ModelConfig
from lth.models import build, names, output_layer, prunable_weights


def test_lenet_300_100_matches_the_published_parameter_count():
    model = build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 266_610
    assert list(prunable_weights(model)) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert output_layer(model) == "fc3.weight"
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_lenet_init_is_glorot_normal_with_zero_biases():
    torch.manual_seed(0)
    model = build(ModelConfig(name="lenet_300_100"), (1, 28, 28), 10)
    std = model.fc1.weight.std().item()
    assert abs(std - (2 / (784 + 300)) ** 0.5) < 0.002
    assert not model.fc1.bias.any()


def test_registry_lists_models():
    assert "lenet_300_100" in names()
