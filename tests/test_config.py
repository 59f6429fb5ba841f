"""Config composition: the defaults are the paper's recipe, every key is documented, sweeps expand."""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import get_type_hints

import pytest

from lth.config import GROUPS, Config, SyntheticDatasetConfig, compose, expand_sweep, group_options
from lth.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.md"


def leaf_keys(schema: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of a schema, e.g. `prune.rate`."""
    keys = []
    for name, hint in get_type_hints(schema).items():
        if is_dataclass(hint):
            keys.extend(leaf_keys(hint, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_default_is_frankle_and_carbin_lenet_on_fashion_mnist():
    cfg = compose([])
    assert (cfg.model.name, cfg.dataset.name) == ("lenet_300_100", "fashion_mnist")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("adam", 1.2e-3, 60)
    assert (cfg.prune.rate, cfg.prune.output_rate, cfg.prune.scope) == (0.2, None, "layerwise")
    assert cfg.dataset.val_size == 5000


def test_overrides_reach_the_typed_config():
    cfg = compose(
        [
            "prune.rate=0.3",
            "prune.rounds=5",
            "train.epochs=2",
            "seed=1",
            "dataset=synthetic",
            "dataset.input_shape=[3,8,8]",
        ]
    )
    assert (cfg.prune.rate, cfg.prune.rounds, cfg.train.epochs, cfg.seed) == (0.3, 5, 2, 1)
    assert isinstance(cfg.dataset, SyntheticDatasetConfig) and cfg.dataset.input_shape == [3, 8, 8]


def test_synthetic_only_keys_are_refused_for_real_datasets():
    with pytest.raises(ConfigError, match=r"dataset\.num_classes: unknown config key"):
        compose(["dataset=mnist", "dataset.num_classes=3"])


def test_every_config_key_and_group_option_is_in_the_readme():
    text = README.read_text()
    keys = set(leaf_keys()) | set(leaf_keys(SyntheticDatasetConfig, "dataset."))
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"README's config reference lacks {missing}"
    for group in GROUPS:
        for option in group_options(group):
            assert f"`{option}`" in text, f"README does not mention {group}={option}"


def test_sweep_expands_to_the_cartesian_product():
    jobs = list(expand_sweep(["seed=0,1,2", "prune.rate=0.2,0.3", "train.epochs=1"]))
    assert len(jobs) == 6
    assert ["seed=2", "prune.rate=0.3", "train.epochs=1"] in jobs
