"""Dataset readers on tiny files written in each real format (CIFAR pickles, SVHN .mat, image folders), checked
against torchvision's own readers where it has one; subsets, `dataset.like` and batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets
from PIL import Image

from lth import config, data
from lth.config import DatasetConfig, ImageFolderDatasetConfig, SyntheticDatasetConfig
from lth.data.augment import random_crop, random_crop_flip
from lth.data.cifar import write_batches
from lth.errors import ConfigError

CPU = torch.device("cpu")


def unchecked(cls: type) -> type:
    """torchvision's class without its MD5 checks (they pin the official files; ours are random)."""
    if hasattr(cls, "split_list"):  # SVHN
        attributes = {"split_list": {key: [url, file, None] for key, (url, file, _) in cls.split_list.items()}}
    else:  # CIFAR10, CIFAR100
        attributes = {name: [[file, None] for file, _ in getattr(cls, name)] for name in ("train_list", "test_list")}
        attributes["meta"] = {**cls.meta, "md5": None}
    return type(f"Unchecked{cls.__name__}", (cls,), attributes)


def write_cifar(folder: Path, dataset: str, n_train: int = 60, n_test: int = 20, seed: int = 0) -> tuple:
    classes = 10 if dataset == "cifar10" else 100
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8), np.arange(n_train) % classes
    test = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8), np.arange(n_test)[::-1] % classes
    write_batches(folder, dataset, train, test)
    return train, test


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        call(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


# CIFAR ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "tv_class", "folder"),
    [
        ("cifar10", torchvision.datasets.CIFAR10, "cifar-10-batches-py"),
        ("cifar100", torchvision.datasets.CIFAR100, "cifar-100-python"),
    ],
)
def test_cifar_pickles_read_like_torchvision(tmp_path, dataset, tv_class, folder):
    (train_x, train_y), (test_x, test_y) = write_cifar(tmp_path / folder, dataset, n_train=205)
    for train in (True, False):  # torchvision reads our files: the format is the real one
        tv = unchecked(tv_class)(str(tmp_path), train=train)
        x, y = (train_x, train_y) if train else (test_x, test_y)
        np.testing.assert_array_equal(tv.data, x.transpose(0, 2, 3, 1))
        assert tv.targets == y.tolist()
    raw = data.cifar.CIFAR10.read if dataset == "cifar10" else data.cifar.CIFAR100.read
    read = raw(DatasetConfig(name=dataset, root=str(tmp_path)))
    assert read.train_x.dtype == torch.uint8 and read.train_x.shape == (205, 3, 32, 32)
    assert torch.equal(read.train_x, torch.from_numpy(train_x)) and torch.equal(read.test_y, torch.from_numpy(test_y))
    loaded = data.load(DatasetConfig(name=dataset, root=str(tmp_path), val_size=5), seed=0, device=CPU)
    assert loaded.input_shape == (3, 32, 32)
    assert loaded.num_classes == (10 if dataset == "cifar10" else 100)
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (200, 5, 20)
    assert loaded.augment is random_crop_flip


def test_cifar_reads_flat_folders_and_bytes_keys(tmp_path):
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "data_batch_2"  # as Python 2 files read with encoding="bytes" look: bytes keys
    content = pickle.loads(batch.read_bytes())
    batch.write_bytes(pickle.dumps({key.encode(): value for key, value in content.items()}))
    loaded = data.load(DatasetConfig(name="cifar10", root=str(tmp_path), val_size=0), seed=0, device=CPU)
    assert len(loaded.train) == 60 and loaded.val is None


def test_cifar_truncated_batch_is_a_one_line_error_naming_it(tmp_path):
    write_cifar(tmp_path, "cifar10")
    batch = tmp_path / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    message = one_line_error(data.load, DatasetConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)
    assert str(batch) in message and "not a readable CIFAR pickle batch" in message


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path, "cifar10")

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": Payload()}))
    message = one_line_error(data.load, DatasetConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)
    assert "refusing to load builtins.print" in message and "test_batch" in message


def test_cifar100_files_in_a_cifar10_folder_are_named_as_such(tmp_path):
    write_cifar(tmp_path, "cifar10")
    meta = tmp_path / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": [str(i) for i in range(100)]}))
    message = one_line_error(data.load, DatasetConfig(name="cifar10", root=str(tmp_path)), seed=0, device=CPU)
    assert "batches.meta" in message and "label_names" in message


@pytest.mark.parametrize(
    ("dataset", "places"),
    [("cifar10", ["", "cifar10", "cifar-10-batches-py"]), ("cifar100", ["", "cifar100", "cifar-100-python"])],
)
def test_missing_cifar_names_every_place_looked(tmp_path, monkeypatch, dataset, places):
    monkeypatch.setenv("LTH_DATA", str(tmp_path))
    message = one_line_error(data.check, DatasetConfig(name=dataset))
    for place in places:
        assert f"{tmp_path / place}," in message or f"{tmp_path / place};" in message
    assert "/usr/share/datasets" in message and "dataset.download=true" in message


# SVHN ----------------------------------------------------------------------------------------------------------


def write_svhn(folder: Path, n_train: int = 40, n_test: int = 12) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # (row, column, channel, image), as MATLAB stores
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10; 10 is the digit 0
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = x, y
    return written


def test_svhn_reads_like_torchvision_with_10_meaning_digit_0(tmp_path):
    written = write_svhn(tmp_path)
    tv = unchecked(torchvision.datasets.SVHN)(str(tmp_path), split="train")
    raw = data.svhn.read_mat(tmp_path / "train_32x32.mat")
    np.testing.assert_array_equal(raw[0].numpy(), tv.data)
    np.testing.assert_array_equal(raw[1].numpy(), tv.labels)
    x, _ = written["train"]
    assert torch.equal(raw[0][3], torch.from_numpy(x[:, :, :, 3]).permute(2, 0, 1))  # image 3, channels first
    assert raw[1][:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    loaded = data.load(DatasetConfig(name="svhn", root=str(tmp_path), val_size=10), seed=0, device=CPU)
    assert loaded.input_shape == (3, 32, 32) and loaded.num_classes == 10
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (30, 10, 12)
    assert loaded.augment is random_crop  # no flips for digits


def test_svhn_in_a_subfolder_and_corrupt_file(tmp_path):
    write_svhn(tmp_path / "svhn")
    assert len(data.load(DatasetConfig(name="svhn", root=str(tmp_path), val_size=0), 0, CPU).train) == 40
    mat = tmp_path / "svhn" / "test_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    message = one_line_error(data.load, DatasetConfig(name="svhn", root=str(tmp_path)), seed=0, device=CPU)
    assert str(mat) in message and "MATLAB" in message


def test_svhn_rejects_labels_outside_1_to_10(tmp_path):
    write_svhn(tmp_path)
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])})
    message = one_line_error(data.load, DatasetConfig(name="svhn", root=str(tmp_path)), seed=0, device=CPU)
    assert "test_32x32.mat" in message and "1..10" in message


# Image folders -------------------------------------------------------------------------------------------------


def write_tree(root: Path, classes: dict[str, int], split: str = "train", seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            height, width = rng.integers(10, 40, 2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            image = Image.fromarray(pixels).convert("L" if i % 3 == 0 else "RGB")  # grey images become RGB
            image.save(root / split / name / f"{i}.png")


def test_image_folder_reads_an_imagenet_style_tree(tmp_path):
    write_tree(tmp_path, {"dog": 5, "cat": 3, "ant": 4})
    write_tree(tmp_path, {"dog": 2, "cat": 2, "ant": 1}, split="val", seed=1)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    cfg = ImageFolderDatasetConfig(name="imagefolder", root=str(tmp_path), image_size=16, val_size=2)
    loaded = data.load(cfg, seed=0, device=CPU)
    assert loaded.input_shape == (3, 16, 16) and loaded.num_classes == 3
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (10, 2, 5)
    assert loaded.augment is None
    tv = torchvision.datasets.ImageFolder(str(tmp_path / "train"))
    assert tv.class_to_idx == {"ant": 0, "cat": 1, "dog": 2}  # the same labels as torchvision's ImageFolder
    assert sorted(loaded.test.y.tolist()) == [0, 1, 1, 2, 2]


def test_image_folder_accepts_test_and_checks_classes_and_images(tmp_path):
    write_tree(tmp_path, {"a": 2, "b": 2})
    write_tree(tmp_path, {"a": 1, "c": 1}, split="test")
    cfg = ImageFolderDatasetConfig(name="imagefolder", root=str(tmp_path), image_size=8, val_size=0)
    message = one_line_error(data.load, cfg, seed=0, device=CPU)
    assert "only in train: b" in message and "only in test: c" in message
    (tmp_path / "test" / "c" / "0.png").rename(tmp_path / "test" / "a" / "9.png")
    (tmp_path / "test" / "c").rmdir()
    (tmp_path / "test" / "b").mkdir()
    broken = tmp_path / "train" / "b" / "1.png"
    broken.write_bytes(broken.read_bytes()[:60])
    message = one_line_error(data.load, cfg, seed=0, device=CPU)
    assert str(broken) in message and "not a readable image" in message
    broken.unlink()
    assert len(data.load(cfg, seed=0, device=CPU).train) == 3


def test_missing_image_folder_names_where_it_looked(tmp_path):
    cfg = ImageFolderDatasetConfig(name="imagefolder", root=str(tmp_path))
    message = one_line_error(data.check, cfg)
    assert str(tmp_path) in message and "train/<class>" in message and "download" not in message


# Subsets, dataset.like, config files ---------------------------------------------------------------------------


def test_subset_is_stratified_deterministic_and_bounded(tmp_path):
    n = 1000
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), np.arange(1, 11) * 20)[:n]  # unbalanced: 20, 40, ..., 200 per class
    rng.shuffle(labels)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    write_batches(tmp_path, "cifar10", (x, labels), (x[:10], labels[:10]))
    cfg = DatasetConfig(name="cifar10", root=str(tmp_path), val_size=100, subset=450)
    a, b, c = (data.load(cfg, seed=s, device=CPU) for s in (7, 7, 8))
    assert len(a.train) == 450 and len(a.val) == 100
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    full = data.load(DatasetConfig(name="cifar10", root=str(tmp_path), val_size=100), seed=7, device=CPU)
    expected = torch.bincount(full.train.y, minlength=10).double() * 450 / len(full.train)
    assert (torch.bincount(a.train.y, minlength=10) - expected).abs().max() < 1  # each class its rounded share
    message = one_line_error(
        data.load, DatasetConfig(name="cifar10", root=str(tmp_path), val_size=100, subset=901), 0, CPU
    )
    assert "dataset.subset=901" in message and "900" in message


def test_stratified_subset_rounding_adds_up():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    for size in range(1, 22):
        picked = data.stratified_subset(labels, size, torch.Generator().manual_seed(0))
        counts = torch.bincount(labels[picked], minlength=3)
        assert len(picked) == size == counts.sum() and counts.max() - counts.min() <= 1
        assert len(set(picked.tolist())) == size


@pytest.mark.parametrize(("like", "shape", "classes"), [("cifar10", (3, 32, 32), 10), ("cifar100", (3, 32, 32), 100)])
def test_synthetic_like_takes_a_real_datasets_shape(like, shape, classes):
    cfg = SyntheticDatasetConfig(
        name="synthetic", like=like, input_shape=[1, 5], train_size=300, test_size=20, val_size=50
    )
    loaded = data.load(cfg, seed=0, device=CPU)
    assert loaded.input_shape == shape and loaded.num_classes == classes


def test_config_files_compose_and_bad_values_are_one_line_errors():
    assert config.compose(["dataset=cifar10"]).dataset.val_size == 5000
    assert config.compose(["dataset=svhn"]).dataset.name == "svhn"
    folder = config.compose(["dataset=imagefolder", "dataset.image_size=32"]).dataset
    assert isinstance(folder, ImageFolderDatasetConfig) and folder.image_size == 32
    assert config.compose(["dataset=synthetic", "dataset.like=cifar10"]).dataset.like == "cifar10"
    message = one_line_error(config.compose, ["dataset=synthetic", "dataset.like=imagenet"])
    assert "dataset.like=imagenet" in message and "cifar10, cifar100, fashion_mnist, mnist, svhn" in message
    assert "dataset.image_size" in one_line_error(config.compose, ["dataset=imagefolder", "dataset.image_size=4"])
    assert "dataset.subset" in one_line_error(config.compose, ["dataset=cifar10", "dataset.subset=0"])


# Augmentation --------------------------------------------------------------------------------------------------


def reference_crop(image: torch.Tensor, padding: int) -> set[bytes]:
    """Every crop (and flipped crop) of one zero-padded image, as bytes, by plain slicing."""
    padded = torch.nn.functional.pad(image, (padding,) * 4)
    height, width = image.shape[1:]
    crops = set()
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + height, left : left + width]
            crops |= {crop.numpy().tobytes(), crop.flip(2).numpy().tobytes()}
    return crops


def test_random_crop_flip_is_a_per_image_shifted_flipped_crop():
    x = torch.randn(64, 3, 12, 10)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    for image, augmented in zip(x, out, strict=True):
        assert augmented.contiguous().numpy().tobytes() in reference_crop(image, 4)
    again = random_crop_flip(x, torch.Generator().manual_seed(0))
    other = random_crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    same = x[:1].expand(64, -1, -1, -1)  # one image 64 times: distinct offsets give distinct outputs
    assert len({a.numpy().tobytes() for a in random_crop_flip(same, torch.Generator().manual_seed(0))}) > 20


def test_random_crop_never_flips():
    # Every row counts 1..16, so a crop keeps the row increasing (zeros where it reads the padding) and a flip does not.
    x = torch.arange(1.0, 17.0).expand(200, 1, 5, 16).contiguous()
    middle = 2  # with padding 2 the middle row of a 5-row crop is always a real row, never padding

    def reversed_rows(out: torch.Tensor) -> int:
        return int((out[:, 0, middle, 7] > out[:, 0, middle, 8]).sum())  # columns 7, 8 are real for any shift

    assert reversed_rows(random_crop(x, torch.Generator().manual_seed(0), padding=2)) == 0
    assert 70 < reversed_rows(random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)) < 130  # about half


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_crop_flip_draws_the_same_on_cuda():
    x = torch.randn(32, 3, 32, 32)
    cpu = random_crop_flip(x, torch.Generator().manual_seed(3))
    cuda = random_crop_flip(x.cuda(), torch.Generator().manual_seed(3))
    assert torch.equal(cpu, cuda.cpu())
