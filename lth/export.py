"""`lth export`: one round's ticket as a standalone folder, and `load_ticket` to get the model back.

A ticket is Frankle & Carbin's (ICLR 2019) pair of a mask and weights: the round's trained weights (`final`,
default) or the weights it started from (`start`: the rewind point θk times the mask, the ticket before
training). The folder holds

    weights.safetensors   the full state dict (pruned weights are exactly zero), loadable without lth
    mask.safetensors      bool mask per prunable weight
    card.json             model and dataset config, input shape, class count, densities per layer, nonzero
                          parameters, dense and sparse multiply-accumulates per example, the round's accuracy and
                          the `lth run` command that made it
    model.torchscript.pt  with --format torchscript: a traced module that needs torch only (of the compacted
                          model with --compact)
    compact.safetensors   with --compact: the state dict of the compacted network (lth.compact: dead units and
                          channels removed, the same function); card.json's `compact` records the units kept per
                          layer (original indices), its sizes and MACs, and a speed benchmark (lth.speed)

`load_ticket` returns the compacted model when the folder has one (compact=False: the masked one). The compact
file alone fixes the layer sizes: the loader builds the model of the card's config and resizes each linear, conv
and batch-norm layer to the saved shapes (lth.compact.resize_to).

The card records the input normalisation (per-channel mean and std of the seed's training split, in the units
the dataset's files store). `load_ticket(path)` expects inputs normalised as `lth.data.load(dataset, seed)` gives
them; `load_ticket(path, inputs="raw")` puts that normalisation in front of the model, for pixels as the files
store them (0-255), and `inputs="unit"` for images scaled to [0, 1] (torchvision's `ToTensor`).
"""

from __future__ import annotations

import copy
import io
import shlex
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from lth import data, models
from lth.checkpoint import (
    RUN_FILE,
    atomic_write,
    check_writable,
    finished_round,
    load_tensors,
    read_json,
    read_run_record,
    save_tensors,
    write_json,
)
from lth.errors import ConfigError, OutputError
from lth.model_schemas import MODEL_SCHEMAS
from lth.prune import density, layer_densities
from lth.schema import ModelConfig
from lth.structured import from_container, to_container
from lth.tasks import CLASSIFICATION, TASKS

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"
MASK_FILE = "mask.safetensors"
TORCHSCRIPT_FILE = "model.torchscript.pt"
COMPACT_FILE = "compact.safetensors"
CARD_FORMAT = 1


def export(
    run_dir: Path,
    round_index: int,
    out: Path,
    weights: str = "final",
    fmt: str = "safetensors",
    compact: bool = False,
    speed_repeats: int = 40,
) -> dict:
    """Write round `round_index` of `run_dir` as a ticket folder `out` (see the module docstring); return the card.

    `out` must not exist or be empty, so an export never mixes two tickets. With `compact`, a round that cannot
    be compacted (no dead unit, or an architecture lth.compact does not know) is a ConfigError before anything is
    written; `speed_repeats` sets the timed calls of its benchmark."""
    if weights not in ("final", "start"):
        raise ConfigError(f"--weights {weights}: choose final or start")
    if fmt not in ("safetensors", "torchscript"):
        raise ConfigError(f"--format {fmt}: choose safetensors or torchscript")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose a new one")
    from lth.report import read_metrics

    record = read_run_record(run_dir)
    cfg = from_container(record.get("config"), run_dir / RUN_FILE)
    folder = finished_round(run_dir, round_index)
    metrics = read_metrics(run_dir, round_index)
    check_writable(out, "the ticket to")
    state = load_tensors(folder / f"{weights}.safetensors")
    masks = load_tensors(folder / "mask.safetensors")
    # The input shape and class count are the dataset's; reading it is the one sure way for every source.
    dataset = data.load(cfg.dataset, cfg.seed, torch.device("cpu"))
    if compact and dataset.task != CLASSIFICATION:
        raise ConfigError(f"lth export --compact: {run_dir} is a {dataset.task} run; lth.compact knows classifiers")
    model = models.build(cfg.model, dataset.input_shape, dataset.num_classes)
    model.load_state_dict(state)
    compacted = _compacted(model, masks, round_index, dataset.input_shape, speed_repeats) if compact else None
    example = TASKS[dataset.task].example_input(1, dataset.input_shape, "cpu")  # zeros: images, or token ids
    dense_macs = multiply_accumulates(model, example)
    per_layer = layer_densities(masks)
    total = sum(value.numel() for value in model.parameters())
    card = {
        "format": CARD_FORMAT,
        "model": to_container(cfg)["model"],
        "dataset": to_container(cfg)["dataset"],
        "seed": cfg.seed,
        "input_shape": list(dataset.input_shape),
        "inputs": input_statistics(dataset),
        "num_classes": dataset.num_classes,  # a language model's: the vocabulary size
        "task": dataset.task,
        "round": round_index,
        "weights": weights,
        "density": density(masks),
        "layer_density": per_layer,
        "parameters": total,
        "nonzero_parameters": total - sum(m.numel() - int(m.sum()) for m in masks.values()),
        "macs_per_example": {
            "dense": sum(dense_macs.values()),
            "sparse": round(sum(macs * per_layer.get(name, 1.0) for name, macs in dense_macs.items())),
            "per_layer_dense": dense_macs,
        },
        # The round's accuracy is that of its trained weights; `start` weights are the untrained ticket.
        "test_accuracy": metrics["test_accuracy"],
        "best_test_accuracy": metrics["best_test_accuracy"],
        "early_stop_step": metrics["early_stop_step"],
        **{key: metrics[key] for key in ("test_bpc", "early_stop_test_bpc") if key in metrics},  # language models
        "source": {"run": str(run_dir.resolve()), "config_hash": record.get("config_hash")},
        "command": run_command(run_dir),
    }
    scripted = None
    if compacted is not None:
        card["compact"] = compacted[1]
        model = compacted[0]  # what --format torchscript traces
    if fmt == "torchscript":
        model.eval()
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # torch deprecates TorchScript; it was asked for, and still loads anywhere
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.trace(model, example), buffer)
        scripted = buffer.getvalue()
    made = _missing_folders(out)  # the folders this export creates: removed again if writing fails
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(out / WEIGHTS_FILE, state)
        save_tensors(out / MASK_FILE, masks)
        if compacted is not None:
            save_tensors(out / COMPACT_FILE, compacted[0].state_dict())
        if scripted is not None:
            atomic_write(out / TORCHSCRIPT_FILE, scripted)
        write_json(out / CARD_FILE, card)  # last: a folder with a card is a complete ticket
    except OSError as error:
        if made:
            shutil.rmtree(made[0], ignore_errors=True)
        elif out.is_dir():  # it was an empty folder: empty it again
            for child in out.iterdir():
                child.unlink(missing_ok=True)
        raise OutputError(f"cannot write the ticket to {out}: {error.strerror or error}") from None
    return card


def _missing_folders(path: Path) -> list[Path]:
    """`path` and those of its parents that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


INPUTS = ("normalised", "raw", "unit")


def input_statistics(dataset: data.Dataset) -> dict[str, Any]:
    """The normalisation a ticket's inputs need, for the card: per-channel mean and std in stored units; for a
    language model, its vocabulary (`chars`: the characters of ids 0..n-1, id n unknown; or 256 bytes)."""
    if dataset.vocab is not None:
        return {"vocab": dataset.vocab.kind, "chars": dataset.vocab.chars}
    assert dataset.input_mean is not None and dataset.input_std is not None
    return {
        "mean": dataset.input_mean.flatten().tolist(),
        "std": dataset.input_std.flatten().tolist(),
        "stored_dtype": str(dataset.stored_dtype).removeprefix("torch."),
    }


class Normalise(nn.Module):
    """(x - mean) / std with the card's statistics, broadcast over channels (images) or all values (flat)."""

    def __init__(self, mean: list[float], std: list[float], input_shape: tuple[int, ...]) -> None:
        super().__init__()
        shape = (len(mean), *[1] * (len(input_shape) - 1)) if len(input_shape) > 1 else (len(mean),)
        self.register_buffer("mean", torch.tensor(mean).reshape(shape))
        self.register_buffer("std", torch.tensor(std).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def load_ticket(
    path: Path | str, device: str | torch.device = "cpu", inputs: str = "normalised", compact: bool | None = None
) -> nn.Module:
    """The model of a ticket folder written by `lth export`, with its weights loaded, in eval mode: the compacted
    model when the folder has one (`lth export --compact`) unless `compact=False`.

    `inputs`: `normalised` (as `lth.data.load` gives them), `raw` (pixels as the dataset's files store them) or
    `unit` (uint8 images scaled to [0, 1], as torchvision's ToTensor gives them): the model then normalises them
    itself with the statistics on the card."""
    path = Path(path)
    if inputs not in INPUTS:
        raise ConfigError(f"inputs={inputs!r} is not allowed; choose one of: {', '.join(INPUTS)}")
    try:
        card = read_json(path / CARD_FILE)
    except (OSError, ValueError):
        raise ConfigError(f"{path} is not an lth ticket (no readable {CARD_FILE}); write one with lth export") from None
    try:
        own = card["model"]["source"] == "lth"
        schema = MODEL_SCHEMAS.get(card["model"]["name"], ModelConfig) if own else ModelConfig
        fields = {key: value for key, value in card["model"].items() if key in schema.__dataclass_fields__}
        input_shape, classes = tuple(card["input_shape"]), int(card["num_classes"])
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ConfigError(
            f"{path / CARD_FILE} is not an lth ticket card (model, input_shape, num_classes); write one with lth export"
        ) from None
    model = models.build(schema(**fields), input_shape, classes)
    if compact and "compact" not in card:
        raise ConfigError(f"{path} holds no compacted model; export it with lth export --compact")
    use_compact = "compact" in card and compact is not False
    weights = path / (COMPACT_FILE if use_compact else WEIGHTS_FILE)
    try:
        if use_compact:
            from lth.compact import resize_to

            model = resize_to(model, load_tensors(weights))
        else:
            model.load_state_dict(load_tensors(weights))
    except ConfigError:
        raise
    except Exception as error:  # safetensors' errors, a missing file, tensors of another model
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{weights} does not hold this ticket's weights ({reason})") from None
    if inputs != "normalised" and card.get("task", CLASSIFICATION) != CLASSIFICATION:
        raise ConfigError(f"inputs={inputs!r} is for images; {path} is a {card['task']} ticket (it takes token ids)")
    if inputs != "normalised":
        stats = card.get("inputs")
        if stats is None:
            raise ConfigError(f"{path}: its card has no input statistics (exported by an older lth); export it again")
        scale = 1.0
        if inputs == "unit":
            if stats["stored_dtype"] != "uint8":
                raise ConfigError(f"inputs='unit' needs uint8 images; {path} was trained on {stats['stored_dtype']}")
            scale = 255.0  # [0, 1] inputs are the stored 0-255 pixels divided by 255
        mean, std = [m / scale for m in stats["mean"]], [s / scale for s in stats["std"]]
        model = nn.Sequential(Normalise(mean, std, input_shape), model)
    return model.to(device).eval()


def _compacted(
    model: nn.Module, masks: dict[str, torch.Tensor], round_index: int, input_shape: tuple[int, ...], repeats: int
) -> tuple[nn.Module, dict]:
    """`lth export --compact`: the compacted model and the card's `compact` entry (sizes, units kept, speed)."""
    from lth import compact, speed

    result = compact.compact(model, masks)  # ConfigError for an architecture it does not know
    if not result.removed:
        raise ConfigError(
            f"--compact: round {round_index} has no dead unit (every unit has a surviving incoming and outgoing "
            "weight, or is a constant that cannot be folded), so nothing can be removed; export it without --compact"
        )
    entry = compact.card_entry(result)
    masked = copy.deepcopy(model).eval()
    entry["sizes"] = {"masked": speed.sizes(masked, input_shape), "compact": speed.sizes(result.model, input_shape)}
    # dense costs what masked costs in dense kernels (the card's `parameters` and `macs_per_example` are its sizes)
    entry["speed"] = speed.benchmark({"masked": masked, "compact": result.model}, input_shape, repeats=repeats)
    return result.model, entry


def multiply_accumulates(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates of each prunable (linear or conv) layer for one example, by its weight's name.

    Counted with forward hooks on a copy of the model on the meta device (shapes only, no arithmetic, no
    memory): each output element of a layer costs one MAC per weight feeding it, i.e. output elements times
    weight[0].numel() (in_features; in_channels/groups × kernel size). Sparse MACs are these times the layer's
    density, the count a sparse kernel would do (no real kernel reaches it). `example`: one example's input (a
    batch of 1). An embedding is a lookup, not counted; nor is a tied output layer (the embedding matrix applied
    with F.linear, no module)."""
    meta = copy.deepcopy(model).to("meta")
    prunable = set(models.prunable_weights(meta))
    names = {
        module: f"{name}.weight"
        for name, module in meta.named_modules()
        if f"{name}.weight" in prunable and not isinstance(module, nn.Embedding)
    }
    counts: dict[str, int] = {}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        per_example = output.numel() // output.shape[0]
        counts[names[module]] = counts.get(names[module], 0) + per_example * module.weight[0].numel()

    handles = [module.register_forward_hook(hook) for module in names]
    try:
        meta.eval()
        with torch.no_grad():
            meta(example.to("meta"))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def run_command(run_dir: Path) -> str | None:
    """The `lth run` command that made a run, from Hydra's record of its overrides (None without one)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    overrides = yaml.safe_load(path.read_text()) or []
    return shlex.join(["lth", "run", *map(str, overrides)])
