"""The config schema: one dataclass per config group in `conf/` (model, dataset, prune, train, ...), each key with
its meaning, its default and its check beside it.

A leaf module: the standard library and lth's exception types only (no Hydra, no OmegaConf, no torch), so every
module can import it and none pulls Hydra in through it. Each group checks its own keys in `__post_init__` (run
when OmegaConf turns a composed config into these classes, and when code builds one); `Config.__post_init__`
checks the rules that tie keys of several groups, or several keys, together. Names that only a registry knows
(models, datasets) are checked by `lth.structured.validate`. Every refusal is `refuse`'s one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lth.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "adamw", "sgd")  # adamw: decoupled weight decay (Loshchilov & Hutter 2019)
SCOPES = ("layerwise", "global")
GROUPS = ("model", "dataset", "prune", "train")
# Choices with a registry in code; tests keep each tuple equal to its registry's names.
CRITERIA = ("magnitude", "magnitude_increase", "random", "snip", "grasp", "synflow")  # lth.criteria.CRITERIA
SCHEDULES = ("iterative", "oneshot", "static", "set", "rigl")  # lth.prune.SCHEDULES
# Sparse from the start (lth.dst): one sparse round at `prune.target_density`; set and rigl change its mask as it trains
SPARSE_FROM_START = ("static", "set", "rigl")
DROP_SCHEDULES = ("cosine", "constant", "linear")  # how SET's and RigL's drop fraction anneals (lth.dst)
CONTROLS = ("none", "shuffle_layer", "invert", "signed_constant")  # lth.controls.CONTROLS
RETRAIN = ("rewind", "lr_rewind", "finetune", "reinit")  # lth.retrain.RULES
DISTRIBUTIONS = ("uniform", "global", "erk")
STRUCTURES = ("weight", "neuron", "channel", "head", "nm")  # lth.structures.STRUCTURES
LR_SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("32", "bf16", "fp16")
LOGGERS = ("none", "tensorboard", "mlflow", "wandb")  # lth.trackers.TRACKERS (but none)
DURATION = re.compile(r"(?P<count>\d+)(?P<unit>it|ep)?")  # training time: `500it` steps, `2ep` epochs, `0`
# Keys that may change when a run is resumed: they do not change any result (batched replicates equal runs
# alone, to float rounding; a streamed image tree gives the batches it gives in memory).
RESUMABLE_KEYS = ("prune.rounds", "ui.", "checkpoint.", "logger", "train.replicates", "dataset.stream",
                  "dataset.workers")  # fmt: skip
# Keys that decide the shapes of a run's saved tensors (the model, the data's input and classes): a resume cannot
# change them even with --force, since no saved weight, mask or state would fit.
SHAPE_KEYS = ("model.", "dataset.name", "dataset.like", "dataset.input_shape", "dataset.num_classes", "dataset.vocab")
# OmegaConf's marker for a value the YAML must give; as a dataclass default it reads as this string.
REQUIRED: Any = "???"


class Choice(str, Enum):
    """One of a fixed set of strings: OmegaConf rejects any other value while merging (by member name, which is
    the value); a member compares, hashes, formats and serialises as its string."""

    __str__ = str.__str__
    __format__ = str.__format__


def choices(name: str, options: Sequence[str]) -> Any:
    return Choice(name, [(option, option) for option in options])


Scope = choices("Scope", SCOPES)
Criterion = choices("Criterion", CRITERIA)
Schedule = choices("Schedule", SCHEDULES)
Control = choices("Control", CONTROLS)
Retrain = choices("Retrain", RETRAIN)
Distribution = choices("Distribution", DISTRIBUTIONS)
Structure = choices("Structure", STRUCTURES)
Optimizer = choices("Optimizer", OPTIMIZERS)
LRSchedule = choices("LRSchedule", LR_SCHEDULES)
Logger = choices("Logger", LOGGERS)
DropSchedule = choices("DropSchedule", DROP_SCHEDULES)


def refuse(key: str, value: Any, allowed: str) -> None:
    """The one-line refusal every check uses: names the key, the value and what is allowed."""
    raise ConfigError(f"{key}={value} is not allowed; {key} must be {allowed}")


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        refuse(key, value, allowed)


def require_choice(key: str, value: str, options: Sequence[str]) -> None:
    require(value in options, key, value, "one of: " + ", ".join(options))


def choice(key: str, value: Any, kind: Any) -> Any:
    """`value` as a member of the Choice `kind` (a dataclass built in code may hold the plain string)."""
    require_choice(key, value, [member.value for member in kind])
    return kind(value)


def require_duration(key: str, value: str, allowed: str) -> re.Match[str] | None:
    match = DURATION.fullmatch(value)
    require(match is not None, key, value, allowed)
    return match


@dataclass
class ModelConfig:
    name: str = REQUIRED  # key in lth's model registry (lth/models), or a torchvision constructor (source=torchvision)
    source: str = "lth"  # lth | torchvision (any torchvision.models classification constructor, weights=None)
    width: int | None = None  # channels of the first stage (ResNets); unset: the model's published width
    # The dataset, train and prune choices this model's paper used; `lth run model=X` picks those the command
    # line leaves open (see `lth.config.recipe_overrides`).
    recipe: dict[str, str] = field(default_factory=dict)
    # name, source and width are checked against the registry (lth.models.check_name), which knows the names


@dataclass
class DatasetConfig:
    name: str = REQUIRED  # key in the dataset registry (lth/data)
    root: str | None = None  # folder holding the files; unset: $LTH_DATA, then /usr/share/datasets/<name>
    download: bool = False  # let torchvision download the files into root when they are missing
    val_size: int = 5000  # training examples held out (per seed) for early stopping; 0 disables
    subset: int | None = None  # train on a stratified, seed-fixed subset of N training examples; unset: all

    def __post_init__(self) -> None:
        require(self.val_size >= 0, "dataset.val_size", self.val_size, "an integer >= 0")
        subset = self.subset
        require(subset is None or subset >= 1, "dataset.subset", subset, "an integer >= 1, or null (all)")


@dataclass
class PruneConfig:
    rate: float = 0.2  # fraction of surviving prunable weights removed per round
    output_rate: float | None = None  # rate for the output layer; unset: half of `rate`
    conv_rate: float | None = None  # rate for conv layers (Conv-2/4/6 prune them slower); unset: `rate`
    rounds: int = 18  # pruning rounds after the dense round 0
    # iterative: prune the last round's survivors | oneshot: prune the dense network
    schedule: Schedule = Schedule["iterative"]
    target_density: float | None = None  # oneshot: the density of round 1; unset: (1 - rate)^r in round r
    scope: Scope = Scope["layerwise"]  # layerwise: each layer at its rate; global: all hidden layers ranked together
    distribution: Distribution | None = None  # how a density is spread: uniform | global | erk; unset: from `scope`
    min_layer_density: float | None = None  # floor for layers ranked together; unset: 1 weight per unit; 0: none
    ignore: list[str] = field(default_factory=list)  # glob patterns of prunable weights never pruned
    # what is pruned: weight | neuron (linear output rows) | channel (conv filters) | head (attention heads) |
    # nm (at most N of every M consecutive input weights, `nm`); lth.structures
    structure: Structure = Structure["weight"]
    nm: list[int] = field(default_factory=lambda: [2, 4])  # structure=nm: [N, M]
    # magnitude (the ticket) | magnitude_increase | random | snip | grasp | synflow
    criterion: Criterion = Criterion["magnitude"]
    score_examples_per_class: int = 10  # snip and grasp: training examples per class they score on
    synflow_iterations: int = 100  # synflow: prune-and-rescore steps per round (Tanaka et al. 2020)
    # rewind to θk | lr_rewind (Renda et al.) | finetune the trained weights | reinit
    retrain: Retrain = Retrain["rewind"]
    rewind_to: str = "0"  # the rewind point θk: `0` (initialisation), `500it` (step 500), `2ep` (after 2 epochs)
    # Zhou et al. 2019: shuffle_layer | invert (keep the lowest scores) | signed_constant
    control: Control = Control["none"]
    masks_from: str | None = None  # a run directory whose masks this run trains with (controls, transfer)
    masks_round: int | None = None  # with masks_from: use this round's mask in every pruned round
    # a run whose round 0 this run takes instead of training it again (same round-0 config and θ0, checked);
    # automatic for prune.masks_from when its round 0 was trained the same way (a control's round 0 is the ticket's)
    round0_from: str | None = None
    # Dynamic sparse training (schedule set | rigl; Mocanu et al. 2018, Evci et al. 2020; defaults RigL's):
    update_every: int = 100  # steps between mask updates (RigL's ΔT)
    drop_fraction: float = 0.3  # fraction of each layer's survivors dropped (and regrown) at the first update
    drop_schedule: DropSchedule = DropSchedule["cosine"]  # cosine | constant | linear anneal to update_until
    update_until: float = 0.75  # fraction of the round's training after which the mask stays fixed (RigL: 0.75)
    # Early-bird tickets (You et al. 2020): round 0 stops once the magnitude mask the next round would take
    # has settled: the largest normalised Hamming distance between consecutive evaluations' masks over the last
    # `early_ticket_window` evaluations below `early_ticket_epsilon` (measured default, see README)
    early_ticket: bool = False
    early_ticket_window: int = 5
    early_ticket_epsilon: float = 0.1

    def __post_init__(self) -> None:
        require(0 <= self.rate < 1, "prune.rate", self.rate, "a fraction with 0 <= rate < 1")
        if self.output_rate is not None:
            rate = self.output_rate
            require(0 <= rate < 1, "prune.output_rate", rate, "a fraction with 0 <= rate < 1, or null")
        require(self.rounds >= 0, "prune.rounds", self.rounds, "an integer >= 0")
        self.scope = choice("prune.scope", self.scope, Scope)
        self.criterion = choice("prune.criterion", self.criterion, Criterion)
        self.retrain = choice("prune.retrain", self.retrain, Retrain)
        self._check_plan()
        self._check_structure()
        require_duration("prune.rewind_to", self.rewind_to, "a step or epoch count such as 0, 500it or 2ep")
        self._check_masks_from()
        self._check_sparse_training()

    def _check_plan(self) -> None:
        if self.conv_rate is not None:
            rate = self.conv_rate
            require(0 <= rate < 1, "prune.conv_rate", rate, "a fraction with 0 <= rate < 1, or null")
        self.schedule = choice("prune.schedule", self.schedule, Schedule)
        oneshot = self.schedule == "oneshot"
        if self.target_density is not None:
            target = self.target_density
            require(0 < target <= 1, "prune.target_density", target, "a density with 0 < density <= 1, or null")
            allowed = "null unless prune.schedule is oneshot, " + ", ".join(SPARSE_FROM_START)
            require(oneshot or self.schedule in SPARSE_FROM_START, "prune.target_density", target, allowed)
            curve = "1 when prune.target_density is set (prune.target_density=null traces the one-shot curve over "
            curve += "rounds)"
            require(self.rounds == 1 or not oneshot, "prune.rounds", self.rounds, curve)
        if oneshot:
            for key in ("output_rate", "conv_rate"):
                value = getattr(self, key)
                require(value is None, f"prune.{key}", value, "null with prune.schedule=oneshot (one density for all)")
        if self.distribution is not None:
            self.distribution = choice("prune.distribution", self.distribution, Distribution)
            consistent = self.scope != "global" or self.distribution == "global"
            require(consistent, "prune.distribution", self.distribution, "global or null with prune.scope=global")
        if self.min_layer_density is not None:
            floor = self.min_layer_density
            require(0 <= floor <= 1, "prune.min_layer_density", floor, "a fraction in [0, 1], or null")
        self.control = choice("prune.control", self.control, Control)
        for key in ("score_examples_per_class", "synflow_iterations"):
            value = getattr(self, key)
            require(value >= 1, f"prune.{key}", value, "an integer >= 1")

    def _check_sparse_training(self) -> None:
        """Static, SET and RigL: one sparse round (the last), its mask drawn at random, not taken from a run."""
        self.drop_schedule = choice("prune.drop_schedule", self.drop_schedule, DropSchedule)
        require(self.update_every >= 1, "prune.update_every", self.update_every, "an integer >= 1 (steps)")
        require(0 < self.drop_fraction < 1, "prune.drop_fraction", self.drop_fraction, "a fraction with 0 < f < 1")
        until = self.update_until
        require(0 < until <= 1, "prune.update_until", until, "a fraction of the round's training, 0 < f <= 1")
        for key in ("early_ticket_window", "early_ticket_epsilon"):
            require(getattr(self, key) > 0, f"prune.{key}", getattr(self, key), "a number > 0")
        if self.schedule not in SPARSE_FROM_START:
            return
        method = f"prune.schedule={self.schedule}"
        target = self.target_density
        require(target is not None, "prune.target_density", target, f"a density with 0 < density <= 1 with {method}")
        dense_first = f"0 (the sparse round alone) or 1 (a dense round 0 first) with {method}"
        require(self.rounds in (0, 1), "prune.rounds", self.rounds, dense_first)
        random_mask = f"null with {method} (its mask is drawn at random at the start, not taken from a run)"
        require(self.masks_from is None, "prune.masks_from", self.masks_from, random_mask)
        no_dense_round = f"false with {method} (there is no dense round 0 whose mask could settle)"
        require(not self.early_ticket, "prune.early_ticket", self.early_ticket, no_dense_round)
        weights_only = f"weight with {method} (its updates drop and grow single weights)"
        require(self.structure == "weight", "prune.structure", self.structure, weights_only)

    def _check_structure(self) -> None:
        self.structure = choice("prune.structure", self.structure, Structure)
        nm_ok = len(self.nm) == 2 and 1 <= self.nm[0] < self.nm[1]
        require(nm_ok, "prune.nm", list(self.nm), "[N, M] with 1 <= N < M, such as [2, 4]")
        # a permuted weight mask is no longer made of whole units or N:M groups
        unpermuted = self.structure == "weight" or self.control != "shuffle_layer"
        shuffled = f"not shuffle_layer with prune.structure={self.structure} (prune.criterion=random is its control)"
        require(unpermuted, "prune.control", self.control, shuffled)

    def _check_masks_from(self) -> None:
        if self.masks_from is None:
            require(
                self.masks_round is None, "prune.masks_round", self.masks_round, "null unless prune.masks_from is set"
            )
            return
        copied = "magnitude (a mask taken from prune.masks_from is not scored)"
        require(self.criterion == "magnitude", "prune.criterion", self.criterion, copied)
        require(self.control != "invert", "prune.control", self.control, "not invert with prune.masks_from (no scores)")
        require(self.schedule != "oneshot", "prune.schedule", self.schedule, "iterative with prune.masks_from")
        if self.masks_round is not None:
            require(self.masks_round >= 0, "prune.masks_round", self.masks_round, "an integer >= 0, or null")


@dataclass
class TrainConfig:
    optimizer: Optimizer = Optimizer["adam"]
    lr: float = 1.2e-3
    # constant | step (x gamma at each milestone) | cosine (to 0 at the end)
    lr_schedule: LRSchedule = LRSchedule["constant"]
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
    grad_clip: float | None = None  # clip the gradient's global L2 norm to this before each step; unset: never
    # train seeds seed..seed+N-1 together in one process, each in its own run directory <run dir>/seed_<s>, with
    # the results of runs alone (lth.replicates); many small runs share the device instead of queueing for it
    replicates: int = 1
    patience: int = 0  # stop a round after N evaluations without a lower validation loss; 0: the full length

    def __post_init__(self) -> None:
        self.optimizer = choice("train.optimizer", self.optimizer, Optimizer)
        require(math.isfinite(self.lr) and self.lr > 0, "train.lr", self.lr, "a finite number > 0")
        self.lr_schedule = choice("train.lr_schedule", self.lr_schedule, LRSchedule)
        for key, duration in [("train.warmup", self.warmup)] + [("train.milestones", m) for m in self.milestones]:
            # one past the end of training never applies, harmlessly
            require_duration(key, duration, "a number of steps or epochs such as 500it or 80ep")
        require(self.gamma > 0, "train.gamma", self.gamma, "a number > 0")
        milestones_used = not self.milestones or self.lr_schedule == "step"
        require(milestones_used, "train.milestones", self.milestones, "empty unless train.lr_schedule=step")
        # momentum >= 1 makes SGD's velocity grow without bound; a non-finite decay turns every weight into NaN
        require(0 <= self.momentum < 1, "train.momentum", self.momentum, "a number >= 0 and < 1")
        finite_decay = math.isfinite(self.weight_decay) and self.weight_decay >= 0
        require(finite_decay, "train.weight_decay", self.weight_decay, "a finite number >= 0")
        require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        require(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        require_choice("train.precision", str(self.precision), PRECISIONS)
        require(self.eval_every >= 0, "train.eval_every", self.eval_every, "an integer >= 0")
        require(self.patience >= 0, "train.patience", self.patience, "an integer >= 0 (0: off)")
        clip = self.grad_clip
        require(clip is None or (math.isfinite(clip) and clip > 0), "train.grad_clip", clip, "a number > 0, or null")
        self._check_replicates()

    def _check_replicates(self) -> None:
        """Batched replicates must equal runs alone (lth.replicates): nothing may couple or re-draw them."""
        require(self.replicates >= 1, "train.replicates", self.replicates, "an integer >= 1")
        if self.replicates == 1:
            return
        batched = f"with train.replicates={self.replicates}"
        require(
            self.precision != "fp16",
            "train.precision",
            self.precision,
            f"32 or bf16 {batched} (one fp16 loss scale would skip every replicate's step together)",
        )
        require(not self.compile, "train.compile", self.compile, f"false {batched}")
        # one norm over the stacked replicates would couple them
        require(self.grad_clip is None, "train.grad_clip", self.grad_clip, f"null {batched}")
        require(not self.channels_last, "train.channels_last", self.channels_last, f"false {batched}")
        together = f"0 {batched} (replicates train in lockstep to the end of the round)"
        require(self.patience == 0, "train.patience", self.patience, together)


@dataclass
class CheckpointConfig:
    every: str = "1ep"  # in-progress training state saved every N steps (`500it`) or epochs (`1ep`); `0`: never
    keep: int = 2  # newest in-progress states kept per round (older ones deleted)

    def __post_init__(self) -> None:
        allowed = "a number of steps or epochs such as 500it or 1ep (0: never)"
        require_duration("checkpoint.every", self.every, allowed)
        require(self.keep >= 1, "checkpoint.keep", self.keep, "an integer >= 1")


@dataclass
class UIConfig:
    progress: bool = True  # live progress bars; false for scripts and CI
    width: int | None = None  # columns of the output; None: the terminal's, else wide enough for every table

    def __post_init__(self) -> None:
        require(self.width is None or self.width >= 40, "ui.width", self.width, "null or an integer >= 40")


@dataclass
class Config:
    model: ModelConfig = REQUIRED
    dataset: DatasetConfig = REQUIRED
    prune: PruneConfig = REQUIRED
    train: TrainConfig = REQUIRED
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # none | tensorboard | mlflow | wandb (lth.trackers: live curves, round summaries); metrics.jsonl always
    logger: Logger = Logger["none"]
    logger_uri: str | None = None  # logger=mlflow: the tracking URI; unset: a file store in <run>/mlruns
    logger_online: bool = False  # logger=wandb: stream to the W&B server; false: offline, in <run>/wandb
    logger_project: str = "lth"  # the MLflow experiment or W&B project runs are logged to

    def __post_init__(self) -> None:
        require(0 <= self.seed < 2**63, "seed", self.seed, "an integer with 0 <= seed < 2**63")
        self._check_logger()
        device_ok = self.device in DEVICES or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        require(device_ok, "device", self.device, "auto, cpu, cuda or cuda:N")
        if not isinstance(self.train, TrainConfig) or not isinstance(self.dataset, DatasetConfig):
            return  # a schema default being built, not a config
        rewind = DURATION.fullmatch(self.prune.rewind_to)
        if rewind is not None and rewind["unit"] == "ep":  # a step count is checked once the data size is known
            before_end = int(rewind["count"]) < self.train.epochs
            allowed = f"before the end of round 0 (train.epochs={self.train.epochs})"
            require(before_end, "prune.rewind_to", self.prune.rewind_to, allowed)
        self._check_lockstep()
        watched = self.train.patience == 0 or self.dataset.val_size > 0
        patience = "0 with dataset.val_size=0 (it watches the validation loss)"
        require(watched, "train.patience", self.train.patience, patience)

    def _check_logger(self) -> None:
        self.logger = choice("logger", self.logger, Logger)
        uri, online, project = self.logger_uri, self.logger_online, self.logger_project
        require(uri is None or self.logger == "mlflow", "logger_uri", uri, "null unless logger=mlflow")
        allowed = "a tracking URI such as http://HOST:5000, file:///PATH or sqlite:///PATH, or null (<run>/mlruns)"
        uri_ok = uri is None or re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:.+|databricks", uri) is not None
        require(uri_ok, "logger_uri", uri, allowed)
        require(not online or self.logger == "wandb", "logger_online", online, "false unless logger=wandb")
        allowed = "a name of 1 to 128 characters without / \\ # ? % :"  # W&B's rule (MLflow takes any)
        require(re.fullmatch(r"[^/\\#?%:]{1,128}", project) is not None, "logger_project", project, allowed)

    def _check_lockstep(self) -> None:
        """Batched replicates (lth.replicates) share one mask stack and train every step to the end together."""
        count = self.train.replicates
        if count == 1:
            return
        lockstep = "1 with {} (batched replicates train in lockstep under fixed masks to the end of the round)"
        if self.prune.schedule in ("set", "rigl"):
            refuse("train.replicates", count, lockstep.format(f"prune.schedule={self.prune.schedule}"))
        if self.prune.early_ticket:
            refuse("train.replicates", count, lockstep.format("prune.early_ticket=true"))
