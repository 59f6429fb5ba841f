"""Every model of the zoo runs the real IMP loop (a dense round and a pruned round) on data shaped like its
paper's dataset, and choosing a model picks its paper's recipe."""

from __future__ import annotations

import json

import pytest
import torch

from lth import config, runs
from lth.config import ModelConfig
from lth.data import Dataset, Split
from lth.data.augment import random_crop_flip
from lth.models import names_for
from lth.prune import dense_masks
from lth.tasks import CLASSIFICATION
from lth.train import Trainer

TINY = [
    "dataset=synthetic",
    "dataset.train_size=48",
    "dataset.val_size=8",
    "dataset.test_size=16",
    "train.epochs=1",
    "train.batch_size=20",
    "train.eval_every=0",
    "prune.rounds=1",
    "ui.progress=false",
]
LIKE = {"lenet_300_100": "fashion_mnist", "lenet5": "mnist"}  # the rest are CIFAR networks
# In the fast suite: one network of each family; the rest (deeper or 4M+ parameters) with -m slow.
FAST_MODELS = {"lenet_300_100", "lenet5", "conv4", "resnet20"}
CLASSIFIERS = [*names_for(CLASSIFICATION), "torchvision"]


@pytest.mark.parametrize(
    "model",  # the classifiers (the language models train in test_language_model.py)
    [pytest.param(m, marks=[] if m in FAST_MODELS else [pytest.mark.slow]) for m in CLASSIFIERS],
)
def test_every_model_trains_a_round_and_prunes(model, tmp_path):
    like = LIKE.get(model, "cifar10")
    overrides = [f"model={model}", *TINY, f"dataset.like={like}"]
    cfg = config.compose([*config.recipe_overrides(overrides), *overrides])
    (tmp_path / model).mkdir()
    rows = runs.run(cfg, tmp_path / model)
    assert [row["round"] for row in rows] == [0, 1]
    assert rows[1]["density"] < 1 and all(rows[1]["checks"].values())
    assert 0 <= rows[1]["test_accuracy"] <= 1


def test_choosing_a_model_picks_its_papers_recipe_unless_the_command_line_chooses():
    assert config.recipe_overrides(["model=vgg16"]) == ["dataset=cifar10", "prune=imp_global", "train=cifar_sgd"]
    assert config.recipe_overrides(["model=conv6", "dataset=synthetic"]) == ["prune=imp_conv6", "train=conv6"]
    assert config.recipe_overrides(["prune.rate=0.3"]) == []
    cfg = config.compose([*config.recipe_overrides(["model=resnet20"]), "model=resnet20"])
    assert (cfg.dataset.name, cfg.train.optimizer, cfg.train.lr, cfg.train.momentum) == ("cifar10", "sgd", 0.1, 0.9)
    assert (cfg.train.epochs, cfg.train.milestones, cfg.train.weight_decay) == (160, ["80ep", "120ep"], 1e-4)
    assert (cfg.prune.scope, cfg.prune.output_rate) == ("global", 0.0)
    conv = config.compose([*config.recipe_overrides(["model=conv2"]), "model=conv2"])
    assert (conv.train.optimizer, conv.train.lr, conv.prune.conv_rate, conv.prune.rate) == ("adam", 2e-4, 0.1, 0.2)


def test_a_sweep_over_models_with_different_recipes_must_choose_the_groups():
    assert config.recipe_overrides(["model=vgg11,vgg16"]) == ["dataset=cifar10", "prune=imp_global", "train=cifar_sgd"]
    with pytest.raises(config.ConfigError, match="model=vgg16,conv2: these models have different recipes"):
        config.recipe_overrides(["model=vgg16,conv2"])


def test_training_batches_are_augmented_reproducibly():
    generator = torch.Generator().manual_seed(0)
    images = Split(torch.randn(64, 3, 8, 8, generator=generator), torch.arange(64) % 4)

    def train(augment) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        from lth.models import build

        model = build(ModelConfig(name="lenet_300_100"), (3, 8, 8), 4)
        dataset = Dataset(train=images, val=None, test=images, num_classes=4, augment=augment)
        cfg = config.TrainConfig(batch_size=16, epochs=1)
        Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=0).run()
        return model.state_dict()

    first, again, plain = train(random_crop_flip), train(random_crop_flip), train(None)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["fc1.weight"], plain["fc1.weight"])


def test_the_recipe_is_recorded_with_the_run(tmp_path, capsys):
    from helpers import lth_ok

    out = lth_ok("run", "model=conv2", *TINY, "dataset.like=cifar10", f"hydra.run.dir={tmp_path}", capsys=capsys)
    assert "the model's recipe: prune=imp_conv train=conv2" in out
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"]["prune"]["conv_rate"] == 0.1 and record["config"]["train"]["lr"] == 2e-4
