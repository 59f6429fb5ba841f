"""Datasets: the idx reader on files written from the format's spec, search order, errors, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_idx, write_mnist_like

from lth import data
from lth.config import DatasetConfig, SyntheticDatasetConfig
from lth.data.idx import read_idx
from lth.errors import ConfigError

CPU = torch.device("cpu")


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", ["uint8", ">i4", ">i2", "int8"])
def test_read_idx_round_trips_every_layout(tmp_path, gz, dtype):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    path = write_idx(tmp_path / "x-idx3", array, gz=gz)
    read = read_idx(path)
    assert read.shape == (2, 3, 4)
    np.testing.assert_array_equal(read, array)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    path = write_idx(tmp_path / "x", np.zeros((5, 28, 28), np.uint8))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="truncated"):
        read_idx(path)
    (tmp_path / "y").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ConfigError, match="not an idx file"):
        read_idx(tmp_path / "y")


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_fashion_mnist_reads_both_layouts(tmp_path, layout, gz):
    folder = tmp_path if layout == "flat" else tmp_path / "FashionMNIST" / "raw"
    write_mnist_like(folder, n_train=120, n_test=40, gz=gz)
    dataset = data.load(DatasetConfig(name="fashion_mnist", root=str(tmp_path), val_size=20), seed=0, device=CPU)
    assert dataset.input_shape == (1, 28, 28)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (100, 20, 40)
    assert dataset.num_classes == 10
    assert dataset.train.x.dtype == torch.float32 and dataset.train.y.dtype == torch.int64
    assert abs(dataset.train.x.mean().item()) < 1e-4  # normalised with the training split's statistics


def test_search_order_is_root_then_lth_data(tmp_path, monkeypatch):
    write_mnist_like(tmp_path / "env" / "MNIST" / "raw", n_train=50)
    write_mnist_like(tmp_path / "explicit", n_train=70)
    monkeypatch.setenv("LTH_DATA", str(tmp_path / "env"))
    from_env = data.load(DatasetConfig(name="mnist", val_size=10), seed=0, device=CPU)
    assert len(from_env.train) == 40
    explicit = data.load(DatasetConfig(name="mnist", root=str(tmp_path / "explicit"), val_size=10), seed=0, device=CPU)
    assert len(explicit.train) == 60


def test_missing_data_names_every_place_looked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as error:
        data.check(DatasetConfig(name="fashion_mnist", root=str(empty)))
    message = str(error.value)
    assert "\n" not in message
    for place in (empty, empty / "fashion-mnist", empty / "FashionMNIST" / "raw"):
        assert str(place) in message
    assert "dataset.download=true" in message


def test_validation_split_is_fixed_per_seed_and_disjoint(tmp_path):
    write_mnist_like(tmp_path, n_train=200)
    cfg = DatasetConfig(name="mnist", root=str(tmp_path), val_size=50)
    a, b, c = (data.load(cfg, seed=s, device=CPU) for s in (3, 3, 4))
    assert torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    train_rows = {tuple(row.tolist()) for row in a.train.x.flatten(1)[:, :40]}
    assert not any(tuple(row.tolist()) in train_rows for row in a.val.x.flatten(1)[:, :40])


def test_val_size_larger_than_training_set_is_a_config_error(tmp_path):
    write_mnist_like(tmp_path, n_train=30)
    with pytest.raises(ConfigError, match=r"dataset.val_size=30"):
        data.load(DatasetConfig(name="mnist", root=str(tmp_path), val_size=30), seed=0, device=CPU)


def test_synthetic_data_takes_the_configured_shape_and_is_fixed():
    cfg = SyntheticDatasetConfig(
        name="synthetic", input_shape=[3, 8, 8], num_classes=4, train_size=90, test_size=30, val_size=10
    )
    first, again = data.load(cfg, 0, CPU), data.load(cfg, 0, CPU)
    assert first.input_shape == (3, 8, 8) and first.num_classes == 4
    assert torch.equal(first.test.x, again.test.x)
    assert set(first.train.y.tolist()) <= set(range(4))


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_system_folder():
    dataset = data.load(DatasetConfig(name="fashion_mnist"), seed=0, device=CPU)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (55_000, 5_000, 10_000)
    assert sorted(set(dataset.test.y.tolist())) == list(range(10))


def test_large_datasets_stay_uint8_on_the_device_and_normalise_per_batch(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, n_train=120, n_test=40)
    cfg = DatasetConfig(name="mnist", root=str(tmp_path), val_size=20)
    small = data.load(cfg, 0, torch.device("cpu"))
    monkeypatch.setattr(data, "FLOAT_CACHE_BYTES", 0)  # as if the data were larger than the float cache
    large = data.load(cfg, 0, torch.device("cpu"))
    assert small.train.images.dtype == torch.float32 and large.train.images.dtype == torch.uint8
    index = torch.tensor([3, 0, 17])
    assert torch.equal(large.train.inputs(index), small.train.inputs(index))
    assert torch.equal(large.test.x, small.test.x)
