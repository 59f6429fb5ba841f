"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches of Krizhevsky's distribution (2009).

https://www.cs.toronto.edu/~kriz/cifar.html: each batch is a pickled dict whose `data` is a uint8 array of shape
(N, 3072), one row per image, the 1024 red, then green, then blue values in row-major order, and whose labels
are a list of N ints: `labels` for CIFAR-10 (files data_batch_1..5, test_batch, meta batches.meta with
`label_names`), `fine_labels` (and `coarse_labels`) for CIFAR-100 (files train, test, meta with `fine_label_names`).
The files were written by Python 2, so they are read with latin-1 as torchvision does. They may lie flat in a
folder or in torchvision's `cifar-10-batches-py/` / `cifar-100-python/` subfolder.

Unpickling can run arbitrary code, so only the few globals a pickled NumPy array needs are allowed.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lth.data.augment import random_crop_flip
from lth.data.files import FileSource
from lth.data.registry import RawData
from lth.errors import ConfigError
from lth.schema import DatasetConfig

_IMAGE_BYTES = 3 * 32 * 32
# What pickled NumPy arrays refer to (NumPy 1 and 2 module names, protocol 2 bytes via _codecs); nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}, which a CIFAR batch never holds")
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return _checked_reconstruct(found)
        if name == "dtype":
            return _checked_dtype
        return found


def _checked_reconstruct(reconstruct: Any) -> Any:
    """NumPy's `_reconstruct(cls, shape, typecode)` allocates `shape` before the array's data is read; NumPy
    always pickles shape (0,) there (the real shape comes with the data, which NumPy checks against it), so a
    file claiming more would only make us allocate what it names (10^13 elements: a MemoryError, or swap)."""

    def checked(subtype: Any, shape: Any, typecode: Any) -> Any:
        if not isinstance(shape, tuple) or not all(isinstance(d, int) for d in shape) or math.prod(shape) != 0:
            raise pickle.UnpicklingError(f"an array header claims shape {shape!r} before its data (NumPy writes (0,))")
        return reconstruct(subtype, shape, typecode)

    return checked


def _checked_dtype(*args: Any) -> np.dtype:
    """np.dtype, refusing object arrays: their elements are arbitrary pickles, and NumPy allocates one pointer per
    element the header claims before reading any of them."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects, which a CIFAR batch never holds")
    return dtype


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR pickle (a batch or the meta file) as a dict with str keys."""
    try:
        with path.open("rb") as file:
            batch = _ArrayUnpickler(file, encoding="latin1").load()
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror or error}); check its permissions") from None
    except MemoryError:
        raise ConfigError(f"{path} claims more memory than this machine has; it is not a CIFAR batch") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path} is not a readable CIFAR pickle batch ({reason}); download it again") from None
    if not isinstance(batch, dict):
        raise ConfigError(f"{path} is not a CIFAR pickle batch (it holds a {type(batch).__name__}, not a dict)")
    # Python 2 pickles read with encoding="bytes" (or written from Python 3 with bytes keys) have bytes keys.
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}


@dataclass(frozen=True)
class CifarDataset(FileSource):
    train_files: tuple[str, ...] = ()
    test_file: str = ""
    meta_file: str = ""
    label_key: str = ""  # labels of a batch
    names_key: str = ""  # class names in the meta file
    num_classes: int = 10

    def files_in(self, folder: Path) -> dict[str, Path] | None:
        names = {**{f"train{i}": name for i, name in enumerate(self.train_files)}, "test": self.test_file}
        found = {key: folder / name for key, name in {**names, "meta": self.meta_file}.items()}
        return found if all(path.is_file() for path in found.values()) else None

    def decode(self, files: dict[str, Path], cfg: DatasetConfig) -> RawData:
        class_names = read_batch(files.pop("meta")).get(self.names_key)
        if not isinstance(class_names, list) or len(class_names) != self.num_classes:
            raise ConfigError(
                f"{files['test'].parent / self.meta_file} does not name the {self.num_classes} classes of "
                f"{self.name} under '{self.names_key}'; is this the other CIFAR?"
            )
        test_path = files.pop("test")
        test = self._images(test_path)
        train = [self._images(path) for path in files.values()]
        train_paths = list(files.values())
        trained_from = str(train_paths[0]) if len(train_paths) == 1 else f"{train_paths[0]}..{train_paths[-1].name}"
        return RawData(
            train_x=torch.cat([x for x, _ in train]),
            train_y=torch.cat([y for _, y in train]),
            test_x=test[0],
            test_y=test[1],
            num_classes=self.num_classes,
            augment=random_crop_flip,  # objects in CIFAR photos have no preferred left-right orientation
            origin={
                "train_x": trained_from,
                "train_y": trained_from,
                "test_x": str(test_path),
                "test_y": str(test_path),
            },
        )

    def _images(self, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        batch = read_batch(path)
        data, labels = batch.get("data"), batch.get(self.label_key)
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != _IMAGE_BYTES
        ):
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ConfigError(f"{path}: 'data' must be a uint8 array of shape (N, {_IMAGE_BYTES}), found {found}")
        if not isinstance(labels, list | tuple | np.ndarray) or len(labels) != len(data):
            count = len(labels) if isinstance(labels, list | tuple | np.ndarray) else "none"
            raise ConfigError(f"{path}: '{self.label_key}' must hold one label per image ({len(data)}), found {count}")
        try:
            array = np.asarray(labels)
        except (TypeError, ValueError, OverflowError):
            array = np.asarray([None])
        if array.ndim != 1 or array.dtype.kind not in "iu":
            found = f"{array.dtype} of shape {array.shape}" if array.dtype != object else "other values"
            raise ConfigError(f"{path}: '{self.label_key}' must be a flat list of integer labels, found {found}")
        y = torch.as_tensor(array.astype(np.int64))
        if len(y) and not (int(y.min()) >= 0 and int(y.max()) < self.num_classes):
            raise ConfigError(
                f"{path}: labels must lie in 0..{self.num_classes - 1}, found {int(y.min())}..{int(y.max())}"
            )
        # Rows are channel-major (R plane, G plane, B plane), so a reshape gives (N, C, H, W) without a copy.
        return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), y


CIFAR10 = CifarDataset(
    "cifar10",
    ("cifar10", "cifar-10-batches-py"),
    "python pickle batches (data_batch_1..5, test_batch, batches.meta)",
    "CIFAR10",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_file="test_batch",
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = CifarDataset(
    "cifar100",
    ("cifar100", "cifar-100-python"),
    "python pickle files (train, test, meta)",
    "CIFAR100",
    train_files=("train",),
    test_file="test",
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)
_DATASETS = {dataset.name: dataset for dataset in (CIFAR10, CIFAR100)}
for _dataset in _DATASETS.values():
    _dataset.register()


def write_batches(
    folder: Path, dataset: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> None:
    """Write images (N, 3, 32, 32) uint8 and labels as the CIFAR distribution's pickle files (for tests, benchmarks).

    Keys are str and the protocol is 2, as Python 2's cPickle wrote them, so torchvision reads the files too.
    """
    spec = _DATASETS[dataset]
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.arange(len(train[1])), len(spec.train_files))

    def dump(name: str, content: dict[str, Any]) -> None:
        with (folder / name).open("wb") as file:
            pickle.dump(content, file, protocol=2)

    def batch(label: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        return {
            "batch_label": label,
            "data": np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), _IMAGE_BYTES),
            spec.label_key: [int(v) for v in y],
            "filenames": [f"image_{i}.png" for i in range(len(x))],
            **({"coarse_labels": [int(v) // 5 for v in y]} if spec.num_classes == 100 else {}),  # 20 superclasses
        }

    for name, rows in zip(spec.train_files, chunks, strict=True):
        dump(name, batch(f"training batch {name}", train[0][rows], train[1][rows]))
    dump(spec.test_file, batch("testing batch 1 of 1", *test))
    dump(spec.meta_file, {spec.names_key: [f"class_{i}" for i in range(spec.num_classes)]})
