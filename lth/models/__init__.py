"""Model registry, which tensors of a model are prunable, and checks that a model config is usable.

A builder takes the model config and the dataset's input shape (C, H, W for images) and class count and returns an
initialised nn.Module. `model.source=lth` picks a builder registered here (lth/models/*.py); `model.source=torchvision`
any torchvision.models classification constructor. Prunable tensors are the weights of linear and convolutional
layers (never biases or norm layers), unless the model declares its own with a `prunable_parameters()` method (the
language models: LSTM gate matrices, embeddings); the output layer is the last of them, pruned at its own rate.
A language model's builder (registered with task `language_model`) gets the window shape (T,) as its input shape
and the vocabulary size as its class count.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lth.errors import ConfigError
from lth.models.registry import _BUILDERS, _TAKE_WIDTH, Builder, names, names_for, register, task_of, width_names  # noqa: F401
from lth.schema import ModelConfig, refuse
from lth.tasks import TASKS

SOURCES = ("lth", "torchvision")
_PRUNABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An initialised model for inputs of `input_shape` (without the batch dimension) and `num_classes` outputs."""
    check_name(cfg)
    if cfg.source == "torchvision":
        return torchvision_models.build(cfg.name, num_classes)
    return _BUILDERS[cfg.name](cfg, tuple(input_shape), num_classes)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """What the model declares (`prunable_parameters()`), else the weights of linear and conv layers, by parameter
    name, in module order."""
    declared = getattr(model, "prunable_parameters", None)
    if callable(declared):
        return declared()
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_LAYERS)
    }


def output_layer(model: nn.Module) -> str:
    """The parameter name of the classifier's weight: the last prunable weight.

    Every lth model defines its classifier last, and so do all 80 classification constructors of torchvision 0.29
    (checked once; tests/test_models.py checks every lth model and a sample of torchvision's families)."""
    return list(prunable_weights(model))[-1]


def check_name(cfg: ModelConfig) -> None:
    """Raise ConfigError (one line naming the key and what is allowed) for an unknown source or name, or a width
    the model cannot take."""
    if cfg.source not in SOURCES:
        refuse("model.source", cfg.source, "one of: " + ", ".join(SOURCES))
    if cfg.source == "lth" and cfg.name not in _BUILDERS:
        refuse("model.name", cfg.name, "one of: " + ", ".join(names()) + " (or set model.source=torchvision)")
    if cfg.source == "torchvision" and cfg.name not in torchvision_models.names():
        refuse("model.name", cfg.name, "a torchvision.models classification constructor such as resnet50")
    if cfg.width is not None:
        if cfg.width < 1:
            refuse("model.width", cfg.width, "null or an integer >= 1")
        if cfg.source != "lth" or cfg.name not in _TAKE_WIDTH:
            model = f"model.source={cfg.source} model.name={cfg.name}" if cfg.source != "lth" else f"{cfg.name}"
            refuse("model.width", cfg.width, f"null for {model}; models that take a width: {', '.join(width_names())}")


REAL_CHECK_PARAMETERS = 30_000_000  # 120 MB of fp32: ResNet-50 and smaller are checked on the CPU


def check_fits(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Raise ConfigError unless the model builds for `input_shape` and maps a batch of 2 to its task's logits,
    (2, num_classes) for a classifier, (2, T, vocabulary) for a language model.

    The model is built on the meta device without initialisation (RegNets, which cannot be built there, are
    built for real and then moved) to count its parameters. Up to `REAL_CHECK_PARAMETERS` it is then built and
    run for real on the CPU: milliseconds for LeNet, a fraction of a second for a ResNet-50, where meta's Python
    kernels would import torch._dynamo and sympy (seconds of start-up); a larger model runs on the meta device,
    where no memory is allocated and no arithmetic done."""
    shape = tuple(input_shape)
    task = TASKS[task_of(cfg)]
    expected = task.output_shape(2, shape, num_classes)
    model: nn.Module | None = None
    try:
        model = _build_on_meta(cfg, shape, num_classes)
        device = "cpu" if sum(p.numel() for p in model.parameters()) <= REAL_CHECK_PARAMETERS else "meta"
        if device == "cpu":  # built again, for real (module.to_empty would run meta's Python kernels too)
            model = build(cfg, shape, num_classes)
        model.train()  # training mode, as the run uses it (networks with auxiliary heads differ only there)
        with torch.no_grad():
            output = model(task.example_input(2, shape, device))
    except Exception as error:  # whatever breaks (shape mismatch, pooling to nothing, bad rank) is the reason
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        reason = _channel_mismatch(model, shape) or first_line
    else:
        if not isinstance(output, Tensor):
            reason = f"it returns a {type(output).__name__}, not a tensor of logits"
        elif tuple(output.shape) != expected:
            reason = f"a batch of 2 gives outputs of shape {tuple(output.shape)}, not {expected}"
        else:
            return
    model_key = f"model={cfg.name}" if cfg.source == "lth" else f"model.source={cfg.source} model.name={cfg.name}"
    raise ConfigError(f"{model_key} does not fit inputs of shape {shape} from the dataset: {_shorten(reason)}")


class _SkipInitialisation(torch.overrides.TorchFunctionMode):
    """Under the meta device, in-place writes of values (the initialisers' normal_, uniform_, zero_, ...) do
    nothing: a shape check needs no values, and meta's random fills run torch's Python reference kernels, whose
    guard imports torch._dynamo (seconds of start-up). In-place calls that change a shape or a flag still run."""

    _KEPT = frozenset({"resize_", "resize_as_", "set_", "requires_grad_"})

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = getattr(func, "__name__", "")
        writes_values = name.endswith("_") and not name.endswith("__") and name not in self._KEPT
        if writes_values and args and isinstance(args[0], Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def _build_on_meta(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    try:
        with torch.device("meta"), _SkipInitialisation():
            return build(cfg, shape, num_classes)
    except NotImplementedError:
        # Some constructors read tensor values while building (torchvision's RegNets compute their widths with
        # torch ops), which meta tensors do not hold: build for real, then drop the memory.
        return build(cfg, shape, num_classes).to("meta")


def _channel_mismatch(model: nn.Module | None, shape: tuple[int, ...]) -> str | None:
    """A clearer reason than meta tensors' "Invalid channel dimensions" when the image channels are wrong."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None) if model is not None else None
    if first is None or len(shape) != 3 or first.in_channels == shape[0]:
        return None
    return f"its first convolution takes {first.in_channels} input channels, the dataset has {shape[0]}"


def _shorten(reason: str, limit: int = 200) -> str:
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


# Model families register themselves on import.
from lth.models import conv, gpt, lenet, lstm, resnet, torchvision_models, vgg, vit  # noqa: E402

__all__ = [
    "SOURCES",
    "build",
    "check_fits",
    "check_name",
    "conv",
    "gpt",
    "lenet",
    "lstm",
    "names",
    "names_for",
    "output_layer",
    "prunable_weights",
    "register",
    "resnet",
    "task_of",
    "torchvision_models",
    "vgg",
    "vit",
    "width_names",
]
