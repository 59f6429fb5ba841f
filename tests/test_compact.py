"""lth.compact, `lth export --compact` and `lth analyze speed`: the compacted network computes what the masked one
computes, is smaller, loads back, and is timed (structure only: no test asserts a speed)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from helpers import lth_in_process, lth_ok
from safetensors.torch import load_file, save_file
from torch import nn

import lth
from lth import compact, models
from lth.checkpoint import CHECKSUM_FILE, sha256_file
from lth.config import ModelConfig
from lth.errors import ConfigError
from lth.export import load_ticket

pytestmark = pytest.mark.usefixtures("wide_console")


def _pruned(name: str, shape: tuple[int, ...], width: int | None = None, seed: int = 0):
    """A model with random non-zero biases and batch-norm statistics, and masks that prune 70% of the weights
    and whole rows of 30% of the units (the output layer kept whole), so there are dead units of both kinds."""
    torch.manual_seed(seed)
    model = models.build(ModelConfig(name=name, width=width), shape, 10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.normal_()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            module.bias.data.normal_(0, 0.5)  # so units without inputs output act(bias) ≠ 0
    masks = {}
    for weight_name, weight in models.prunable_weights(model).items():
        mask = torch.rand(weight.shape) > 0.7
        mask[torch.rand(weight.shape[0]) < 0.3] = False
        masks[weight_name] = mask
    masks[models.output_layer(model)][:] = True
    masked = copy.deepcopy(model).eval()
    with torch.no_grad():
        for weight_name, mask in masks.items():
            masked.get_parameter(weight_name).mul_(mask)
    return masked, masks


@pytest.mark.parametrize(
    ("name", "shape", "width"),
    [("lenet_300_100", (1, 8, 8), None), ("conv2", (3, 8, 8), None), ("resnet20", (3, 8, 8), 4)],
)
def test_compacted_model_computes_the_masked_function(name, shape, width):
    masked, masks = _pruned(name, shape, width)
    result = compact.compact(masked, masks)
    x = torch.randn(32, *shape)
    with torch.no_grad():
        expected, got = masked(x), result.model(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-5
    assert result.removed > 0
    assert sum(after for _, after in result.units.values()) < sum(before for before, _ in result.units.values())
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in masked.parameters())
    for producer, (before, after) in result.units.items():
        assert len(result.kept[producer]) == after and max(result.kept[producer]) < before
    # the state dict alone fixes the shapes: a freshly built model resized to it gives the same outputs
    fresh = compact.resize_to(models.build(ModelConfig(name=name, width=width), shape, 10), result.model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), got)
    if name == "resnet20":  # the residual stream keeps its width; the inner channels shrink
        for block, old in zip(result.model.blocks, masked.blocks, strict=True):
            assert (
                block.conv2.out_channels == old.conv2.out_channels and block.conv1.in_channels == old.conv1.in_channels
            )
            assert block.bn1.num_features == block.conv1.out_channels == block.conv2.in_channels
        assert any("residual stream" in note for note in result.notes)


def test_constant_units_are_folded_into_the_next_bias():
    """fc1 units with no incoming weight output relu(bias): folded into fc2's bias, exactly."""
    torch.manual_seed(1)
    model = models.build(ModelConfig(name="lenet_300_100"), (1, 4, 4), 10).eval()
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in models.prunable_weights(model).items()}
    masks["fc1.weight"][:50] = False  # 50 units without inputs
    with torch.no_grad():
        model.fc1.bias[:50] = torch.linspace(-1, 1, 50)  # about half of them output a positive constant
        model.fc1.weight.mul_(masks["fc1.weight"])
    result = compact.compact(model, masks)
    assert result.units == {"fc1": [300, 250], "fc2": [100, 100]}
    x = torch.randn(8, 1, 4, 4)
    with torch.no_grad():
        assert (result.model(x) - model(x)).abs().max().item() < 1e-5
        assert not torch.equal(result.model.fc2.bias, model.fc2.bias)  # the positive constants moved there


def test_dead_units_from_masks():
    shapes = {"fc1.weight": (6, 4), "fc2.weight": (5, 6), "fc3.weight": (3, 5)}
    masks = {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}
    masks["fc1.weight"][0] = False  # fc1 unit 0: no incoming
    masks["fc2.weight"][:, 1] = False  # fc1 unit 1: no outgoing
    masks["fc3.weight"][:, 4] = False  # fc2 unit 4: no outgoing ...
    masks["fc2.weight"][3, 2:] = False  # ... and fc2 unit 3 reads only fc1 units 0 and 1, both dead: dead too
    link_list = compact.mask_links("lenet_300_100", masks)
    dead = compact.dead_units(masks, link_list)
    assert dead["fc1.weight"] == {"units": 6, "no_incoming": 1, "no_outgoing": 1, "dead": 2}
    assert dead["fc2.weight"] == {"units": 5, "no_incoming": 0, "no_outgoing": 1, "dead": 2}
    assert dead["fc3.weight"] == {"units": 3, "no_incoming": 0, "no_outgoing": None, "dead": None}


@pytest.mark.parametrize(("name", "width"), [("lenet_300_100", None), ("conv2", None), ("resnet20", 4)])
def test_links_from_masks_match_the_model(name, width):
    masked, masks = _pruned(name, (3, 8, 8), width)
    from_model = [(link.producer, link.consumer, link.spatial) for link in compact.links(masked)]
    from_masks = [(link.producer, link.consumer, link.spatial) for link in compact.mask_links(name, masks)]
    assert from_model == from_masks


def test_unknown_architectures_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match=r"cannot compact a torch\.nn\.modules\.container\.Sequential"):
        compact.compact(model, {})


@pytest.fixture(scope="module")
def dead_run(sweep_template, tmp_path_factory):
    """A copy of a finished LeNet run (8x8 synthetic) whose round 2 has 40 fc1 units without incoming weights
    (their checksums rewritten, as if IMP had pruned them)."""
    run_dir = tmp_path_factory.mktemp("dead") / "run"
    shutil.copytree(sweep_template / "0", run_dir)
    folder = run_dir / "round_02"
    masks, final = load_file(folder / "mask.safetensors"), load_file(folder / "final.safetensors")
    masks["fc1.weight"][:40] = False
    final["fc1.weight"] = final["fc1.weight"] * masks["fc1.weight"]
    save_file(masks, folder / "mask.safetensors")
    save_file(final, folder / "final.safetensors")
    sums = json.loads((folder / CHECKSUM_FILE).read_text())
    sums.update({name: sha256_file(folder / name) for name in ("mask.safetensors", "final.safetensors")})
    (folder / CHECKSUM_FILE).write_text(json.dumps(sums))
    return run_dir


def test_export_compact_writes_a_smaller_ticket_that_loads(dead_run, tmp_path, capsys):
    out = tmp_path / "ticket"
    printed = lth_ok(
        "export", str(dead_run), "--round", "2", str(out), "--compact", "--format", "torchscript", capsys=capsys
    )
    assert "compacted:" in printed and "Inference speed" in printed
    assert (out / "compact.safetensors").is_file()
    card = json.loads((out / "card.json").read_text())
    entry = card["compact"]
    assert entry["units"]["fc1"][0] == 300 and entry["units"]["fc1"][1] <= 260
    assert len(entry["kept_units"]["fc1"]) == entry["units"]["fc1"][1]
    assert entry["sizes"]["compact"]["macs"] < card["macs_per_example"]["dense"]
    assert entry["sizes"]["compact"]["parameters"] < card["parameters"]
    assert set(entry["speed"]["variants"]) == {"masked", "compact", "2:4"}
    for variant in ("masked", "compact"):
        assert {"latency_ms", "throughput_per_s"} <= set(entry["speed"]["variants"][variant]["cpu"])
    assert entry["speed"]["machine"]["threads"] == torch.get_num_threads()

    small, full = lth.load_ticket(out), load_ticket(out, compact=False)
    assert small.fc1.out_features == entry["units"]["fc1"][1] and full.fc1.out_features == 300
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert (small(x) - full(x)).abs().max().item() < 1e-5
        assert torch.allclose(torch.jit.load(str(out / "model.torchscript.pt"))(x), small(x))  # traced: compacted


def test_compact_refuses_with_one_line_and_writes_nothing(sweep_template, tmp_path, capsys):
    out = tmp_path / "ticket"
    code, printed, err = lth_in_process(
        "export", str(sweep_template / "0"), "--round", "0", str(out), "--compact", capsys=capsys
    )
    assert code == 2 and not printed and err.count("\n") == 1 and "no dead unit" in err, err
    assert not out.exists()


def test_analyze_speed_reports_sizes_and_timings(dead_run, capsys):
    result = json.loads(
        lth_ok("analyze", "speed", str(dead_run), "--round", "2", "--json", "--repeats", "3", capsys=capsys)
    )
    assert result["round"] == 2 and result["machine"]["torch"] == torch.__version__
    variants = result["variants"]
    assert set(variants) == {"dense", "masked", "compact", "2:4"}
    dense, masked, small = variants["dense"], variants["masked"], variants["compact"]
    assert dense["parameters"] == masked["parameters"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert dense["macs"] == masked["macs"] > small["macs"] and masked["nonzero_macs"] < masked["macs"]
    assert masked["nonzero_parameters"] < dense["nonzero_parameters"]
    for entry in (dense, masked, small):
        assert entry["cpu"]["latency_ms"] > 0 and entry["cpu"]["throughput_batch"] == 256
    if not torch.cuda.is_available():
        assert not variants["2:4"]["available"] and "unsupported" in variants["2:4"]["reason"]
    assert (dead_run / "analysis" / "speed_round_02.json").is_file()
    threads = torch.get_num_threads()
    try:
        table = lth_ok(
            "analyze", "speed", str(dead_run), "--round", "2", "--repeats", "1", "--threads", "1", capsys=capsys
        )
    finally:
        torch.set_num_threads(threads)
    assert "compact" in table and "1 threads" in table and "2:4" in table
    code, _, err = lth_in_process("analyze", "speed", str(dead_run.parent), "--round", "0", capsys=capsys)
    assert code == 2 and "not a run directory" in err and err.count("\n") == 1, err


def test_analyze_layers_counts_dead_units(dead_run, capsys):
    rows = json.loads(lth_ok("analyze", "layers", str(dead_run), "--json", capsys=capsys))
    fc1 = next(r for r in rows if r["round"] == 2 and r["layer"] == "fc1.weight")
    assert fc1["no_incoming"] >= 40 and fc1["dead_units"] >= 40
    assert next(r for r in rows if r["layer"] == "fc3.weight")["dead_units"] is None
    assert "dead units" in lth_ok("analyze", "layers", str(dead_run), capsys=capsys)


def test_every_round_records_its_dead_units_per_layer(fast_run):
    from lth.checkpoint import load_tensors

    metrics = json.loads((fast_run / "round_02" / "metrics.json").read_text())
    masks = load_tensors(fast_run / "round_02" / "mask.safetensors", "cpu")
    assert metrics["dead_units"] == compact.dead_units(masks, compact.mask_links("lenet_300_100", masks))
    assert metrics["dead_units"]["fc1.weight"]["units"] == 300
