"""Model registry: published parameter counts, prunable tensors, output layer, initialisation, config checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lth.config import ModelConfig
from lth.errors import ConfigError
from lth.model_schemas import MODEL_SCHEMAS
from lth.models import build, check_fits, check_name, names, names_for, output_layer, prunable_weights, width_names

MNIST, CIFAR = (1, 28, 28), (3, 32, 32)
CONF_MODEL = Path(__file__).resolve().parent.parent / "lth" / "conf" / "model"

# Exact parameter counts (10 classes) at the input shape each network was designed for, and the published figure
# (matched within 3%).
PINNED: dict[str, tuple[tuple[int, ...], int, float]] = {
    "lenet_300_100": (MNIST, 266_610, 266e3),  # Frankle & Carbin 2019, Figure 2: 266K
    # LeCun et al. 1998, Section II.B: "about 60,000"; the modern form's fully connected C3 layer adds 900.
    "lenet5": (MNIST, 61_706, 60e3),
    "conv2": (CIFAR, 4_301_642, 4.3e6),  # Frankle & Carbin 2019, Figure 2: 4.3M
    "conv4": (CIFAR, 2_425_930, 2.4e6),  # Frankle & Carbin 2019, Figure 2: 2.4M
    # Figure 2 says 1.7M, but its own layer list (and its 1.1M conv + 1.1M FC split) adds up to 2.26M.
    "conv6": (CIFAR, 2_262_602, 2.26e6),
    "vgg11": (CIFAR, 9_231_114, 9.2e6),  # open_lth cifar_vgg_11
    "vgg13": (CIFAR, 9_416_010, 9.4e6),  # open_lth cifar_vgg_13
    "vgg16": (CIFAR, 14_728_266, 14.7e6),  # Frankle et al. 2020, Table 1: VGG-16, 14.7M
    "vgg19": (CIFAR, 20_040_522, 20.0e6),  # open_lth cifar_vgg_19 (the same plan; no paper figure checked)
    "resnet20": (CIFAR, 272_474, 0.27e6),  # He et al. 2016, Table 6: 0.27M; Frankle et al. 2020, Table 1: 272K
    "resnet32": (CIFAR, 466_906, 0.46e6),  # He et al. 2016, Table 6: 0.46M
    "resnet44": (CIFAR, 661_338, 0.66e6),  # He et al. 2016, Table 6: 0.66M
    "resnet56": (CIFAR, 855_770, 0.85e6),  # He et al. 2016, Table 6: 0.85M
    "resnet110": (CIFAR, 1_730_714, 1.7e6),  # He et al. 2016, Table 6: 1.7M
    "resnet18": (CIFAR, 11_173_962, 11.2e6),  # kuangliu/pytorch-cifar ResNet18: 11.2M
    "vit": (MNIST, 305_034, 305_034),  # lth's small ViT (no paper's size); its layer list, see tests/test_vit.py
}


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(name: str, input_shape: tuple[int, ...], num_classes: int = 10, **cfg: object) -> nn.Module:
    """Shapes without memory or init time: enough for counts, names and output shapes."""
    with torch.device("meta"):
        return build(ModelConfig(name=name, **cfg), input_shape, num_classes)


@pytest.mark.parametrize("name", names_for("classification"))  # language models: tests/test_lm_models.py
def test_parameter_count_is_pinned_and_matches_the_published_figure(name):
    assert name in PINNED, f"pin {name}'s exact parameter count (and its published figure) in PINNED"
    shape, exact, published = PINNED[name]
    count = parameter_count(meta_model(name, shape))
    assert count == exact
    assert math.isclose(count, published, rel_tol=0.03)


def test_lenet_300_100_matches_the_published_parameter_count():
    model = build(ModelConfig(name="lenet_300_100"), MNIST, 10)
    assert list(prunable_weights(model)) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert output_layer(model) == "fc3.weight"
    assert model(torch.zeros(3, *MNIST)).shape == (3, 10)


def test_convnets_adapt_their_first_linear_layer_to_the_image_size():
    assert parameter_count(meta_model("lenet5", CIFAR)) == 83_126  # 16x6x6 features instead of 16x5x5
    assert parameter_count(meta_model("conv6", MNIST)) == 1_802_698  # 3x3x256 features, one input channel


@pytest.mark.parametrize("name", names_for("classification"))  # language models: tests/test_lm_models.py
def test_output_layer_is_the_classifier_that_produces_the_logits(name):
    model = meta_model(name, PINNED[name][0], num_classes=7)
    called: list[str] = []
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            module.register_forward_hook(lambda *_, n=module_name: called.append(n))
    output = model(torch.zeros(2, *PINNED[name][0], device="meta"))
    assert output.shape == (2, 7)
    assert output_layer(model) == f"{called[-1]}.weight"
    assert prunable_weights(model)[output_layer(model)].shape[0] == 7


@pytest.mark.parametrize("name", names_for("classification"))  # language models: tests/test_lm_models.py
def test_prunable_tensors_are_conv_and_linear_weights_only(name):
    model = meta_model(name, PINNED[name][0])
    prunable = prunable_weights(model)
    rest = {n: p for n, p in model.named_parameters() if n not in prunable}
    assert all(p.dim() >= 2 for p in prunable.values())
    assert all(n.endswith(".weight") for n in prunable)
    # Everything else is a bias or a batch norm scale or shift: one number per channel (a ViT's position
    # embeddings and class token also: one vector per token).
    tokens = {"pos_embed", "cls_token"}
    assert all(p.dim() == 1 for n, p in rest.items() if n not in tokens)
    norms = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d) and m.bias is not None}
    assert not {id(p) for p in prunable.values()} & (norms | biases)
    assert len(prunable) + len(rest) == len(list(model.parameters()))


@pytest.mark.parametrize(("name", "shape"), [("lenet5", MNIST), ("conv2", CIFAR), ("resnet20", CIFAR)])
def test_small_models_run_forward_and_backward(name, shape):
    torch.manual_seed(0)
    model = build(ModelConfig(name=name), shape, 10)
    loss = nn.functional.cross_entropy(model(torch.randn(2, *shape)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_lenet_init_is_glorot_normal_with_zero_biases():
    torch.manual_seed(0)
    model = build(ModelConfig(name="lenet_300_100"), MNIST, 10)
    std = model.fc1.weight.std().item()
    assert abs(std - (2 / (784 + 300)) ** 0.5) < 0.002
    assert not model.fc1.bias.any()


def test_conv_nets_init_is_glorot_normal_with_zero_biases():
    torch.manual_seed(0)
    model = build(ModelConfig(name="conv2"), CIFAR, 10)
    conv = model.features[2]  # 64 → 64 channels, 3x3: fan in = fan out = 576
    assert math.isclose(conv.weight.std().item(), (2 / (576 + 576)) ** 0.5, rel_tol=0.03)
    assert math.isclose(model.hidden[0].weight.std().item(), (2 / (16 * 16 * 64 + 256)) ** 0.5, rel_tol=0.03)
    assert not any(m.bias.any() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d))


@pytest.mark.parametrize(("name", "conv_name"), [("vgg11", "features.22"), ("resnet20", "blocks.8.conv2")])
def test_open_lth_init_is_kaiming_normal_with_uniform_batch_norm_scales(name, conv_name):
    torch.manual_seed(0)
    model = build(ModelConfig(name=name), CIFAR, 10)
    conv = model.get_submodule(conv_name)
    assert math.isclose(conv.weight.std().item(), (2 / (conv.in_channels * 9)) ** 0.5, rel_tol=0.03)
    assert math.isclose(model.fc.weight.std().item(), (2 / model.fc.in_features) ** 0.5, rel_tol=0.1)
    scales = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    shifts = torch.cat([m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.min() >= 0 and scales.max() < 1 and abs(scales.mean().item() - 0.5) < 0.05
    assert not shifts.any()
    # The conv-stack size probe runs in eval mode: batch norm statistics start untouched.
    assert all(m.num_batches_tracked == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_width_sets_the_resnet_stage_channels():
    default, explicit = meta_model("resnet20", CIFAR), meta_model("resnet20", CIFAR, width=16)
    assert parameter_count(default) == parameter_count(explicit) == 272_474
    assert parameter_count(meta_model("resnet20", CIFAR, width=8)) == 68_786
    wide = meta_model("resnet20", CIFAR, width=32)
    assert parameter_count(wide) == 1_084_586
    assert [wide.blocks[i].conv2.out_channels for i in (0, 3, 6)] == [32, 64, 128]
    assert meta_model("resnet18", CIFAR, width=32).fc.in_features == 256


def test_models_take_their_input_channels_from_the_dataset():
    assert meta_model("resnet20", MNIST).conv.in_channels == 1
    assert meta_model("vgg16", (5, 32, 32)).features[0].in_channels == 5


def test_torchvision_resnet18_builds_with_the_dataset_classes():
    model = build(ModelConfig(name="resnet18", source="torchvision"), CIFAR, 10)
    assert parameter_count(model) == 11_181_642  # torchvision's 11,689,512 with a 512 → 10 classifier
    assert output_layer(model) == "fc.weight"
    assert model(torch.zeros(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "classifier"),
    [
        ("vit_b_32", "heads.head"),
        ("squeezenet1_0", "classifier.1"),
        ("googlenet", "fc"),
        ("convnext_tiny", "classifier.2"),
    ],
)
def test_torchvision_output_layer_is_the_classifier(name, classifier):
    model = meta_model(name, (3, 224, 224), source="torchvision")
    assert output_layer(model) == f"{classifier}.weight"
    assert model(torch.zeros(2, 3, 224, 224, device="meta")).shape == (2, 10)  # googlenet: no auxiliary outputs


def test_every_model_has_a_config_file_that_names_its_paper():
    for path in CONF_MODEL.glob("*.yaml"):
        text = path.read_text()
        data = yaml.safe_load(text)
        schema = "base_model" if path.stem not in MODEL_SCHEMAS else f"base_{path.stem}"  # keys of its own
        assert text.startswith("# ") and data["defaults"] == [schema], path.name
        assert data.get("source", "lth") == "torchvision" or data["name"] == path.stem, path.name
    assert set(names()) <= {path.stem for path in CONF_MODEL.glob("*.yaml")}


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (
            ModelConfig(name="resnet20", source="keras"),
            "model.source=keras is not allowed; model.source must be one of: lth, torchvision",
        ),
        (ModelConfig(name="resnet21"), "model.name=resnet21 is not allowed; model.name must be one of: conv2, conv4"),
        (
            ModelConfig(name="resnet20", source="torchvision"),
            "model.name=resnet20 is not allowed; model.name must be "
            "a torchvision.models classification constructor such as resnet50",
        ),
        (
            ModelConfig(name="resnet20", width=0),
            "model.width=0 is not allowed; model.width must be null or an integer >= 1",
        ),
        (
            ModelConfig(name="lenet_300_100", width=8),
            "model.width=8 is not allowed; model.width must be null for "
            "lenet_300_100; models that take a width: resnet110, resnet18, resnet20",
        ),
        (
            ModelConfig(name="resnet50", source="torchvision", width=8),
            "model.width must be null for model.source=torchvision model.name=resnet50",
        ),
    ],
)
def test_check_name_refuses_in_one_line_naming_the_key(cfg, expected):
    with pytest.raises(ConfigError) as error:
        check_name(cfg)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="is not allowed"):
        build(cfg, CIFAR, 10)  # build checks too, rather than fail with a KeyError


def test_check_name_accepts_every_model_and_torchvision_constructors():
    for name in names():
        check_name(ModelConfig(name=name))
    for name in width_names():
        check_name(ModelConfig(name=name, width=4))
    check_name(ModelConfig(name="resnet50", source="torchvision"))
    assert width_names() == ["resnet110", "resnet18", "resnet20", "resnet32", "resnet44", "resnet56", "vit"]


@pytest.mark.parametrize("name", names_for("classification"))  # language models: tests/test_lm_models.py
def test_check_fits_cifar_and_mnist_except_vgg_on_28x28(name):
    check_fits(ModelConfig(name=name), CIFAR, 10)
    if name.startswith("vgg"):  # five halvings of 28 leave nothing to pool
        with pytest.raises(
            ConfigError,
            match=rf"^model={name} does not fit inputs of shape \(1, 28, 28\) from the "
            r"dataset: .*Output size is too small$",
        ):
            check_fits(ModelConfig(name=name), MNIST, 10)
    else:
        check_fits(ModelConfig(name=name), MNIST, 10)


def test_check_fits_takes_flat_inputs_only_for_the_fully_connected_lenet():
    check_fits(ModelConfig(name="lenet_300_100"), (20,), 3)
    with pytest.raises(ConfigError) as error:
        check_fits(ModelConfig(name="resnet20"), (20,), 3)
    assert str(error.value) == (
        "model=resnet20 does not fit inputs of shape (20,) from the dataset: "
        "a convnet needs image inputs of shape (C, H, W), not (20,)"
    )


def test_check_fits_names_wrong_channel_counts_for_torchvision_models():
    check_fits(ModelConfig(name="resnet50", source="torchvision"), CIFAR, 10)
    with pytest.raises(ConfigError) as error:
        check_fits(ModelConfig(name="resnet50", source="torchvision"), MNIST, 10)
    assert str(error.value) == (
        "model.source=torchvision model.name=resnet50 does not fit inputs of shape (1, 28, 28) from the dataset: "
        "its first convolution takes 3 input channels, the dataset has 1"
    )


def test_check_fits_refuses_a_model_whose_output_is_not_one_logit_per_class(monkeypatch):
    from lth import models

    monkeypatch.setitem(models._BUILDERS, "pooled", lambda cfg, shape, classes: nn.Flatten())
    with pytest.raises(
        ConfigError,
        match=r"^model=pooled does not fit .*: a batch of 2 gives outputs of shape "
        r"\(2, 784\), not \(2, 10\)$",
    ):
        check_fits(ModelConfig(name="pooled"), MNIST, 10)
