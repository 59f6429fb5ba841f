"""Typed experiment configuration: the schema behind `conf/`, composition, and up-front validation.

Each dataclass below is the schema of one config group in `conf/` (model, dataset, prune, train). Hydra merges
the YAML files into these structured configs, so an unknown key or a value of the wrong type fails during
composition; `validate` then checks ranges and choices. Both happen before a run directory is created.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from lth.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped inside the package, so a wheel install finds it
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "sgd")
SCOPES = ("layerwise", "global")
GROUPS = ("model", "dataset", "prune", "train")
CRITERIA = ("magnitude", "magnitude_increase", "random", "snip", "grasp", "synflow")
SCHEDULES = ("iterative", "oneshot")
DISTRIBUTIONS = ("uniform", "global", "erk")
CONTROLS = ("none", "shuffle_layer", "invert", "signed_constant")
RETRAIN = ("rewind", "lr_rewind", "finetune", "reinit")
LR_SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("32", "bf16", "fp16")
LOGGERS = ("none", "tensorboard")
DURATION = re.compile(r"(?P<count>\d+)(?P<unit>it|ep)?")  # training time: `500it` steps, `2ep` epochs, `0`
# Keys that may change when a run is resumed: they do not change any result (batched replicates equal runs
# alone, to float rounding).
RESUMABLE_KEYS = ("prune.rounds", "ui.", "checkpoint.", "logger", "train.replicates")


@dataclass
class ModelConfig:
    name: str = MISSING  # key in lth's model registry (lth/models), or a torchvision constructor (source=torchvision)
    source: str = "lth"  # lth | torchvision (any torchvision.models classification constructor, weights=None)
    width: int | None = None  # channels of the first stage (ResNets); unset: the model's published width
    # The dataset, train and prune choices this model's paper used; `lth run model=X` picks those the command
    # line leaves open (see `with_recipe`).
    recipe: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    name: str = MISSING  # key in the dataset registry (lth/data)
    root: str | None = None  # folder holding the files; unset: $LTH_DATA, then /usr/share/datasets/<name>
    download: bool = False  # let torchvision download the files into root when they are missing
    val_size: int = 5000  # training examples held out (per seed) for early stopping; 0 disables
    subset: int | None = None  # train on a stratified, seed-fixed subset of N training examples; unset: all


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    like: str | None = None  # take the input shape and class count of a real dataset (cifar10, mnist, ...)
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    train_size: int = 2000
    test_size: int = 500


@dataclass
class ImageFolderDatasetConfig(DatasetConfig):
    image_size: int = 64  # every image is resized (shorter side) and centre-cropped to image_size x image_size


# Datasets whose config has keys beyond DatasetConfig's; their YAML files start from these schemas too.
DATASET_SCHEMAS: dict[str, type[DatasetConfig]] = {
    "synthetic": SyntheticDatasetConfig,
    "imagefolder": ImageFolderDatasetConfig,
}


@dataclass
class PruneConfig:
    rate: float = 0.2  # fraction of surviving prunable weights removed per round
    output_rate: float | None = None  # rate for the output layer; unset: half of `rate`
    conv_rate: float | None = None  # rate for conv layers (Conv-2/4/6 prune them slower); unset: `rate`
    rounds: int = 18  # pruning rounds after the dense round 0
    schedule: str = "iterative"  # iterative: prune the last round's survivors | oneshot: prune the dense network
    target_density: float | None = None  # oneshot: the density of round 1; unset: (1 - rate)^r in round r
    scope: str = "layerwise"  # layerwise: each layer at its rate; global: all hidden layers ranked together
    distribution: str | None = None  # how a density is spread: uniform | global | erk; unset: from `scope`
    min_layer_density: float | None = None  # floor for layers ranked together; unset: 1 weight per unit; 0: none
    ignore: list[str] = field(default_factory=list)  # glob patterns of prunable weights never pruned
    criterion: str = "magnitude"  # magnitude (the ticket) | magnitude_increase | random | snip | grasp | synflow
    score_examples_per_class: int = 10  # snip and grasp: training examples per class they score on
    synflow_iterations: int = 100  # synflow: prune-and-rescore steps per round (Tanaka et al. 2020)
    retrain: str = "rewind"  # rewind to θk | lr_rewind (Renda et al.) | finetune the trained weights | reinit
    rewind_to: str = "0"  # the rewind point θk: `0` (initialisation), `500it` (step 500), `2ep` (after 2 epochs)
    control: str = "none"  # Zhou et al. 2019: shuffle_layer | invert (keep the lowest scores) | signed_constant
    masks_from: str | None = None  # a run directory whose masks this run trains with (controls, transfer)
    masks_round: int | None = None  # with masks_from: use this round's mask in every pruned round


@dataclass
class TrainConfig:
    optimizer: str = "adam"
    lr: float = 1.2e-3
    lr_schedule: str = "constant"  # constant | step (x gamma at each milestone) | cosine (to 0 at the end)
    milestones: list[str] = field(default_factory=list)  # step schedule: when to decay, e.g. [80ep, 120ep]
    gamma: float = 0.1  # step schedule: factor applied at each milestone
    warmup: str = "0"  # linear warm-up from 0 to lr over this long (`500it`, `1ep`); `0`: none
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    batch_size: int = 60
    epochs: int = 2
    eval_every: int = 0  # steps between evaluations on the validation and test sets; 0: once per epoch
    precision: str = "32"  # 32 | bf16 | fp16 (autocast; fp16 with loss scaling)
    compile: bool = False  # torch.compile the forward pass (falls back to eager, with a warning, if it fails)
    channels_last: bool = False  # NHWC memory format for conv nets (faster convolutions on GPUs)
    # train seeds seed..seed+N-1 together in one process, each in its own run directory <run dir>/seed_<s>, with
    # the results of runs alone (lth.replicates); many small runs share the device instead of queueing for it
    replicates: int = 1


@dataclass
class CheckpointConfig:
    every: str = "1ep"  # in-progress training state saved every N steps (`500it`) or epochs (`1ep`); `0`: never
    keep: int = 2  # newest in-progress states kept per round (older ones deleted)


@dataclass
class UIConfig:
    progress: bool = True  # live progress bars; false for scripts and CI


@dataclass
class Config:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    prune: PruneConfig = MISSING
    train: TrainConfig = MISSING
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    logger: str = "none"  # none | tensorboard (event files in <run>/tensorboard/); metrics.jsonl is always written


def register_configs() -> None:
    """Put the schemas where the YAML files in `conf/` find them (`defaults: [base_config, ...]`)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="model", name="base_model", node=ModelConfig)
    store.store(group="dataset", name="base_dataset", node=DatasetConfig)
    store.store(group="dataset", name="base_synthetic", node=SyntheticDatasetConfig)
    store.store(group="dataset", name="base_imagefolder", node=ImageFolderDatasetConfig)
    store.store(group="prune", name="base_prune", node=PruneConfig)
    store.store(group="train", name="base_train", node=TrainConfig)


register_configs()


def group_options(group: str) -> list[str]:
    """The choices a user can write for a config group, e.g. `model=<option>`."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def compose(overrides: Sequence[str]) -> Config:
    """Compose `conf/config.yaml` with command-line overrides into a validated Config."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain(error)) from None
    return from_dictconfig(composed)


def recipe_overrides(overrides: Sequence[str]) -> list[str]:
    """The group choices of the chosen model's recipe (`recipe:` in conf/model/<name>.yaml) that the command
    line leaves open, to be put in front of its overrides.

    So `lth run model=vgg16` trains on CIFAR-10 with the paper's schedule and pruning, while
    `lth run model=vgg16 dataset=synthetic` keeps the recipe's training and pruning only.
    """
    chosen = {o.partition("=")[0].lstrip("+~"): o.partition("=")[2] for o in overrides if "=" in o}
    models = [m.strip() for m in chosen.get("model", "").split(",") if m.strip()]
    recipes = {json.dumps(_recipe(model), sort_keys=True) for model in models}
    if len(recipes) > 1:
        raise ConfigError(
            f"model={chosen['model']}: these models have different recipes (conf/model/*.yaml); "
            f"choose {', '.join(g for g in GROUPS if g != 'model')} on the command line for such a sweep"
        )
    recipe = json.loads(recipes.pop()) if recipes else {}
    return [f"{group}={recipe[group]}" for group in GROUPS if group in recipe and group not in chosen]


def _recipe(model: str) -> dict[str, str]:
    path = CONF_DIR / "model" / f"{model}.yaml"
    if not path.is_file():
        return {}  # an unknown model is reported by composition, with the list of models
    return dict(yaml.safe_load(path.read_text()).get("recipe") or {})


def from_dictconfig(composed: DictConfig) -> Config:
    """Turn a composed (or saved) config into the typed Config and validate it."""
    schema = OmegaConf.structured(Config)
    dataset_name = OmegaConf.select(composed, "dataset.name", default=None)
    schema.dataset = OmegaConf.structured(DATASET_SCHEMAS.get(dataset_name, DatasetConfig))
    try:
        merged = OmegaConf.merge(schema, composed)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(_explain(error)) from None
    assert isinstance(cfg, Config)
    validate(cfg)
    return cfg


def to_container(cfg: Config) -> dict[str, Any]:
    """Plain data (for run.json, the authoritative record of a run's config)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg))
    assert isinstance(container, dict)
    return container


def from_container(data: Any, source: Path) -> Config:
    """A validated Config from plain data read from `source` (a run's run.json)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} holds no readable config")
    return from_dictconfig(OmegaConf.create(data))


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
        raise ConfigError(_explain(error)) from None
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
    return flat


def decides_results(key: str) -> bool:
    """Whether a dotted config key can change a run's results (RESUMABLE_KEYS cannot)."""
    return not key.startswith(RESUMABLE_KEYS)


def config_hash(cfg: Config) -> str:
    """A fingerprint of everything that determines a run's results."""
    decisive = {k: v for k, v in flatten(cfg).items() if decides_results(k)}
    return hashlib.sha256(repr(sorted(decisive.items())).encode()).hexdigest()[:16]


def changed_keys(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs, with (old, new)."""
    before, after = flatten(old), flatten(new)
    return {
        k: (before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)
    }


@dataclass
class SweepGrid:
    """The jobs of a `-m` sweep, numbered as Hydra's basic sweeper numbers them (job i runs `jobs[i]`)."""

    swept: dict[str, list[str]]  # each swept key and its values, in the order Hydra varies them
    base: list[str]  # the overrides every job shares
    jobs: list[list[str]]  # each job's overrides


def sweep_grid(overrides: Sequence[str], params: dict[str, Any] | None = None) -> SweepGrid:
    """The grid Hydra's basic sweeper runs for command-line `overrides` and `hydra.sweeper.params` (a preset's
    sweep): params first, then the command line, a key given twice keeping its first place and its last value;
    the jobs are the cartesian product in that order."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
        choices: dict[str, list[str]] = {}
        for override in parsed:
            key = override.get_key_element()
            if override.is_sweep_override():
                choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                choices[key] = [override.input_line]
    except HydraException as error:
        raise ConfigError(
            f"cannot check the sweep {' '.join(lines)} up front: {_explain(error)} "
            "(lth expands value lists and range(); glob() and interval() need a sweeper plugin)"
        ) from None
    swept = {key: [c.partition("=")[2] for c in values] for key, values in choices.items() if len(values) > 1}
    base = [values[0] for key, values in choices.items() if len(values) == 1]
    return SweepGrid(swept, base, [list(job) for job in itertools.product(*choices.values())])


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of each job of `lth run -m OVERRIDES`, sweeps defined by a preset's
    `hydra.sweeper.params` included (Hydra reads them from the config composed without the swept overrides)."""
    grid = sweep_grid(overrides)
    return sweep_grid(overrides, sweeper_params(grid.base)).jobs


def sweeper_params(overrides: Sequence[str]) -> dict[str, Any]:
    """`hydra.sweeper.params` of the config composed with `overrides` (what an experiment preset sweeps)."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            composed = hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain(error)) from None
    params = composed.hydra.sweeper.get("params")
    return dict(OmegaConf.to_container(params)) if params else {}


def _validate_replicates(train: TrainConfig) -> None:
    """Batched replicates must equal runs alone (lth.replicates): nothing may couple or re-draw them."""
    _require(train.replicates >= 1, "train.replicates", train.replicates, "an integer >= 1")
    if train.replicates == 1:
        return
    batched = f"with train.replicates={train.replicates}"
    _require(
        train.precision != "fp16",
        "train.precision",
        train.precision,
        f"32 or bf16 {batched} (one fp16 loss scale would skip every replicate's step together)",
    )
    _require(not train.compile, "train.compile", train.compile, f"false {batched}")
    _require(not train.channels_last, "train.channels_last", train.channels_last, f"false {batched}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    _require(world == 1, "train.replicates", train.replicates, f"1 under torchrun (WORLD_SIZE={world})")


def validate(cfg: Config) -> None:
    """Check ranges and choices; raise ConfigError naming the key and what is allowed."""
    from lth import data, models  # registries import torch; keep `lth --help` light

    _require(0 <= cfg.seed < 2**63, "seed", cfg.seed, "an integer with 0 <= seed < 2**63")
    models.check_name(cfg.model)
    _require_choice("dataset.name", cfg.dataset.name, data.names())
    _require_choice("logger", cfg.logger, LOGGERS)
    if cfg.logger == "tensorboard":
        import importlib.util

        installed = importlib.util.find_spec("tensorboard") is not None
        _require(
            installed,
            "logger",
            cfg.logger,
            "none unless the tensorboard package is installed (pip install tensorboard)",
        )
    device_ok = cfg.device in DEVICES or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit())
    _require(device_ok, "device", cfg.device, "auto, cpu, cuda or cuda:N")
    _require(0 <= cfg.prune.rate < 1, "prune.rate", cfg.prune.rate, "a fraction with 0 <= rate < 1")
    if cfg.prune.output_rate is not None:
        rate = cfg.prune.output_rate
        _require(0 <= rate < 1, "prune.output_rate", rate, "a fraction with 0 <= rate < 1, or null")
    _require(cfg.prune.rounds >= 0, "prune.rounds", cfg.prune.rounds, "an integer >= 0")
    _require_choice("prune.scope", cfg.prune.scope, SCOPES)
    _require_choice("prune.criterion", cfg.prune.criterion, CRITERIA)
    _require_choice("prune.retrain", cfg.prune.retrain, RETRAIN)
    _validate_pruning_plan(cfg.prune)
    rewind = DURATION.fullmatch(cfg.prune.rewind_to)
    _require(
        rewind is not None, "prune.rewind_to", cfg.prune.rewind_to, "a step or epoch count such as 0, 500it or 2ep"
    )
    if rewind is not None and rewind["unit"] == "ep":  # a step count is checked once the data size is known
        before_end = int(rewind["count"]) < cfg.train.epochs
        _require(
            before_end,
            "prune.rewind_to",
            cfg.prune.rewind_to,
            f"before the end of round 0 (train.epochs={cfg.train.epochs})",
        )
    _require_choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    _require(cfg.train.lr > 0, "train.lr", cfg.train.lr, "a number > 0")
    _require_choice("train.lr_schedule", cfg.train.lr_schedule, LR_SCHEDULES)
    for key, duration in [("train.warmup", cfg.train.warmup)] + [("train.milestones", m) for m in cfg.train.milestones]:
        ok = DURATION.fullmatch(duration) is not None  # one past the end of training never applies, harmlessly
        _require(ok, key, duration, "a number of steps or epochs such as 500it or 80ep")
    _require(cfg.train.gamma > 0, "train.gamma", cfg.train.gamma, "a number > 0")
    milestones_used = not cfg.train.milestones or cfg.train.lr_schedule == "step"
    _require(milestones_used, "train.milestones", cfg.train.milestones, "empty unless train.lr_schedule=step")
    _require(cfg.train.momentum >= 0, "train.momentum", cfg.train.momentum, "a number >= 0")
    _require(cfg.train.weight_decay >= 0, "train.weight_decay", cfg.train.weight_decay, "a number >= 0")
    _require(cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size, "an integer >= 1")
    _require(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "an integer >= 1")
    _require_choice("train.precision", str(cfg.train.precision), PRECISIONS)
    _require(cfg.train.eval_every >= 0, "train.eval_every", cfg.train.eval_every, "an integer >= 0")
    _validate_replicates(cfg.train)
    _require(
        DURATION.fullmatch(cfg.checkpoint.every) is not None,
        "checkpoint.every",
        cfg.checkpoint.every,
        "a number of steps or epochs such as 500it or 1ep (0: never)",
    )
    _require(cfg.checkpoint.keep >= 1, "checkpoint.keep", cfg.checkpoint.keep, "an integer >= 1")
    _require(cfg.dataset.val_size >= 0, "dataset.val_size", cfg.dataset.val_size, "an integer >= 0")
    subset = cfg.dataset.subset
    _require(subset is None or subset >= 1, "dataset.subset", subset, "an integer >= 1, or null (all)")
    if isinstance(cfg.dataset, ImageFolderDatasetConfig):
        _require(cfg.dataset.image_size >= 8, "dataset.image_size", cfg.dataset.image_size, "an integer >= 8")
    if isinstance(cfg.dataset, SyntheticDatasetConfig):
        synthetic = cfg.dataset
        if synthetic.like is not None:
            _require_choice("dataset.like", synthetic.like, sorted(data.synthetic.LIKE))
        shape_ok = len(synthetic.input_shape) >= 1 and all(d >= 1 for d in synthetic.input_shape)
        _require(shape_ok, "dataset.input_shape", synthetic.input_shape, "a list of positive sizes")
        _require(synthetic.num_classes >= 2, "dataset.num_classes", synthetic.num_classes, "an integer >= 2")
        train_ok = synthetic.train_size > synthetic.val_size
        _require(train_ok, "dataset.train_size", synthetic.train_size, "an integer > dataset.val_size")
        _require(synthetic.test_size >= 1, "dataset.test_size", synthetic.test_size, "an integer >= 1")


def _validate_pruning_plan(prune: PruneConfig) -> None:
    if prune.conv_rate is not None:
        _require(0 <= prune.conv_rate < 1, "prune.conv_rate", prune.conv_rate, "a fraction with 0 <= rate < 1, or null")
    _require_choice("prune.schedule", prune.schedule, SCHEDULES)
    oneshot = prune.schedule == "oneshot"
    if prune.target_density is not None:
        target = prune.target_density
        _require(0 < target <= 1, "prune.target_density", target, "a density with 0 < density <= 1, or null")
        _require(oneshot, "prune.target_density", target, "null unless prune.schedule=oneshot")
        curve = "1 when prune.target_density is set (prune.target_density=null traces the one-shot curve over rounds)"
        _require(prune.rounds == 1, "prune.rounds", prune.rounds, curve)
    if oneshot:
        for key in ("output_rate", "conv_rate"):
            value = getattr(prune, key)
            _require(value is None, f"prune.{key}", value, "null with prune.schedule=oneshot (one density for all)")
    if prune.distribution is not None:
        _require_choice("prune.distribution", prune.distribution, DISTRIBUTIONS)
        consistent = prune.scope != "global" or prune.distribution == "global"
        _require(consistent, "prune.distribution", prune.distribution, "global or null with prune.scope=global")
    if prune.min_layer_density is not None:
        floor = prune.min_layer_density
        _require(0 <= floor <= 1, "prune.min_layer_density", floor, "a fraction in [0, 1], or null")
    _require_choice("prune.control", prune.control, CONTROLS)
    positive = [
        ("score_examples_per_class", prune.score_examples_per_class),
        ("synflow_iterations", prune.synflow_iterations),
    ]
    for key, value in positive:
        _require(value >= 1, f"prune.{key}", value, "an integer >= 1")
    if prune.masks_from is None:
        _require(
            prune.masks_round is None, "prune.masks_round", prune.masks_round, "null unless prune.masks_from is set"
        )
        return
    copied = "magnitude (a mask taken from prune.masks_from is not scored)"
    _require(prune.criterion == "magnitude", "prune.criterion", prune.criterion, copied)
    _require(prune.control != "invert", "prune.control", prune.control, "not invert with prune.masks_from (no scores)")
    _require(not oneshot, "prune.schedule", prune.schedule, "iterative with prune.masks_from")
    if prune.masks_round is not None:
        _require(prune.masks_round >= 0, "prune.masks_round", prune.masks_round, "an integer >= 0, or null")


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value} is not allowed; {key} must be {allowed}")


def _require_choice(key: str, value: str, options: Sequence[str]) -> None:
    _require(value in options, key, value, "one of: " + ", ".join(options))


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
        return f"{key}: {str(cause.msg).splitlines()[0]}"
    return str(error).strip().splitlines()[0]
