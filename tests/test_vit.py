"""model=vit: parameter counts from its layer list, what is prunable, pooling, bad sizes, and real `lth run`s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import lth_in_process
from torch import nn

from lth import config
from lth.config import ModelConfig
from lth.errors import ConfigError
from lth.model_schemas import ViTModelConfig
from lth.models import build, check_fits, output_layer, prunable_weights
from lth.models.vit import VisionTransformer

ROOT = Path(__file__).resolve().parent.parent
MNIST, CIFAR = (1, 28, 28), (3, 32, 32)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vit_count(channels: int, side: int, patch: int, width: int, depth: int, classes: int, cls: bool = True) -> int:
    """The parameter count of the ViT's layer list, written out."""
    tokens = (side // patch) ** 2 + cls
    block = 2 * 2 * width + 4 * (width * width + width) + (width * 4 * width + 4 * width) + (4 * width * width + width)
    embed = channels * patch * patch * width + width + tokens * width + cls * width
    return embed + depth * block + 2 * width + width * classes + classes


def test_parameter_counts_follow_the_layer_list():
    with torch.device("meta"):
        assert count(build(ModelConfig(name="vit"), MNIST, 10)) == vit_count(1, 28, 4, 64, 6, 10) == 305_034
        assert count(build(ModelConfig(name="vit"), CIFAR, 10)) == vit_count(3, 32, 4, 64, 6, 10) == 308_042
        assert count(build(ModelConfig(name="vit", width=32), MNIST, 10)) == vit_count(1, 28, 4, 32, 6, 10) == 78_794
        small = VisionTransformer(CIFAR, 100, patch_size=8, width=48, depth=2, heads=3, pool="mean")
        assert count(small) == vit_count(3, 32, 8, 48, 2, 100, cls=False) == 71_572


def test_prunable_are_the_projections_mlp_patch_embedding_and_head_only():
    model = VisionTransformer(MNIST, 10, width=16, depth=2, heads=2)
    prunable = prunable_weights(model)
    block = [f"attn.{p}.weight" for p in "qkv"] + ["attn.out.weight", "mlp.fc.weight", "mlp.proj.weight"]
    expected = ["patch_embed.weight", *(f"blocks.{i}.{n}" for i in range(2) for n in block), "head.weight"]
    assert list(prunable) == expected
    assert output_layer(model) == "head.weight"
    never = {n for n in dict(model.named_parameters()) if n not in prunable}
    assert {"pos_embed", "cls_token", "ln.weight", "blocks.0.ln1.weight", "blocks.1.attn.q.bias"} <= never
    assert all(".ln" in n or n.startswith("ln.") or n.endswith("bias") for n in never - {"pos_embed", "cls_token"})


def test_mean_pooling_has_no_class_token_and_both_poolings_classify():
    torch.manual_seed(0)
    x = torch.randn(3, *MNIST)
    for pool in ("cls", "mean"):
        model = VisionTransformer(MNIST, 5, width=16, depth=1, heads=2, pool=pool)
        assert (model.cls_token is None) == (pool == "mean")
        assert model.pos_embed.shape == (1, 49 + (pool == "cls"), 16)
        logits = model(x)
        assert logits.shape == (3, 5)
        logits.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_init_is_the_jax_vits_glorot_and_lecun_normal_with_zero_biases_and_class_token():
    torch.manual_seed(0)
    model = build(ModelConfig(name="vit"), MNIST, 10)
    q = model.blocks[0].attn.q.weight
    assert q.abs().max() <= (6 / 128) ** 0.5 and abs(q.std().item() - (2 / 128) ** 0.5) < 0.005  # Glorot uniform
    fc = model.blocks[0].mlp.fc.weight  # 64 -> 256
    assert abs(fc.std().item() - (2 / (64 + 256)) ** 0.5) < 0.003
    patch = model.patch_embed.weight  # fan in 16: LeCun std 0.25, truncated at 0.5
    assert patch.abs().max() <= 0.5 and abs(patch.std().item() - 0.25 * 0.8796) < 0.03
    assert abs(model.pos_embed.std().item() - 0.02) < 0.002
    assert not model.blocks[0].attn.q.bias.any() and not model.cls_token.any() and model.head.weight.any()


def test_attention_sees_every_patch():
    """No mask in a ViT: changing the last patch changes the class token's output."""
    torch.manual_seed(0)
    model = VisionTransformer(MNIST, 4, width=16, depth=1, heads=2)
    x = torch.randn(1, *MNIST)
    y = x.clone()
    y[..., -4:, -4:] += 1
    assert not torch.allclose(model(x), model(y))


@pytest.mark.parametrize(
    ("shape", "width", "message"),
    [
        ((1, 30, 30), None, "model.patch_size=4 is not allowed; model.patch_size must divide the 30x30 images"),
        (MNIST, 66, "model.width=66 is not allowed; model.width must be a multiple of the 4 attention heads"),
        ((20,), None, "a vision transformer needs image inputs of shape (C, H, W), not (20,)"),
    ],
)
def test_bad_sizes_are_one_line_config_errors(shape, width, message):
    with pytest.raises(ConfigError) as error:
        check_fits(ModelConfig(name="vit", width=width), shape, 10)
    assert str(error.value) == f"model=vit does not fit inputs of shape {shape} from the dataset: {message}"


def test_the_recipe_is_fashion_mnist_with_adamw_and_the_preset_composes():
    assert config.recipe_overrides(["model=vit"]) == ["dataset=fashion_mnist", "prune=imp", "train=vit"]
    cfg = config.compose([*config.recipe_overrides(["model=vit"]), "model=vit"])
    recipe = (cfg.dataset.name, cfg.train.optimizer, cfg.train.weight_decay, cfg.train.lr_schedule, cfg.train.warmup)
    assert recipe == ("fashion_mnist", "adamw", 0.05, "cosine", "2ep")
    preset = config.compose(config.expand_sweep(["+experiment=vit_fmnist"])[0])
    assert preset.model.name == "vit" and preset.prune.output_rate == 0.1


TINY = [
    "model=vit",
    "model.width=16",
    "dataset=synthetic",
    "dataset.like=fashion_mnist",
    "dataset.train_size=40",
    "dataset.val_size=8",
    "dataset.test_size=16",
    "train.epochs=1",
    "train.batch_size=16",
    "prune.rounds=1",
    "ui.progress=false",
]


def lth(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "lth", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.slow  # the real command on a transformer: about 8 s
def test_lth_run_model_vit_on_synthetic_data_end_to_end(tmp_path):
    done = lth("run", *TINY, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["model"]["name"] == "vit"
    pruned = json.loads((tmp_path / "run" / "round_01" / "metrics.json").read_text())
    assert all(pruned["checks"].values())
    layers = pruned["layer_density"]  # the prunable layers only: no norms, biases, positions or class token
    assert len(layers) == 1 + 6 * 6 + 1 and layers["head.weight"] == 0.9  # the output layer at half the rate
    assert all(0.79 < d < 0.81 for name, d in layers.items() if name != "head.weight")


def test_lth_run_refuses_a_patch_size_that_does_not_divide_the_images_in_one_line(tmp_path, capsys):
    bad = [*TINY, "dataset.like=null", "dataset.input_shape=[1,30,30]", f"hydra.run.dir={tmp_path / 'run'}"]
    code, _, err = lth_in_process("run", *bad, capsys=capsys)
    assert code == 2
    assert err == (
        "lth: error: model=vit does not fit inputs of shape (1, 30, 30) from the dataset: "
        "model.patch_size=4 is not allowed; model.patch_size must divide the 30x30 images\n"
    )
    assert not (tmp_path / "run").exists()  # nothing left on disk


def test_the_builder_reads_the_model_keys_and_the_command_line_sets_them():
    cfg = ViTModelConfig(name="vit", width=32, patch_size=7, n_layer=2, n_head=2, pool="mean")
    with torch.device("meta"):
        model = build(cfg, MNIST, 10)
        default = build(ViTModelConfig(name="vit"), MNIST, 10)
    composed = config.compose(["model=vit", "model.patch_size=7", "model.pool=mean"])
    assert (composed.model.patch_size, composed.model.pool, composed.model.n_layer) == (7, "mean", None)
    assert (len(model.blocks), model.blocks[0].attn.heads, model.patch_embed.kernel_size) == (2, 2, (7, 7))
    assert model.cls_token is None and count(model) == vit_count(1, 28, 7, 32, 2, 10, cls=False)
    assert count(default) == 305_034
