"""Composition: `conf/` and command-line overrides, composed by Hydra onto the schema (`lth.schema`), into a
checked Config (`lth.structured`); the jobs of a sweep as Hydra's basic sweeper splits them.

Each dataclass of `lth.schema` is the schema of one config group in `conf/` (model, dataset, prune, train).
Hydra merges the YAML files into these structured configs, so an unknown key or a value of the wrong type fails
during composition; the schema's own checks and `lth.structured.validate` then check ranges and choices. Both
happen before a run directory is created. The schema and the typed-config functions are re-exported here for
the callers that compose (the CLI, tests); the read side imports `lth.structured`, which needs no Hydra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lth.dataset_schemas import (  # noqa: F401  (re-exported)
    DATASET_SCHEMAS,
    ImageFolderDatasetConfig,
    SyntheticDatasetConfig,
    TextDatasetConfig,
)
from lth.errors import ConfigError
from lth.model_schemas import GPTModelConfig, LSTMModelConfig, ViTModelConfig
from lth.schema import (  # noqa: F401  (re-exported: `from lth.config import PruneConfig` and the like)
    CONTROLS,
    CRITERIA,
    DEVICES,
    DISTRIBUTIONS,
    DURATION,
    GROUPS,
    LOGGERS,
    LR_SCHEDULES,
    OPTIMIZERS,
    PRECISIONS,
    RESUMABLE_KEYS,
    RETRAIN,
    SCHEDULES,
    SCOPES,
    CheckpointConfig,
    Config,
    DatasetConfig,
    ModelConfig,
    PruneConfig,
    TrainConfig,
    UIConfig,
)
from lth.structured import (  # noqa: F401  (re-exported)
    changed_keys,
    config_hash,
    decides_results,
    decides_shapes,
    explain,
    flatten,
    from_container,
    from_dictconfig,
    to_container,
    validate,
    with_overrides,
)

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package, so a wheel install finds it


def register_configs() -> None:
    """Put the schemas where the YAML files in `conf/` find them (`defaults: [base_config, ...]`)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="model", name="base_model", node=ModelConfig)
    store.store(group="model", name="base_vit", node=ViTModelConfig)
    store.store(group="model", name="base_gpt", node=GPTModelConfig)
    store.store(group="model", name="base_lstm", node=LSTMModelConfig)
    store.store(group="dataset", name="base_dataset", node=DatasetConfig)
    store.store(group="dataset", name="base_synthetic", node=SyntheticDatasetConfig)
    store.store(group="dataset", name="base_imagefolder", node=ImageFolderDatasetConfig)
    store.store(group="dataset", name="base_text", node=TextDatasetConfig)
    store.store(group="prune", name="base_prune", node=PruneConfig)
    store.store(group="train", name="base_train", node=TrainConfig)


register_configs()


def group_options(group: str) -> list[str]:
    """The choices a user can write for a config group, e.g. `model=<option>`."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def user_groups() -> list[str]:
    """The config groups a user chooses from (`conf/<group>/`; Hydra's own settings aside)."""
    return sorted(path.name for path in CONF_DIR.iterdir() if path.is_dir() and path.name != "hydra")


def run_help(overrides: Sequence[str]) -> str:
    """`lth run --help`: the groups with their options and the config `overrides` compose (Hydra's own help
    would offer the schemas stored for the YAML files, base_model and the like, as options too)."""
    composed = _composed(overrides)
    groups = "\n".join(f"{group}: {', '.join(group_options(group))}" for group in user_groups())
    return (
        "lth run [OVERRIDES]: an IMP experiment; with -m a sweep, one job per value (seed=0,1,2)\n\n"
        "== Configuration groups ==\nChoose one option per group (group=option; +group=option for those not in "
        f"the defaults: controls, debug, experiment)\n\n{groups}\n\n"
        "== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
        f"{OmegaConf.to_yaml(composed)}\n"
        "Hydra's own flags (--cfg job, --info, -m, --config-name): lth run --hydra-help"
    )


def compose(overrides: Sequence[str]) -> Config:
    """Compose `conf/config.yaml` with command-line overrides into a validated Config."""
    return from_dictconfig(_composed(overrides))


def _composed(overrides: Sequence[str], with_hydra: bool = False) -> DictConfig:
    """Hydra's composition of `conf/config.yaml` with `overrides` (and Hydra's own node when `with_hydra`); its
    errors as one line."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain(error)) from None


def recipe_overrides(overrides: Sequence[str]) -> list[str]:
    """The group choices of the chosen model's recipe (`recipe:` in conf/model/<name>.yaml) that the command
    line leaves open, to be put in front of its overrides.

    So `lth run model=vgg16` trains on CIFAR-10 with the paper's schedule and pruning, while
    `lth run model=vgg16 dataset=synthetic` keeps the recipe's training and pruning only. A preset's own group
    choices (`override /dataset: synthetic` in `+debug=fast`) count as the command line's.
    """
    chosen = {o.partition("=")[0].lstrip("+~"): o.partition("=")[2] for o in overrides if "=" in o}
    for override in overrides:
        if override.startswith("+") and "=" in override:
            chosen = {**_preset_choices(*override[1:].split("=", 1)), **chosen}
    models = [m.strip() for m in chosen.get("model", "").split(",") if m.strip()]
    recipes = {json.dumps(_recipe(model), sort_keys=True) for model in models}
    if len(recipes) > 1:
        raise ConfigError(
            f"model={chosen['model']}: these models have different recipes (conf/model/*.yaml); "
            f"choose {', '.join(g for g in GROUPS if g != 'model')} on the command line for such a sweep"
        )
    recipe = json.loads(recipes.pop()) if recipes else {}
    return [f"{group}={recipe[group]}" for group in GROUPS if group in recipe and group not in chosen]


def _preset_choices(group: str, option: str) -> dict[str, str]:
    """The config groups a preset (`conf/<group>/<option>.yaml`) chooses in its defaults list."""
    path = CONF_DIR / group / f"{option}.yaml"
    if "," in option or not path.is_file():
        return {}
    defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
    choices = {}
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                name = str(key).removeprefix("override ").strip().lstrip("/")
                if name in GROUPS:
                    choices[name] = str(value)
    return choices


def _recipe(model: str) -> dict[str, str]:
    path = CONF_DIR / "model" / f"{model}.yaml"
    if not path.is_file():
        return {}  # an unknown model is reported by composition, with the list of models
    return dict(yaml.safe_load(path.read_text()).get("recipe") or {})


@dataclass
class SweepGrid:
    """The jobs of a `-m` sweep, numbered as Hydra's basic sweeper numbers them (job i runs `jobs[i]`)."""

    swept: dict[str, list[str]]  # each swept key and its values, in the order Hydra varies them
    base: list[str]  # the overrides every job shares
    jobs: list[list[str]]  # each job's overrides


def sweep_grid(overrides: Sequence[str], params: dict[str, Any] | None = None) -> SweepGrid:
    """The grid Hydra's basic sweeper runs for command-line `overrides` and `hydra.sweeper.params` (a preset's
    sweep): params first, then the command line, split by the sweeper itself (`BasicSweeper.split_arguments`:
    a key given twice keeps its first place and its last value; the jobs are the cartesian product)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
        jobs = BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]
    except HydraException as error:
        raise ConfigError(
            f"cannot check the sweep {' '.join(lines)} up front: {_explain(error)} "
            "(lth expands value lists and range(); glob() and interval() need a sweeper plugin)"
        ) from None
    columns = [list(dict.fromkeys(job[i] for job in jobs)) for i in range(len(jobs[0]))] if jobs else []
    swept = {c[0].partition("=")[0]: [v.partition("=")[2] for v in c] for c in columns if len(c) > 1}
    base = [c[0] for c in columns if len(c) == 1]
    return SweepGrid(swept, base, [list(job) for job in jobs])


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of each job of `lth run -m OVERRIDES`, sweeps defined by a preset's
    `hydra.sweeper.params` included (Hydra reads them from the config composed without the swept overrides)."""
    grid = sweep_grid(overrides)
    return sweep_grid(overrides, sweeper_params(grid.base)).jobs


def sweeper_params(overrides: Sequence[str]) -> dict[str, Any]:
    """`hydra.sweeper.params` of the config composed with `overrides` (what an experiment preset sweeps)."""
    composed = _composed(overrides, with_hydra=True)
    params = composed.hydra.sweeper.get("params")
    return dict(OmegaConf.to_container(params)) if params else {}


def _explain(error: Exception) -> str:
    """One line that names the key and what is allowed, from Hydra's and OmegaConf's multi-line errors."""
    if isinstance(error, OverrideParseException):
        reason = str(error).splitlines()[0]
        return f"cannot parse override {error.override!r}: {reason} (Hydra's override grammar: key=value)"
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        if group:
            options = ", ".join(group_options(group))
            return f"{group}={option}: no such {group}; choose one of: {options}"
    return explain(error)
