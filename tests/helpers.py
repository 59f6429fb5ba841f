"""Shared test helpers: the tiny real experiment (`FAST`), idx files written from the format's spec, the real
`lth` command in a subprocess or in this process, and small pruning helpers. Imported as `from helpers import ...`
(pytest puts tests/ on the path); the fixtures built from them are in conftest.py."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# A tiny but real experiment: synthetic data, 2 pruning rounds, seconds on a CPU (lth/conf/debug/fast.yaml, a
# preset users can run too: `lth run +debug=fast`).
FAST = ["+debug=fast"]
# Attention's key bias adds q.b to a whole row of scores, which softmax ignores: its gradient is pure rounding,
# which Adam scales up to full-size steps, so runs equal to float rounding differ there by as much as two seeds.
ROUNDING_ONLY = "attn.k.bias"

_IDX_TYPE_CODES = {
    np.dtype("uint8"): 0x08,
    np.dtype("int8"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write `array` in the idx format (magic 0x0000, type code, ndim, big-endian dims, big-endian data)."""
    big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = struct.pack(">HBB", 0, _IDX_TYPE_CODES[big_endian.dtype], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + big_endian.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist_like(folder: Path, n_train: int = 120, n_test: int = 40, gz: bool = False, seed: int = 0) -> None:
    """The four idx files of an MNIST-family dataset, with small random 28x28 images."""
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8), gz)


def write_text_corpus(path: Path, words: int = 900, seed: int = 0) -> Path:
    """A small English-like UTF-8 text (about 4,000 characters) for language-model runs."""
    rng = np.random.default_rng(seed)
    vocabulary = "to be or not that is the question whether tis nobler in the mind to suffer slings and arrows"
    path.write_text(" ".join(rng.choice(vocabulary.split(" "), words)) + "\n", encoding="utf-8")
    return path


def tiny_gpt(corpus: Path, *extra: str) -> list[str]:
    """A one-layer GPT on windows of 16 characters of `corpus` (`dataset=textfile`): 23 steps an epoch, 1 pruning
    round, seconds on a CPU."""
    return [
        "model=gpt",
        "dataset=textfile",
        f"dataset.root={corpus}",
        "dataset.block_size=16",
        "model.n_layer=1",
        "model.n_embd=16",
        "model.n_head=2",
        "train.batch_size=8",
        "train.warmup=0",
        "train.lr=1e-2",
        "train.eval_every=10",
        "prune.rounds=1",
        "ui.progress=false",
        *extra,
    ]


def write_image_tree(root: Path, per_class: int, split: str = "train", classes: int = 3, seed: int = 0) -> Path:
    """An ImageNet-style tree `root/split/<class>/<i>.png` of small random PNGs (9 to 15 pixels a side, some grey),
    in the real on-disk format, written with Pillow."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label in range(classes):
        folder = root / split / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height, width = rng.integers(9, 16, 2)
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            (image.convert("L") if i % 4 == 0 else image).save(folder / f"{i}.png")
    return root


def lth(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real command line (`python -m lth ...`) and capture its output."""
    full_env = {key: value for key, value in os.environ.items() if key != "LTH_DATA"}
    full_env.update({"COLUMNS": "160", **(env or {})})
    result = subprocess.run(
        [sys.executable, "-m", "lth", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )
    if check and result.returncode != 0:
        raise AssertionError(f"lth {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def lth_in_process(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call the CLI's entry point in this process (no interpreter start-up); returns exit code, stdout, stderr."""
    from lth.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lth_ok(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`lth_in_process` that must succeed; returns what it printed."""
    code, out, err = lth_in_process(*args, capsys=capsys)
    assert code == 0, f"lth {' '.join(args)} exited {code}:\n{out}\n{err}"
    return out


def prune_by_magnitude(weights, masks, groups):
    """The ticket's pruning step: keep the largest |w| (the `magnitude` criterion)."""
    from lth.prune import prune_by_score

    return prune_by_score({name: weights[name].abs() for name in masks}, masks, groups)


def plan(model, cfg, masks, round_index):
    """The pruning plan of `round_index` for `model`, pruning from `masks`."""
    from lth.models import output_layer
    from lth.prune import plan_round

    return plan_round(masks, output_layer(model), cfg, round_index)
