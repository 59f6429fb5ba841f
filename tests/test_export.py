"""`lth export` and `lth.load_ticket`: a standalone ticket that evaluates to its round's reported accuracy."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import lth_in_process, lth_ok
from safetensors.torch import load_file

import lth
from lth import data
from lth.checkpoint import read_run_record
from lth.config import from_container
from lth.train import evaluate

pytestmark = pytest.mark.usefixtures("wide_console")


def test_exported_ticket_evaluates_to_the_reported_accuracy(sweep_template, tmp_path, capsys):
    run_dir, out = sweep_template / "1", tmp_path / "ticket"
    printed = lth_ok("export", str(run_dir), "--round", "2", str(out), capsys=capsys)
    assert printed.startswith(f"wrote {out}: round 2")
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "mask.safetensors", "weights.safetensors"]
    card = json.loads((out / "card.json").read_text())
    metrics = json.loads((run_dir / "round_02" / "metrics.json").read_text())
    assert card["test_accuracy"] == metrics["test_accuracy"] and card["density"] == metrics["density"]
    assert card["layer_density"] == metrics["layer_density"]
    assert card["nonzero_parameters"] == metrics["remaining_parameters"]

    model = lth.load_ticket(out)
    cfg = from_container(read_run_record(run_dir)["config"], run_dir)
    dataset = data.load(cfg.dataset, cfg.seed, torch.device("cpu"))
    _, accuracy = evaluate(model, dataset.test)
    assert accuracy == metrics["test_accuracy"]  # exactly: the same weights, data and arithmetic

    mask, weights = load_file(out / "mask.safetensors"), load_file(out / "weights.safetensors")
    assert all(not weights[name][~keep].any() for name, keep in mask.items())
    # LeNet-300-100 on 8x8 inputs: 64·300 + 300·100 + 100·10 multiply-accumulates, each layer times its density
    dense = {"fc1.weight": 64 * 300, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    assert card["macs_per_example"]["per_layer_dense"] == dense
    assert card["macs_per_example"]["dense"] == sum(dense.values())
    expected = sum(macs * card["layer_density"][name] for name, macs in dense.items())
    assert card["macs_per_example"]["sparse"] == round(expected)
    assert card["command"].startswith("lth run ") and "seed=" in card["command"] and "prune.rate=" in card["command"]
    assert card["input_shape"] == [1, 8, 8] and card["num_classes"] == 10 and card["model"]["name"] == "lenet_300_100"


def test_start_weights_and_torchscript(sweep_template, tmp_path, capsys):
    run_dir, out = sweep_template / "0", tmp_path / "ticket"
    lth_ok(
        "export", str(run_dir), "--round", "1", str(out), "--weights", "start", "--format", "torchscript", capsys=capsys
    )
    start = load_file(run_dir / "round_01" / "start.safetensors")
    weights = load_file(out / "weights.safetensors")
    assert weights.keys() == start.keys() and all(torch.equal(weights[k], start[k]) for k in start)
    ticket = lth.load_ticket(out)
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    x = torch.randn(4, 1, 8, 8)
    assert torch.allclose(scripted(x), ticket(x))


def test_bad_export_input_is_one_line_exit_2(sweep_template, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    cases = [
        (["export", str(sweep_template / "0"), "--round", "5", str(tmp_path / "t")], "round 5 does not exist"),
        (["export", str(sweep_template / "0"), "--round", "1", str(taken)], "already exists"),
        (["export", str(sweep_template / "0"), str(tmp_path / "t")], "required: --round"),
    ]
    for args, message in cases:
        code, out, err = lth_in_process(*args, capsys=capsys)
        assert code == 2 and not out and err.startswith("lth: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "t").exists()
    with pytest.raises(lth.errors.ConfigError, match="not an lth ticket"):
        lth.load_ticket(tmp_path)
