"""Hostile input, issue 23: data files whose format is fine but whose content is not, outputs that cannot be
written, damaged run records, and command lines Hydra would answer with a traceback or a page of usage.

Each case builds its own small world under tmp_path, runs the real CLI entry point in this process (the
closed-pipe case also as a real process), and checks one line on stderr naming the problem (no traceback),
the exit code (2: bad input; 1: the input is fine but an output or a run's record is damaged) and that no file
under tmp_path was created, changed or removed (paths, sizes and modification times).
"""

from __future__ import annotations

import functools
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from helpers import FAST, lth_in_process, lth_ok, write_idx, write_mnist_like
from PIL import Image

from lth.data.cifar import write_batches

RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, under its NumPy 1 or 2 module name

# Arguments that make a data-reading run fast once its data passes (it must not: every data case fails).
MNIST = ["run", "dataset=mnist", "dataset.root={data}", "dataset.val_size=10", "ui.progress=false", "prune.rounds=0"]
CIFAR = ["run", "dataset=cifar10", "dataset.root={data}", "dataset.val_size=5", "ui.progress=false", "prune.rounds=0"]
SVHN = ["run", "dataset=svhn", "dataset.root={data}", "dataset.val_size=5", "ui.progress=false", "prune.rounds=0"]
FOLDER = [
    "run",
    "dataset=imagefolder",
    "dataset.root={data}",
    "dataset.image_size=8",
    "dataset.val_size=1",
    "ui.progress=false",
    "prune.rounds=0",
]
TRAIN_LABELS, TEST_LABELS = "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"
TRAIN_IMAGES, TEST_IMAGES = "train-images-idx3-ubyte", "t10k-images-idx3-ubyte"


# Most data cases read the data through `lth export` of a finished run whose recorded config names the data (no
# Hydra composition: a tenth of the time of `lth run`); the cases in THROUGH_RUN go through `lth run` and Hydra's
# run directory, which must be removed again. Both reach the same readers and checks (`lth.data.load`).
EXPORT = ["export", "{run}", "--round", "0", "{tmp}/ticket"]
THROUGH_RUN = {
    "idx label 200",
    "idx empty test set",
    "cifar header claiming 10^13 elements",
    "svhn label 11",
    "image folder with one class",
}
_DATASET_OVERRIDES = {"MNIST": MNIST, "CIFAR": CIFAR, "SVHN": SVHN, "FOLDER": FOLDER}


@functools.cache
def _dataset_section(kind: str) -> dict:
    """The `dataset` part of a run record for the data of `kind` (composed once per session)."""
    from lth import config

    overrides = [o for o in _DATASET_OVERRIDES[kind] if o.startswith("dataset") and "{" not in o]
    return config.to_container(config.compose(overrides))["dataset"]


def point_run_at(run: Path, kind: str, data: Path) -> None:
    """Make `run`'s recorded config read its dataset from `data` (what `lth export` then loads)."""
    record = json.loads((run / "run.json").read_text())
    record["config"]["dataset"] = {**_dataset_section(kind), "root": str(data)}
    (run / "run.json").write_text(json.dumps(record))


# World builders: each gets the case's data folder and its finished run (a copy of the 2-round template).


def mnist(change: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        write_mnist_like(data, n_train=60, n_test=20)
        change(data)

    return build


def raw_idx(path: Path, type_code: int, dims: list[int], payload: bytes) -> None:
    path.write_bytes(bytes([0, 0, type_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload)


def nan_pixel(data: Path) -> None:
    images = np.random.default_rng(0).random((60, 28, 28)).astype(np.float32)
    images[3, 4, 5] = np.nan
    write_idx(data / TRAIN_IMAGES, images)


def inf_test_pixel(data: Path) -> None:
    images = np.zeros((20, 28, 28), np.float32)
    images[0, 0, 0] = np.inf
    write_idx(data / TEST_IMAGES, images)


def cifar(change: Callable[[Path], None] | None = None) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        rng = np.random.default_rng(0)
        train = rng.integers(0, 256, (50, 3, 32, 32), dtype=np.uint8), np.arange(50) % 10
        test = rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8), np.arange(20) % 10
        write_batches(data, "cifar10", train, test)
        if change is not None:
            change(data)

    return build


class _HugeHeader:
    """Pickles as an array whose _reconstruct header claims `shape` (NumPy writes (0,)) and whose state is `state`."""

    def __init__(self, shape: tuple[int, ...], state: tuple) -> None:
        self.shape, self.state = shape, state

    def __reduce__(self):
        return (RECONSTRUCT, (np.ndarray, self.shape, b"b"), self.state)


def cifar_test_batch(content: dict) -> Callable[[Path], None]:
    def change(data: Path) -> None:
        (data / "test_batch").write_bytes(pickle.dumps(content, protocol=2))

    return change


def svhn(x: np.ndarray | None = None, y: np.ndarray | None = None) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        good_x = np.zeros((32, 32, 3, 10), np.uint8)
        good_y = (np.arange(10) % 10 + 1).astype(np.uint8).reshape(10, 1)
        scipy.io.savemat(data / "train_32x32.mat", {"X": good_x, "y": good_y})
        scipy.io.savemat(data / "test_32x32.mat", {"X": good_x if x is None else x, "y": good_y if y is None else y})

    return build


def tree(train: dict[str, int], test: dict[str, int]) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        for split, classes in (("train", train), ("val", test)):
            (data / split).mkdir(parents=True, exist_ok=True)
            for name, count in classes.items():
                (data / split / name).mkdir(exist_ok=True)
                for i in range(count):
                    Image.fromarray(np.full((12, 12, 3), i * 20, np.uint8)).save(data / split / name / f"{i}.png")

    return build


def run_file(relative: str, text: str) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        (run / relative).write_text(text)

    return build


def edit_metrics(round_index: int, edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        path = run / f"round_{round_index:02d}" / "metrics.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return build


def without(key: str) -> Callable[[dict], dict]:
    return lambda metrics: {k: v for k, v in metrics.items() if k != key}


def remove(relative: str) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        target = run / relative
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return build


def nothing(data: Path, run: Path) -> None:
    pass


def make(relative: str, kind: str = "file") -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        path = data.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if kind == "dir" else path.write_text("x\n")

    return build


def lmc_result(text: str) -> Callable[[Path, Path], None]:
    def build(data: Path, run: Path) -> None:
        (run / "analysis").mkdir()
        (run / "analysis" / "lmc_round_01.json").write_text(text)

    return build


# id: (world builder, arguments, exit code, fragments of the one line); {data}, {run}, {tmp} are paths.
Case = tuple[Callable[[Path, Path], None], list[str], int, list[str]]
CASES: dict[str, Case] = {
    # 1. Data content -------------------------------------------------------------------------------------------
    "idx label 200": (
        mnist(lambda d: write_idx(d / TRAIN_LABELS, np.full(60, 200, np.uint8))),
        MNIST,
        2,
        ["{data}/" + TRAIN_LABELS, "labels must lie in 0..9", "200"],
    ),
    "idx label -1 as int8": (
        mnist(lambda d: write_idx(d / TEST_LABELS, np.full(20, -1, np.int8))),
        MNIST,
        2,
        ["{data}/" + TEST_LABELS, "0..9", "found -1..-1"],
    ),
    "idx labels of shape (N, 1)": (
        mnist(lambda d: write_idx(d / TRAIN_LABELS, np.zeros((60, 1), np.uint8))),
        MNIST,
        2,
        ["{data}/" + TRAIN_LABELS, "1 dimension(s)", "(60, 1)"],
    ),
    "idx float labels": (
        mnist(lambda d: write_idx(d / TRAIN_LABELS, np.zeros(60, np.float32))),
        MNIST,
        2,
        ["{data}/" + TRAIN_LABELS, "labels must be integers"],
    ),
    "idx fewer training labels than images": (
        mnist(lambda d: write_idx(d / TRAIN_LABELS, np.zeros(50, np.uint8))),
        MNIST,
        2,
        ["{data}/" + TRAIN_LABELS, "50 labels for the 60 images", TRAIN_IMAGES],
    ),
    "idx fewer test labels than images": (
        mnist(lambda d: write_idx(d / TEST_LABELS, np.zeros(15, np.uint8))),
        MNIST,
        2,
        ["{data}/" + TEST_LABELS, "15 labels for the 20 images"],
    ),
    "idx more test images than labels": (
        mnist(lambda d: write_idx(d / TEST_IMAGES, np.zeros((30, 28, 28), np.uint8))),
        MNIST,
        2,
        ["{data}/" + TEST_LABELS, "20 labels for the 30 images"],
    ),
    "idx test images of another shape": (
        mnist(lambda d: write_idx(d / TEST_IMAGES, np.zeros((20, 14, 14), np.uint8))),
        MNIST,
        2,
        ["{data}/" + TEST_IMAGES, "(1, 14, 14)", "(1, 28, 28)"],
    ),
    "idx empty test set": (
        mnist(
            lambda d: (
                write_idx(d / TEST_IMAGES, np.zeros((0, 28, 28), np.uint8)),
                write_idx(d / TEST_LABELS, np.zeros(0, np.uint8)),
            )
        ),
        MNIST,
        2,
        ["{data}/" + TEST_IMAGES, "test images are empty"],
    ),
    "idx empty training set": (
        mnist(
            lambda d: (
                write_idx(d / TRAIN_IMAGES, np.zeros((0, 28, 28), np.uint8)),
                write_idx(d / TRAIN_LABELS, np.zeros(0, np.uint8)),
            )
        ),
        MNIST,
        2,
        ["{data}/" + TRAIN_IMAGES, "training images are empty"],
    ),
    "idx header with 255 dimensions": (
        mnist(lambda d: raw_idx(d / TRAIN_IMAGES, 0x08, [1] * 255, b"\x00")),
        MNIST,
        2,
        ["{data}/" + TRAIN_IMAGES, "255 dimensions", "have 3"],
    ),
    "idx header with 0 dimensions": (
        mnist(lambda d: raw_idx(d / TRAIN_LABELS, 0x08, [], b"")),
        MNIST,
        2,
        ["{data}/" + TRAIN_LABELS, "0 dimensions"],
    ),
    "idx header claiming 10^13 bytes": (
        mnist(lambda d: raw_idx(d / TRAIN_IMAGES, 0x08, [10**5, 10**4, 10**4], b"\x00" * 100)),
        MNIST,
        2,
        ["{data}/" + TRAIN_IMAGES, "truncated", "10000000000000 bytes"],
    ),
    "idx images flattened to 2 dimensions": (
        mnist(lambda d: write_idx(d / TRAIN_IMAGES, np.zeros((60, 784), np.uint8))),
        MNIST,
        2,
        ["{data}/" + TRAIN_IMAGES, "3 dimension(s)", "(60, 784)"],
    ),
    "idx NaN pixel in float images": (mnist(nan_pixel), MNIST, 2, ["{data}/" + TRAIN_IMAGES, "1 values are NaN"]),
    "idx infinite test pixel": (mnist(inf_test_pixel), MNIST, 2, ["{data}/" + TEST_IMAGES, "NaN or infinite"]),
    "idx bad magic number": (
        mnist(lambda d: (d / TEST_LABELS).write_bytes(b"PK\x03\x04" + bytes(20))),
        MNIST,
        2,
        ["{data}/" + TEST_LABELS, "not an idx file"],
    ),
    "idx damaged gzip": (
        mnist(
            lambda d: ((d / TRAIN_LABELS).unlink(), (d / (TRAIN_LABELS + ".gz")).write_bytes(b"\x1f\x8b" + bytes(30)))
        ),
        MNIST,
        2,
        [TRAIN_LABELS + ".gz", "damaged gzip"],
    ),
    "image folder with one class": (
        tree({"cat": 3}, {"cat": 1}),
        FOLDER,
        2,
        ["{data}/train holds one class folder (cat)", "at least 2"],
    ),
    "image folder with an empty training class": (
        tree({"cat": 3, "dog": 0}, {"cat": 1, "dog": 1}),
        FOLDER,
        2,
        ["{data}/train/dog holds no images", "every training class"],
    ),
    "image folder without classes": (tree({}, {}), FOLDER, 2, ["{data}/train and {data}/val", "at least one"]),
    "image folder with a broken image": (
        lambda d, r: (tree({"a": 2, "b": 2}, {"a": 1, "b": 1})(d, r), (d / "train/b/1.png").write_bytes(b"\x89PNG")),
        FOLDER,
        2,
        ["{data}/train/b/1.png is not a readable image"],
    ),
    "cifar header claiming 10^13 elements": (
        cifar(cifar_test_batch({"data": _HugeHeader((10**13,), (1, (0,), np.dtype("u1"), False, b"")), "labels": []})),
        CIFAR,
        2,
        ["{data}/test_batch", "claims shape (10000000000000,)"],
    ),
    "cifar array state claiming 10^13 elements": (
        cifar(
            cifar_test_batch(
                {
                    "data": _HugeHeader((0,), (1, (10**13 // 3072, 3072), np.dtype("u1"), False, bytes(3072))),
                    "labels": [],
                }
            )
        ),
        CIFAR,
        2,
        ["{data}/test_batch", "buffer size does not match"],
    ),
    "cifar array of objects": (
        cifar(cifar_test_batch({"data": _HugeHeader((0,), (1, (10**9,), np.dtype("O"), False, [0])), "labels": []})),
        CIFAR,
        2,
        ["{data}/test_batch", "Python objects"],
    ),
    "cifar labels not a list": (
        cifar(cifar_test_batch({"data": np.zeros((20, 3072), np.uint8), "labels": 7})),
        CIFAR,
        2,
        ["{data}/test_batch", "'labels' must hold one label per image (20), found none"],
    ),
    "cifar float labels": (
        cifar(cifar_test_batch({"data": np.zeros((2, 3072), np.uint8), "labels": [0.5, 1.5]})),
        CIFAR,
        2,
        ["{data}/test_batch", "integer labels", "float64"],
    ),
    "cifar label out of range": (
        cifar(cifar_test_batch({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]})),
        CIFAR,
        2,
        ["{data}/test_batch", "0..9", "0..10"],
    ),
    "cifar float images": (
        cifar(cifar_test_batch({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]})),
        CIFAR,
        2,
        ["{data}/test_batch", "must be a uint8 array"],
    ),
    "cifar batch holding a list": (
        cifar(cifar_test_batch([1, 2, 3])),  # type: ignore[arg-type]
        CIFAR,
        2,
        ["{data}/test_batch", "holds a list, not a dict"],
    ),
    "svhn images without an image axis": (
        svhn(x=np.zeros((32, 32, 3), np.uint8)),
        SVHN,
        2,
        ["{data}/test_32x32.mat", "(32, 32, 3, N)"],
    ),
    "svhn fractional labels": (
        svhn(y=np.full((10, 1), 1.5)),
        SVHN,
        2,
        ["{data}/test_32x32.mat", "whole-number labels"],
    ),
    "svhn label 11": (
        svhn(y=np.full((10, 1), 11, np.uint8)),
        SVHN,
        2,
        ["{data}/test_32x32.mat", "1..10", "11..11"],
    ),
    # 2. Outputs and damaged run records ------------------------------------------------------------------------
    "export to /proc": (
        nothing,
        ["export", "{run}", "--round", "1", "/proc/exp"],
        1,
        ["cannot write the ticket to /proc/exp"],
    ),
    "export under a file": (
        make("a_file"),
        ["export", "{run}", "--round", "1", "{tmp}/a_file/ticket"],
        1,
        ["cannot write the ticket to {tmp}/a_file/ticket", "Not a directory"],
    ),
    "export a missing run": (
        nothing,
        ["export", "/nonexistent/run", "--round", "0", "{tmp}/ticket"],
        2,
        ["/nonexistent/run is not an lth run directory"],
    ),
    "export a missing round": (
        nothing,
        ["export", "{run}", "--round", "9", "{tmp}/ticket"],
        2,
        ["{run}: round 9 does not exist", "rounds 0..2"],
    ),
    "export into a non-empty folder": (
        make("full/x"),
        ["export", "{run}", "--round", "1", "{tmp}/full"],
        2,
        ["{tmp}/full already exists"],
    ),
    "export a round with damaged metrics": (
        run_file("round_01/metrics.json", '{"density": 0.'),
        ["export", "{run}", "--round", "1", "{tmp}/ticket"],
        1,
        ["{run}/round_01/metrics.json", "SHA-256"],
    ),
    "plot to /proc": (
        nothing,
        ["report", "{run}", "--plot", "/proc/x.png"],
        1,
        ["cannot write the figure /proc/x.png"],
    ),
    "plot dir under /proc": (
        nothing,
        ["report", "{run}", "--plot-dir", "/proc/figures"],
        1,
        ["cannot write figures into --plot-dir /proc/figures"],
    ),
    "plot dir on a file": (
        make("a_file"),
        ["report", "{run}", "--plot-dir", "{tmp}/a_file"],
        2,
        ["--plot-dir {tmp}/a_file is a file"],
    ),
    "plot dir inside a file": (
        make("a_file"),
        ["report", "{run}", "--plot-dir", "{tmp}/a_file/figures"],
        2,
        ["--plot-dir {tmp}/a_file/figures is inside {tmp}/a_file, which is a file"],
    ),
    "plot on a folder": (
        make("figures", "dir"),
        ["report", "{run}", "--plot", "{tmp}/figures"],
        2,
        ["--plot {tmp}/figures is a folder", "--plot-dir"],
    ),
    "plot not a png": (
        nothing,
        ["report", "{run}", "--plot", "{tmp}/results.pdf"],
        2,
        ["results.pdf: name a .png file"],
    ),
    "plot inside a file": (
        make("a_file"),
        ["report", "{run}", "--plot", "{tmp}/a_file/x.png"],
        2,
        ["--plot {tmp}/a_file/x.png: {tmp}/a_file is a file"],
    ),
    "plot with a damaged lmc result": (
        lmc_result('{"points": [{"alpha": 0'),
        ["report", "{run}", "--plot", "{tmp}/x.png"],
        1,
        ["{run}/analysis/lmc_round_01.json is not a readable lth analyze lmc result"],
    ),
    "plot with an lmc result of the wrong shape": (
        lmc_result('{"points": 3}'),
        ["report", "{run}", "--plot", "{tmp}/x.png"],
        1,
        ["{run}/analysis/lmc_round_01.json is not an lth analyze lmc result"],
    ),
    "report truncated metrics": (
        run_file("round_01/metrics.json", '{"density": 0.8, "test_acc'),
        ["report", "{run}"],
        1,
        ["{run}/round_01/metrics.json", "round 1 of {run} is damaged", "not valid JSON"],
    ),
    "report metrics holding a list": (
        run_file("round_02/metrics.json", "[1, 2]"),
        ["report", "{run}"],
        1,
        ["{run}/round_02/metrics.json", "round 2", "holds a list"],
    ),
    "report metrics with a text density": (
        edit_metrics(1, lambda m: {**m, "density": "high"}),
        ["report", "{run}"],
        1,
        ["round 1", "'density'", "must be a number", "'high'"],
    ),
    "report metrics without test accuracy": (
        edit_metrics(0, without("test_accuracy")),
        ["report", "{run}", "--json"],
        1,
        ["{run}/round_00/metrics.json", "round 0", "no 'test_accuracy'"],
    ),
    "report metrics with a bad history": (
        edit_metrics(1, lambda m: {**m, "history": [{"step": "one"}]}),
        ["report", "{run}", "--plot", "{tmp}/x.png"],
        1,
        ["round 1", "'history'", "a list of evaluations"],
    ),
    "report metrics with a bad early-stop step": (
        edit_metrics(2, lambda m: {**m, "early_stop_step": 2.5}),
        ["report", "{run}", "--csv"],
        1,
        ["round 2", "'early_stop_step'", "an integer or null"],
    ),
    "report a missing round folder": (
        remove("round_01"),
        ["report", "{run}"],
        1,
        ["{run}/round_01 is missing, but round_02 exist", "damaged"],
    ),
    "report a missing metrics file": (
        remove("round_02/metrics.json"),
        ["report", "{run}"],
        1,
        ["{run}/round_02/metrics.json", "round 2", "missing"],
    ),
    "report a run.json that is a folder": (
        lambda d, r: ((r / "run.json").unlink(), (r / "run.json").mkdir()),
        ["report", "{run}"],
        2,
        ["{run}/run.json is a folder"],
    ),
    "analyze overlap truncated metrics": (
        run_file("round_01/metrics.json", "{"),
        ["analyze", "overlap", "{run}"],
        1,
        ["{run}/round_01/metrics.json", "round 1", "not valid JSON"],
    ),
    "analyze overlap metrics of the wrong shape": (
        run_file("round_01/metrics.json", '"finished"'),
        ["analyze", "overlap", "{run}", "--json"],
        1,
        ["{run}/round_01/metrics.json", "round 1", "holds a str"],
    ),
    "export past a missing round": (
        remove("round_01"),
        ["export", "{run}", "--round", "2", "{tmp}/ticket"],
        1,
        ["{run}/round_01 is missing, but round_02 exist"],
    ),
    "analyze lmc past a missing round": (
        remove("round_00"),
        ["analyze", "lmc", "{run}", "--round", "1"],
        1,
        ["{run}/round_00 is missing"],
    ),
    "analyze layers with a missing round": (
        remove("round_00"),
        ["analyze", "layers", "{run}"],
        1,
        ["{run}/round_00 is missing", "round_01, round_02"],
    ),
    "analyze lmc one point": (nothing, ["analyze", "lmc", "{run}", "--round", "1", "--points", "1"], 2, ["--points 1"]),
    "analyze without an analysis": (nothing, ["analyze"], 2, ["lth analyze", "required"]),
    "export an unknown weights choice": (
        nothing,
        ["export", "{run}", "--round", "1", "{tmp}/t", "--weights", "best"],
        2,
        ["--weights", "invalid choice: 'best'"],
    ),
    "report json and csv together": (nothing, ["report", "{run}", "--json", "--csv"], 2, ["--csv", "not allowed with"]),
    "report bad rounds": (nothing, ["report", "{run}", "--rounds", "a,b"], 2, ["--rounds", "0,3,6"]),
    # 3. Command lines ------------------------------------------------------------------------------------------
    "run with an unknown flag": (nothing, ["run", "--bogus"], 2, ["unknown flag --bogus", "lth run --help"]),
    "run with an unknown short flag": (nothing, ["run", "-x", "seed=1"], 2, ["unknown flag -x", "lth run --help"]),
    "run with an unknown flag and value": (nothing, ["run", "--epochs=3"], 2, ["unknown flag --epochs=3"]),
    "run with --cfg and no value": (nothing, ["run", "--cfg"], 2, ["--cfg needs a value"]),
    "run with a bad --cfg value": (nothing, ["run", "--cfg", "everything"], 2, ["--cfg everything", "job, hydra, all"]),
    "run a sweep with --cfg": (nothing, ["run", "-m", "--cfg", "job"], 2, ["--multirun and --cfg cannot be combined"]),
    "run with --info and --cfg": (nothing, ["run", "--info", "--cfg=job"], 2, ["--info and --cfg cannot be combined"]),
    "value list without -m": (
        nothing,
        ["run", "prune.rate=0.2,0.3"],
        2,
        ["prune.rate=0.2,0.3", "add -m", "prune.rate=[0.2,0.3]", "prune.rate='0.2,0.3'"],
    ),
    "range sweep without -m": (nothing, ["run", "seed=range(3)"], 2, ["seed=range(3)", "add -m"]),
    "remove the prune group": (nothing, ["run", "~prune"], 2, ["~prune", "imp, imp_conv", "oneshot"]),
    "remove the model group": (nothing, ["run", "~model"], 2, ["~model", "lenet_300_100", "resnet20"]),
    "non-ASCII run dir": (
        nothing,
        ["run", "hydra.run.dir=runs/é"],
        2,
        ["'é' cannot appear in an unquoted value", "hydra.run.dir='runs/é'"],
    ),
    "Greek run dir": (nothing, ["run", "hydra.run.dir=Ω"], 2, ["'Ω'", "quote the value"]),
    "unquoted space in the run dir": (
        nothing,
        ["run", "hydra.run.dir=my", "runs"],
        2,
        ["'runs'", "key=value", "'hydra.run.dir=my'", "quote that value"],
    ),
    "quote inside a value": (
        nothing,
        ["run", "hydra.run.dir=it's"],
        2,
        ["cannot parse override", 'hydra.run.dir="it\'s"'],
    ),
    "run with an unknown config name": (nothing, ["run", "-cn", "paper"], 2, ["-cn paper: no such config", "config"]),
    "run with --config-name and no value": (nothing, ["run", "--config-name"], 2, ["--config-name needs a value"]),
    "override without a key": (nothing, ["run", "=3"], 2, ["'=3' has no key"]),
    "override with two equals signs": (nothing, ["run", "seed==3"], 2, ["cannot parse override 'seed==3'"]),
    "LTH_THREADS not a number": (nothing, ["run", "seed=1", "@LTH_THREADS=abc"], 2, ["LTH_THREADS='abc'", ">= 1"]),
    "LTH_THREADS zero": (nothing, ["run", "seed=1", "@LTH_THREADS=0"], 2, ["LTH_THREADS='0'", ">= 1"]),
    "LTH_JOBS not a number": (nothing, ["run", "-m", "seed=0,1", "@LTH_JOBS=abc"], 2, ["LTH_JOBS='abc'", ">= 1"]),
    "LTH_JOBS negative": (nothing, ["run", "seed=1", "@LTH_JOBS=-2"], 2, ["LTH_JOBS='-2'", "whole number"]),
    # 4. Group options are names from conf/<group>/, nothing else -----------------------------------------------
    "model given as a path": (
        nothing,
        ["run", "model=../../../../tmp/x"],
        2,
        ["model=../../../../tmp/x: no such model", "lenet_300_100"],
    ),
    "the model schema as a model": (nothing, ["run", "model=base_model"], 2, ["model=base_model: no such model"]),
    "the prune schema as a method": (nothing, ["run", "prune=base_prune"], 2, ["prune=base_prune", "imp, imp_conv"]),
    "an unknown experiment": (nothing, ["run", "+experiment=paper"], 2, ["experiment=paper", "frankle2019_lenet"]),
    "an unknown model in a sweep": (
        nothing,
        ["run", "-m", "model=lenet5,lenet6"],
        2,
        ["model=lenet6: no such model", "lenet5"],
    ),
    "a new run in an existing run's folder": (
        nothing,
        ["run", *FAST, "seed=3", "hydra.run.dir={run}"],
        2,
        ["{run} already holds a run", "lth resume {run}"],
    ),
    "resume onto another model, forced": (
        nothing,
        ["resume", "{run}", "model.name=lenet5", "--force"],
        2,
        ["resume cannot change model.name (lenet_300_100 -> lenet5), even with --force"],
    ),
    "resume onto other data, forced": (
        nothing,
        ["resume", "{run}", "dataset.num_classes=3", "--force"],
        2,
        ["dataset.num_classes (10 -> 3)", "even with --force"],
    ),
    # 5. Values that cannot train ---------------------------------------------------------------------------------
    "every layer ignored": (
        nothing,
        ["run", *FAST, "prune.ignore=[*]", "hydra.run.dir={tmp}/r"],
        2,
        ["prune.ignore=['*'] leaves no prunable weight", "prune.rounds=0"],
    ),
    "a bad subset in one job of a sweep": (
        nothing,
        ["run", "-m", *FAST, "dataset.subset=300,999999", "hydra.sweep.dir={tmp}/sweep"],
        2,
        ["dataset.subset=999999 is not allowed", "at most the 500 training examples"],
    ),
    "a rewind point past one job's round": (
        nothing,
        ["run", "-m", *FAST, "prune.rewind_to=5,50", "hydra.sweep.dir={tmp}/sweep"],
        2,
        ["prune.rewind_to=50 is step 50, not before the end of a round (10 steps"],
    ),
    "a preset's key the chosen dataset lacks": (
        nothing,
        ["run", *FAST, "dataset=mnist"],
        2,
        ["In 'debug/fast': dataset.train_size: unknown config key", "keys allowed under 'dataset': name, root"],
    ),
    "download while offline": (
        nothing,
        ["run", "dataset=cifar10", "dataset.download=true", "dataset.root={tmp}/dl/cifar", "hydra.run.dir={tmp}/r"],
        2,
        ["dataset.download: torchvision could not download cifar10"],
    ),
}


@pytest.fixture
def world(tmp_path: Path, finished_template: Path) -> dict[str, Path]:
    run = tmp_path / "run"
    shutil.copytree(finished_template, run)
    return {"data": tmp_path / "data", "run": run, "tmp": tmp_path}


def snapshot(folder: Path) -> dict[str, tuple[int, int] | str]:
    """Every path under `folder`: files with their size and modification time, folders as such."""
    out: dict[str, tuple[int, int] | str] = {}
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        out[str(path.relative_to(folder))] = "dir" if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lth: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input(case, world, tmp_path, capsys, monkeypatch):
    build, template, expected_code, fragments = CASES[case]
    build(world["data"], world["run"])
    kind = next((kind for kind, args in _DATASET_OVERRIDES.items() if template is args), None)
    if kind is not None and case not in THROUGH_RUN:
        point_run_at(world["run"], kind, world["data"])
        template = EXPORT
    places = {name: str(path) for name, path in world.items()}
    args = []
    for arg in template:
        if arg.startswith("@"):  # an environment variable for this case
            name, _, value = arg[1:].partition("=")
            monkeypatch.setenv(name, value)
        else:
            args.append(arg.format(**places))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # lth run hands its arguments to Hydra through sys.argv
    monkeypatch.delenv("LTH_DATA", raising=False)
    before = snapshot(tmp_path)
    code, _, err = lth_in_process(*args, capsys=capsys)
    line = one_line(err)
    assert code == expected_code, line
    for fragment in fragments:
        assert fragment.format(**places) in line, line
    assert snapshot(tmp_path) == before, "hostile input created, changed or removed files"


def test_a_reader_that_stops_reading_ends_the_report_quietly(fast_run, tmp_path, capsys, monkeypatch):
    """`lth report RUN | head`: once the pipe is closed, no BrokenPipeError traceback, exit code 1."""

    class ClosedPipe:
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    code, _, err = lth_in_process("report", str(fast_run), "--json", capsys=capsys)
    assert code == 1 and err == ""


def test_a_closed_pipe_is_quiet_in_a_real_process(fast_run, tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "report", str(fast_run), "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before lth writes a byte
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1 and err == "", err


@pytest.mark.slow  # a real interpreter and a whole run: about 8 s
def test_a_run_trains_on_when_the_reader_of_its_output_goes(tmp_path):
    """`lth run ... | head -1`: the run is not killed half-way with its record saying `running`; it finishes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lth", "run", *FAST, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()  # `head -1`: one line, then the reader is gone
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


def test_a_relative_data_root_means_the_launch_folder_when_the_job_changes_directory(tmp_path, capsys, monkeypatch):
    write_mnist_like(tmp_path / "digits", n_train=150, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    args = ["dataset=mnist", "dataset.root=digits", "dataset.val_size=50", "prune.rounds=0", "train.epochs=1"]
    lth_ok("run", *args, "hydra.job.chdir=true", "hydra.run.dir=run", capsys=capsys)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["dataset"]["root"] == str(tmp_path / "digits")


def test_a_warm_up_longer_than_training_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    """A recipe's warm-up in a run made shorter (a smoke test at train.epochs=1) trains, and says what it means."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    out = lth_ok("run", *FAST, "prune.rounds=0", "train.warmup=2ep", f"hydra.run.dir={tmp_path / 'r'}", capsys=capsys)
    assert "warning: train.warmup=2ep is 20 steps, longer than a round (10 steps)" in out and "at most 10it" in out


def test_run_help_offers_only_options_a_user_can_choose(capsys):
    out = lth_ok("run", "--help", capsys=capsys)
    assert "model: conv2, conv4" in out and "== Config ==" in out
    assert "base_" not in out.split("== Config ==")[0]


def test_the_quoting_advice_works(tmp_path, capsys, monkeypatch):
    """What the non-ASCII message says to write composes (the command is only printed, --cfg job)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    code, _, err = lth_in_process("run", "--cfg", "job", "hydra.run.dir='runs/é'", *FAST, capsys=capsys)
    assert code == 0, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda t: (t / "card.json").write_text('{"format": 1}'), "is not an lth ticket card"),
        (lambda t: (t / "card.json").write_text("{"), "no readable card.json"),
        (lambda t: (t / "weights.safetensors").write_bytes(b"\x00" * 16), "does not hold this ticket's weights"),
    ],
    ids=["card without a model", "truncated card", "damaged weights"],
)
def test_load_ticket_refuses_a_damaged_ticket_in_one_line(fast_run, tmp_path, capsys, damage, fragment):
    from lth.errors import ConfigError
    from lth.export import load_ticket

    ticket = tmp_path / "ticket"
    assert lth_in_process("export", str(fast_run), "--round", "1", str(ticket), capsys=capsys)[0] == 0
    damage(ticket)
    with pytest.raises(ConfigError, match=fragment) as error:
        load_ticket(ticket)
    assert "\n" not in str(error.value)


def test_the_battery_is_broad():
    assert len(CASES) >= 60
    assert CASES.keys() >= THROUGH_RUN
