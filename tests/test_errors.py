"""The bad-input battery: every mistake gets one line naming the problem, exit code 2, and changes nothing.

Each case runs the real CLI entry point against a small world of paths (an empty folder, a plain file, a
missing path, corrupt idx files, finished runs damaged in various ways) and checks that no file in that world
was created, changed or removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import FAST, lth_in_process, write_mnist_like

from lth.checkpoint import run_lock

# id: (arguments, fragments the one-line message must contain); {name} is a path in the world below
CASES: dict[str, tuple[list[str], list[str]]] = {
    "unknown model": (["run", "model=no_such_model"], ["model=no_such_model", "lenet_300_100, lstm, resnet110"]),
    "unknown torchvision model": (
        ["run", "model=torchvision", "model.name=resnet51"],
        ["model.name=resnet51", "torchvision.models classification constructor"],
    ),
    "width for a model without one": (["run", "model.width=32"], ["model.width=32", "resnet20"]),
    "model that does not fit the data": (
        ["run", *FAST, "model=vgg16"],
        ["model=vgg16 does not fit inputs of shape (1, 28, 28)"],
    ),
    "unknown dataset": (
        ["run", "dataset=imagenet"],
        ["dataset=imagenet", "cifar10, cifar100, fashion_mnist, imagefolder, mnist, shakespeare, svhn, synthetic"],
    ),
    "unknown stream mode": (
        ["run", "dataset=imagefolder", "dataset.stream=maybe"],
        ["dataset.stream=maybe", "one of: auto, true, false"],
    ),
    "negative data workers": (["run", "dataset=imagefolder", "dataset.workers=-1"], ["dataset.workers=-1", ">= 0"]),
    "replicates of a streamed image tree": (
        ["run", "dataset=imagefolder", "dataset.stream=true", "train.replicates=2"],
        ["train.replicates=2", "streams from disk (dataset.stream=true)", "dataset.stream=false"],
    ),
    "unknown prune option": (["run", "prune=sideways"], ["prune=sideways", "imp"]),
    "unknown train option": (["run", "train=resnet"], ["train=resnet", "lenet"]),
    "rate above one": (["run", "prune.rate=1.5"], ["prune.rate=1.5", "0 <= rate < 1"]),
    "negative rate": (["run", "prune.rate=-0.1"], ["prune.rate=-0.1", "0 <= rate < 1"]),
    "rate not a number": (["run", "prune.rate=abc"], ["prune.rate", "abc"]),
    "output rate of one": (["run", "prune.output_rate=1.0"], ["prune.output_rate=1.0", "or null"]),
    "negative rounds": (["run", "prune.rounds=-1"], ["prune.rounds=-1", ">= 0"]),
    "fractional rounds": (["run", "prune.rounds=2.5"], ["prune.rounds", "2.5"]),
    "unknown scope": (["run", "prune.scope=sideways"], ["prune.scope=sideways", "layerwise, global"]),
    "zero batch": (["run", "train.batch_size=0"], ["train.batch_size=0", ">= 1"]),
    "zero epochs": (["run", "train.epochs=0"], ["train.epochs=0", ">= 1"]),
    "zero learning rate": (["run", "train.lr=0"], ["train.lr=0", "> 0"]),
    "unknown optimizer": (["run", "train.optimizer=adagrad"], ["train.optimizer=adagrad", "adam, adamw, sgd"]),
    "negative momentum": (["run", "train.momentum=-0.5"], ["train.momentum=-0.5", ">= 0"]),
    "negative weight decay": (["run", "train.weight_decay=-1"], ["train.weight_decay=-1", ">= 0"]),
    "infinite learning rate": (["run", "train.lr=inf"], ["train.lr=inf", "finite"]),
    "learning rate that overflows": (["run", "train.lr=1e400"], ["train.lr=inf", "finite"]),
    "infinite weight decay": (["run", "train.weight_decay=inf"], ["train.weight_decay=inf", "finite"]),
    "momentum of 2": (["run", "train.momentum=2", "train.optimizer=sgd"], ["train.momentum=2", "< 1"]),
    "unknown key added with +": (["run", "+foo=bar"], ["foo: unknown config key", "seed"]),
    "misspelt key added with +": (["run", "+train.epoch=5"], ["train.epoch: unknown config key", "epochs"]),
    "misspelt key forced with ++": (["run", "++prune.rat=0.9"], ["prune.rat: unknown config key", "rate"]),
    "negative eval interval": (["run", "train.eval_every=-5"], ["train.eval_every=-5", ">= 0"]),
    "misspelt key": (["run", "train.epoch=3"], ["train.epoch", "unknown config key", "epochs"]),
    "unknown top-level key": (["run", "foo=1"], ["foo", "unknown config key", "seed"]),
    "seed not an int": (["run", "seed=abc"], ["seed", "abc"]),
    "negative seed": (["run", "seed=-1"], ["seed=-1", "0 <= seed"]),
    "rewind after the last epoch": (
        ["run", "prune.rewind_to=2ep", "train.epochs=2"],
        ["prune.rewind_to=2ep", "train.epochs=2"],
    ),
    "glob sweep": (["run", "-m", "model=glob(*)"], ["glob() and interval()"]),
    "unknown device": (["run", "device=tpu"], ["device=tpu", "auto, cpu, cuda or cuda:N"]),
    "unknown logger": (["run", "logger=neptune"], ["logger=neptune", "none, tensorboard, mlflow, wandb"]),
    "tracking URI without mlflow": (["run", "logger_uri=http://h:5000"], ["logger_uri=", "null unless logger=mlflow"]),
    "tracking URI without a scheme": (
        ["run", "logger=mlflow", "logger_uri=mlruns"],
        ["logger_uri=mlruns", "http://HOST:5000, file:///PATH or sqlite:///PATH, or null"],
    ),
    "online without wandb": (["run", "logger_online=true"], ["logger_online=True", "false unless logger=wandb"]),
    "project with a slash": (["run", "logger=wandb", "logger_project=a/b"], ["logger_project=a/b", "without /"]),
    "negative val size": (["run", "dataset.val_size=-1"], ["dataset.val_size=-1", ">= 0"]),
    "bad checkpoint interval": (["run", "checkpoint.every=often"], ["checkpoint.every=often", "500it or 1ep"]),
    "keep no checkpoints": (["run", "checkpoint.keep=0"], ["checkpoint.keep=0", ">= 1"]),
    "progress not a bool": (["run", "ui.progress=maybe"], ["ui.progress", "maybe"]),
    "synthetic key on mnist": (["run", "dataset=mnist", "dataset.num_classes=3"], ["dataset.num_classes"]),
    "val split too large": (
        ["run", "dataset=synthetic", "dataset.train_size=10", "dataset.val_size=50"],
        ["dataset.train_size=10", "dataset.val_size"],
    ),
    "empty input shape dim": (["run", "dataset=synthetic", "dataset.input_shape=[0,28]"], ["dataset.input_shape"]),
    "rewind point not a duration": (["run", "prune.rewind_to=soon"], ["prune.rewind_to=soon", "500it or 2ep"]),
    "rewind point beyond training": (
        ["run", *FAST, "prune.rewind_to=999it"],
        ["prune.rewind_to=999it", "not before the end"],
    ),
    "unknown criterion": (["run", "prune.criterion=snap"], ["prune.criterion=snap", "magnitude_increase, random"]),
    "unknown retrain mode": (
        ["run", "prune.retrain=again"],
        ["prune.retrain=again", "rewind, lr_rewind, finetune, reinit"],
    ),
    "target density above one": (
        ["run", "prune.schedule=oneshot", "prune.rounds=1", "prune.target_density=1.5"],
        ["prune.target_density=1.5", "0 < density <= 1"],
    ),
    "target density when iterative": (["run", "prune.target_density=0.1"], ["prune.target_density=0.1", "oneshot"]),
    "unknown distribution": (
        ["run", "prune.distribution=normal"],
        ["prune.distribution=normal", "uniform, global, erk"],
    ),
    "distribution against scope": (
        ["run", "prune.scope=global", "prune.distribution=erk"],
        ["prune.distribution=erk", "prune.scope=global"],
    ),
    "unknown control": (["run", "prune.control=placebo"], ["prune.control=placebo", "shuffle_layer, invert"]),
    "masks round without a source": (["run", "prune.masks_round=3"], ["prune.masks_round=3", "prune.masks_from"]),
    "masks from a missing run": (
        ["run", "prune.masks_from={missing}"],
        ["prune.masks_from={missing}", "not an lth run"],
    ),
    "masks from a run too short": (
        ["run", *FAST, "prune.masks_from={run}", "prune.rounds=5"],
        ["prune.masks_from={run}", "rounds 0..2 finished", "rounds 1..5"],
    ),
    "masks that do not fit the model": (
        ["run", *FAST, "dataset.input_shape=[1,10,10]", "prune.masks_from={run}"],
        ["prune.masks_from={run}", "fc1.weight is (300, 784) there, (300, 100) here"],
    ),
    "ignore pattern matching nothing": (["run", *FAST, "prune.ignore=[conv*]"], ["'conv*'", "fc1.weight, fc2.weight"]),
    "malformed override": (["run", "prune.rate=[0.2"], ["prune.rate=[0.2"]),
    "bad value in a sweep": (["run", "-m", "prune.rate=0.2,2.0"], ["prune.rate=2.0"]),
    "data root is empty": (["run", "dataset.root={empty}"], ["dataset.root", "{empty}", "dataset.download=true"]),
    "data root is a file": (["run", "dataset.root={file}"], ["dataset.root", "{file}"]),
    "data root is missing": (["run", "dataset=mnist", "dataset.root={missing}"], ["dataset.root", "{missing}"]),
    "corrupt idx data": (
        ["run", "dataset=mnist", "dataset.root={corrupt}", "dataset.val_size=10", "ui.progress=false"],
        ["{corrupt}/train-images-idx3-ubyte", "truncated"],
    ),
    "resume a missing path": (["resume", "{missing}"], ["{missing} is not an lth run directory"]),
    "resume an empty folder": (["resume", "{empty}"], ["{empty} is not an lth run directory"]),
    "resume a file": (["resume", "{file}"], ["{file} is not an lth run directory"]),
    "resume with a changed rate": (["resume", "{run}", "prune.rate=0.3"], ["prune.rate (0.2 -> 0.3)", "--force"]),
    "resume with an unknown key": (["resume", "{run}", "nonsense.key=1"], ["nonsense", "unknown config key"]),
    "resume with a malformed override": (
        ["resume", "{run}", "prune.rounds=[1"],
        ["cannot read overrides", "prune.rounds=[1"],
    ),
    "resume with a group change": (["resume", "{run}", "model=vgg16"], ["model=vgg16", "cannot change on resume"]),
    "resume damaged run.json": (["resume", "{bad_json}"], ["{bad_json}/run.json is not valid JSON"]),
    "resume another format": (["resume", "{old_format}"], ["outputs format 0", "reads format 1"]),
    "resume damaged config": (["resume", "{bad_config}"], ["{bad_config}/run.json holds no readable config"]),
    "resume a locked run": (["resume", "{locked}", "prune.rounds=5"], ["{locked} is in use by pid", "wait for it"]),
    "resume without a path": (["resume"], ["lth resume", "required: path"]),
    "resume with an unknown flag": (["resume", "{run}", "--bogus"], ["lth resume", "--bogus"]),
    "report an empty folder": (["report", "{empty}"], ["{empty} is not an lth run directory"]),
    "report a missing path": (["report", "{missing}"], ["{missing} is not an lth run directory"]),
    "report without a path": (["report"], ["lth report", "required: path"]),
    "unknown command": (["frobnicate"], ["unknown command 'frobnicate'", "run, resume, report"]),
}


@pytest.fixture
def world(tmp_path: Path, finished_template: Path) -> Iterator[dict[str, Path]]:
    paths = {
        name: tmp_path / name
        for name in ("empty", "file", "missing", "corrupt", "run", "bad_json", "old_format", "bad_config", "locked")
    }
    paths["empty"].mkdir()
    paths["file"].write_text("not a folder\n")
    write_mnist_like(paths["corrupt"], n_train=60, n_test=20)
    images = paths["corrupt"] / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    for name in ("run", "bad_json", "old_format", "bad_config", "locked"):
        shutil.copytree(finished_template, paths[name])
    (paths["bad_json"] / "run.json").write_text('{"status": "finis')
    record = json.loads((paths["old_format"] / "run.json").read_text())
    (paths["old_format"] / "run.json").write_text(json.dumps({**record, "format_version": 0}))
    (paths["bad_config"] / "run.json").write_text(json.dumps({**record, "format_version": 1, "config": "garbage"}))
    with run_lock(paths["locked"]):  # held by this test process for the duration of the case
        yield paths


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, world, tmp_path, capsys, monkeypatch):
    template, fragments = CASES[case]
    places = {name: str(path) for name, path in world.items()}
    args = [a.format(**places) for a in template]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # lth run hands its arguments to Hydra through sys.argv
    before = snapshot(tmp_path)
    code, _, err = lth_in_process(*args, capsys=capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.format(**places) in lines[0]
    assert snapshot(tmp_path) == before, "bad input created, changed or removed files"


def test_the_battery_is_at_least_thirty_strong():
    assert len(CASES) >= 30
