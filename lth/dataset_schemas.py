"""The schemas of datasets with keys of their own (synthetic data, image folders, text corpora): a leaf like
`lth.schema`, whose `DatasetConfig` they extend; `DATASET_SCHEMAS` names the datasets that take them."""

from __future__ import annotations

from dataclasses import dataclass, field

from lth.schema import DatasetConfig, require, require_choice

VOCABS = ("char", "byte")  # text datasets: the training split's characters (plus one unknown id) | UTF-8 bytes
# image trees: stream from disk when too large for memory (lth.data.imagefolder.STREAM_ABOVE) | always | never
STREAM_MODES = ("auto", "true", "false")


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    like: str | None = None  # take the input shape and class count of a real dataset (cifar10, mnist, ...)
    input_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    train_size: int = 2000
    test_size: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        shape_ok = len(self.input_shape) >= 1 and all(d >= 1 for d in self.input_shape)
        require(shape_ok, "dataset.input_shape", self.input_shape, "a list of positive sizes")
        require(self.num_classes >= 2, "dataset.num_classes", self.num_classes, "an integer >= 2")
        require(self.test_size >= 1, "dataset.test_size", self.test_size, "an integer >= 1")
        train_ok = self.train_size > self.val_size
        require(train_ok, "dataset.train_size", self.train_size, "an integer > dataset.val_size")


@dataclass
class ImageFolderDatasetConfig(DatasetConfig):
    image_size: int = 64  # every image is resized (shorter side) and centre-cropped to image_size x image_size
    # decode the tree into memory (false), or stream it from disk batch by batch (true; lth/data/stream.py); auto:
    # stream when the decoded tree would take more than a quarter of the memory available. Same results either way.
    stream: str = "auto"
    workers: int | None = None  # streaming: DataLoader worker processes (0: in this process); unset: one per core, <= 8

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.image_size >= 8, "dataset.image_size", self.image_size, "an integer >= 8")
        self.stream = str(self.stream).lower()  # `dataset.stream=true` arrives as the bool True, turned into "True"
        require_choice("dataset.stream", self.stream, STREAM_MODES)
        workers = self.workers
        require(workers is None or workers >= 0, "dataset.workers", workers, "an integer >= 0, or null (one per core)")


@dataclass
class TextDatasetConfig(DatasetConfig):
    """A text corpus for language models (lth/data/text.py): contiguous train, validation and test stretches of
    the text, the same for every seed; a training example is a window of `block_size` tokens."""

    val_size: int = 0  # not used: the validation split is dataset.val_fraction of the text
    # dataset.subset: train on a seed-fixed subset of N of the training windows (a shorter epoch); unset: all
    vocab: str = "char"  # char (the training split's characters, plus one unknown id) | byte (256)
    block_size: int = 128  # tokens per window (the context a language model trains and is evaluated on)
    val_fraction: float = 0.05  # the stretch after the training text, for early stopping
    test_fraction: float = 0.05  # the end of the text

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.val_size == 0, "dataset.val_size", self.val_size, "0 for a text dataset (dataset.val_fraction)")
        require_choice("dataset.vocab", self.vocab, VOCABS)
        require(self.block_size >= 1, "dataset.block_size", self.block_size, "an integer >= 1")
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            require(0 < value < 1, f"dataset.{key}", value, "a fraction with 0 < fraction < 1")
        held_out = self.val_fraction + self.test_fraction
        require(
            held_out < 1,
            "dataset.test_fraction",
            self.test_fraction,
            f"below {1 - self.val_fraction:g} (1 - dataset.val_fraction)",
        )


# Datasets whose config has keys beyond DatasetConfig's; their YAML files start from these schemas too.
DATASET_SCHEMAS: dict[str, type[DatasetConfig]] = {
    "synthetic": SyntheticDatasetConfig,
    "imagefolder": ImageFolderDatasetConfig,
    "shakespeare": TextDatasetConfig,
    "textfile": TextDatasetConfig,
}
