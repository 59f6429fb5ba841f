"""A composed (or saved) config as a typed, checked `lth.schema.Config`: merge onto the schema, validate, and the
plain data, dotted keys and hash that run.json records.

OmegaConf only, no Hydra: the read side (report, analyze, export) reads run.json through this module.
Composition from `conf/` with Hydra is `lth.config`'s job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from lth import schema as schema_module
from lth.dataset_schemas import DATASET_SCHEMAS, ImageFolderDatasetConfig, SyntheticDatasetConfig
from lth.errors import ConfigError
from lth.model_schemas import MODEL_SCHEMAS
from lth.schema import (
    CRITERIA,
    GROUPS,
    RESUMABLE_KEYS,
    SHAPE_KEYS,
    Config,
    DatasetConfig,
    ModelConfig,
    refuse,
    require,
    require_choice,
)

_INVALID_CHOICE = re.compile(r"Invalid value '(?P<value>.*)', expected one of \[(?P<options>.*)\]")


# Keys added after run records were pinned (tests/fixtures/config_records.json), with their defaults: a key at its
# default is left out of run.json and the config hash, so every earlier run keeps its hash and can be resumed.
LATER_KEYS: dict[str, Any] = {
    "train.grad_clip": None,
    "train.patience": 0,
    "prune.update_every": 100,
    "prune.drop_fraction": 0.3,
    "prune.drop_schedule": "cosine",
    "prune.update_until": 0.75,
    "prune.early_ticket": False,
    "prune.early_ticket_window": 5,
    "prune.early_ticket_epsilon": 0.1,
    "ui.width": None,
    "prune.round0_from": None,
    "prune.structure": "weight",
    "prune.nm": [2, 4],
    "dataset.stream": "auto",
    "dataset.workers": None,
    "logger_uri": None,
    "logger_online": False,
    "logger_project": "lth",
}
# What a logger imports, the package that provides it and how to install it: checked before a run starts, so a
# missing package is one line, not a traceback in round 0 (the read side never imports them).
LOGGER_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard", "pip install 'lth[tensorboard]'"),
    "mlflow": ("mlflow", "mlflow-skinny", "pip install 'lth[mlflow]'"),
    "wandb": ("wandb", "wandb", "pip install 'lth[wandb]'"),
}


def from_dictconfig(composed: DictConfig, registries: bool = True) -> Config:
    """Turn a composed (or saved) config into the typed Config; the schema's groups check themselves as they are
    built, then `validate` checks what needs the registries (`registries=False`: a record only read, not run)."""
    schema = OmegaConf.structured(Config)
    dataset_name = OmegaConf.select(composed, "dataset.name", default=None)
    schema.dataset = OmegaConf.structured(DATASET_SCHEMAS.get(dataset_name, DatasetConfig))
    model_name = OmegaConf.select(composed, "model.name", default=None)
    model_source = OmegaConf.select(composed, "model.source", default="lth")
    model_schema = MODEL_SCHEMAS.get(model_name, ModelConfig) if model_source == "lth" else ModelConfig
    schema.model = OmegaConf.structured(model_schema)
    _refuse_unknown_keys(schema, composed)
    try:
        merged = OmegaConf.merge(schema, composed)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(explain(error)) from None
    assert isinstance(cfg, Config)
    if registries:
        validate(cfg)
    return cfg


def _refuse_unknown_keys(schema: DictConfig, composed: Any, prefix: str = "") -> None:
    """A key the schema's dataclasses lack is refused, whether it came with `+`, `++` or from a YAML file
    (OmegaConf's merge into a structured config would otherwise keep it and drop it silently); free-form dict
    fields (a model's `recipe`) hold any keys."""
    if schema._is_missing():  # a group not yet filled in: its dataclass says which keys it has
        kind = schema._metadata.ref_type
        if not is_dataclass(kind):
            return
        schema = OmegaConf.structured(kind)
    if not isinstance(composed, DictConfig) or not is_dataclass(OmegaConf.get_type(schema)):
        return
    keys = list(schema.keys())  # (`key in schema` says no for a key whose value is still missing)
    for key in composed:
        dotted = f"{prefix}{key}"
        if key not in keys:
            where, allowed = prefix.rstrip(".") or "the top level", ", ".join(map(str, keys))
            raise ConfigError(f"{dotted}: unknown config key; keys allowed under '{where}': {allowed}")
        child = schema._get_node(key)
        if isinstance(child, DictConfig):
            _refuse_unknown_keys(child, composed._get_node(key), f"{dotted}.")


def validate(cfg: Config) -> None:
    """The checks the schema cannot do alone: names only a registry knows, and what the environment allows."""
    from lth import data, models  # registries import torch; keep `lth --help` light

    models.check_name(cfg.model)
    require_choice("dataset.name", cfg.dataset.name, data.names())
    _check_task(cfg, models.task_of(cfg.model), data.task_of(cfg.dataset.name), models.names_for)
    if isinstance(cfg.dataset, SyntheticDatasetConfig) and cfg.dataset.like is not None:
        require_choice("dataset.like", cfg.dataset.like, sorted(data.synthetic.LIKE))
    if isinstance(cfg.dataset, ImageFolderDatasetConfig) and cfg.train.replicates > 1:
        streamed = data.imagefolder.IMAGE_FOLDER.streams(cfg.dataset)  # lists the tree (no decoding) for auto
        allowed = f"1 when the image tree streams from disk (dataset.stream={cfg.dataset.stream}); with dataset.stream"
        require(not streamed, "train.replicates", cfg.train.replicates, allowed + "=false it is decoded into memory")
    module, package, install = LOGGER_PACKAGES.get(cfg.logger, ("", "", ""))
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f"logger={cfg.logger} needs the {package} package: {install}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    replicates = cfg.train.replicates
    require(replicates == 1 or world == 1, "train.replicates", replicates, f"1 under torchrun (WORLD_SIZE={world})")


# Criteria that score with labelled examples or image-shaped inputs: classifiers only.
CLASSIFIER_CRITERIA = ("snip", "grasp", "synflow")


def _check_task(cfg: Config, model_task: str, data_task: str, models_for: Any) -> None:
    """The model is built for the dataset's task (lth.tasks), and the pruning criterion can score it."""
    if model_task != data_task:
        model = f"model={cfg.model.name}" if cfg.model.source == "lth" else f"model.source={cfg.model.source}"
        allowed = f"a {data_task} model for dataset={cfg.dataset.name}: one of {', '.join(models_for(data_task))}"
        raise ConfigError(f"{model} is a {model_task} model and is not allowed; model must be {allowed}")
    if data_task != "classification" and cfg.prune.criterion in CLASSIFIER_CRITERIA:
        others = [c for c in CRITERIA if c not in CLASSIFIER_CRITERIA]
        refuse("prune.criterion", cfg.prune.criterion, f"one of {', '.join(others)} for a {data_task} dataset")


def to_container(cfg: Config) -> dict[str, Any]:
    """Plain data (for run.json, the authoritative record of a run's config)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)
    assert isinstance(container, dict)
    for key, before in LATER_KEYS.items():  # at the value earlier runs had: left out, as they were recorded
        *groups, name = key.split(".")
        node: Any = container
        for group in groups:
            node = node.get(group) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node and node[name] == before:  # (dataset keys: one dataset's)
            del node[name]
    return container


def from_container(data: Any, source: Path, registries: bool = True) -> Config:
    """A validated Config from plain data read from `source` (a run's run.json); `registries=False` for the read
    side, which needs no model or dataset code (and so no torch) to show a record."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} holds no readable config")
    return from_dictconfig(OmegaConf.create(data), registries)


def with_overrides(cfg: Config, overrides: Sequence[str]) -> Config:
    """A copy of `cfg` with `key=value` overrides applied (plain keys only: groups cannot change here)."""
    for override in overrides:
        key = override.partition("=")[0]
        if key in GROUPS:
            raise ConfigError(
                f"{override}: config groups ({', '.join(GROUPS)}) cannot change on resume; start a new run"
            )
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cfg), OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ConfigError(explain(error)) from None
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read overrides {' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    return from_dictconfig(merged)


def flatten(cfg: Config) -> dict[str, Any]:
    """Dotted key → value, e.g. {"prune.rate": 0.2, ...}."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(to_container(cfg), "")
    return {**LATER_KEYS, **flat}  # a key a record leaves out at its old value has that value


# Pruning keys that act during round 0 (θk is saved in it; an early ticket stops it); the others act after it.
ROUND0_PRUNE_KEYS = ("prune.rewind_to", "prune.early_ticket")
# Where the data was read from: two copies of the same files train the same round 0 (the data is hashed by θ0's
# and the round's checks only as far as its name and sizes go, so name the same dataset).
WHERE_KEYS = ("dataset.root", "dataset.download")


def round0_config(cfg: Config) -> dict[str, Any]:
    """The keys that decide round 0, the dense training: all that decide results except the pruning, which acts
    after it (but `ROUND0_PRUNE_KEYS`), and where the data was read from."""
    return {
        key: value
        for key, value in flatten(cfg).items()
        if decides_results(key)
        and key not in WHERE_KEYS
        and (not key.startswith("prune.") or key.startswith(ROUND0_PRUNE_KEYS))
    }


def decides_shapes(key: str) -> bool:
    """Whether a dotted config key decides the shapes of a run's saved tensors (SHAPE_KEYS)."""
    return key.startswith(SHAPE_KEYS)


def decides_results(key: str) -> bool:
    """Whether a dotted config key can change a run's results (RESUMABLE_KEYS cannot)."""
    return not key.startswith(RESUMABLE_KEYS)


def config_hash(cfg: Config) -> str:
    """A fingerprint of everything that determines a run's results."""
    later = LATER_KEYS.items()
    decisive = {k: v for k, v in flatten(cfg).items() if decides_results(k) and (k, v) not in later}
    return hashlib.sha256(repr(sorted(decisive.items())).encode()).hexdigest()[:16]


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs, with (old, new)."""
    before, after = flatten(old), flatten(new)
    return {
        k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
    }


def explain(error: Exception) -> str:
    """One line that names the key and what is allowed, from OmegaConf's multi-line errors."""
    cause = error
    while not isinstance(cause, OmegaConfBaseException) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        key = cause.full_key
        if isinstance(cause, ConfigKeyError | ConfigAttributeError) and is_dataclass(cause.object_type):
            parent = key.rpartition(".")[0]
            allowed = ", ".join(get_type_hints(cause.object_type))
            where = f"under '{parent}'" if parent else "at the top level"
            return f"{key}: unknown config key; keys allowed {where}: {allowed}"
        invalid = _INVALID_CHOICE.match(str(cause.msg))
        if invalid:  # a Choice (lth.schema) given another value: the one-line refusal every check gives
            return f"{key}={invalid['value']} is not allowed; {key} must be one of: {invalid['options']}"
        return f"{key}: {str(cause.msg).splitlines()[0]}"
    lines = [line.strip() for line in str(error).strip().splitlines()]
    if len(lines) > 1 and lines[0].endswith(":"):  # Hydra's "In 'debug/fast': ... composing config:" + the cause
        where = lines[0].partition(":")[0]
        fields = dict(line.replace("=", ": ", 1).split(": ", 1) for line in lines[2:] if ": " in line or "=" in line)
        schema = getattr(schema_module, fields.get("object_type", ""), None)
        if "full_key" in fields and is_dataclass(schema):
            key = fields["full_key"]
            allowed = ", ".join(get_type_hints(schema))
            return f"{where}: {key}: unknown config key; keys allowed under '{key.rpartition('.')[0]}': {allowed}"
        return f"{where}: {lines[1]}"
    return lines[0]
