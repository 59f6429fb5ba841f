"""An image tree streamed from disk (`dataset.stream=true`, lth/data/stream.py) trains exactly as the same tree
decoded into memory: the same validation split, statistics, batches and results, and a round resumed mid-epoch
asks the loader only for the batches it has not trained on."""

from __future__ import annotations

import pytest
import torch
from helpers import write_image_tree

from lth import data
from lth.config import ImageFolderDatasetConfig, ModelConfig, TrainConfig
from lth.data.imagefolder import STREAM_ABOVE, streams
from lth.errors import ConfigError
from lth.models import build
from lth.prune import dense_masks
from lth.train import Trainer

CPU = torch.device("cpu")
TRAIN = TrainConfig(batch_size=8, epochs=2, eval_every=3)  # 30 training images: 4 batches an epoch


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    write_image_tree(root, per_class=12)
    return write_image_tree(root, per_class=3, split="val", seed=1)


def folder(root, stream: str, workers: int = 0) -> ImageFolderDatasetConfig:
    return ImageFolderDatasetConfig(
        name="imagefolder", root=str(root), image_size=8, val_size=6, stream=stream, workers=workers
    )


def trained(dataset: data.Dataset, after_step=None, state=None):
    torch.manual_seed(0)
    model = build(ModelConfig(name="lenet_300_100"), dataset.input_shape, dataset.num_classes)
    trainer = Trainer(model, dense_masks(model), dataset, TRAIN, seed=0, round_index=1)
    if state is not None:
        trainer.load_state_dict(state)
    return trainer.run(after_step=after_step), model.state_dict()


def all_inputs(split: data.Examples) -> torch.Tensor:
    return torch.cat([x for x, _ in split.batches([slice(None)])])


@pytest.fixture(scope="module")
def in_memory(tree):
    """The tree decoded into memory and a round trained on it: (dataset, result, weights)."""
    dataset = data.load(folder(tree, "false"), seed=0, device=CPU)
    return dataset, *trained(dataset)


def test_a_streamed_tree_gives_the_in_memory_splits_and_trains_to_the_same_weights(tree, in_memory):
    memory, reference, weights = in_memory
    streamed = data.load(folder(tree, "true"), seed=0, device=CPU)
    assert type(memory.train) is data.Split and type(streamed.train) is not data.Split
    assert streamed.input_shape == memory.input_shape == (3, 8, 8)
    assert torch.equal(streamed.input_mean, memory.input_mean) and torch.equal(streamed.input_std, memory.input_std)
    for name in ("train", "val", "test"):
        mine, theirs = getattr(streamed, name), getattr(memory, name)
        assert torch.equal(mine.y, theirs.y) and torch.equal(all_inputs(mine), theirs.x), name
    index = torch.tensor([5, 0, 17])
    assert torch.equal(streamed.train.inputs(index), memory.train.inputs(index))  # a criterion's few examples
    result, streamed_weights = trained(streamed)
    assert result.history == reference.history and len(result.history) == 3  # steps 3, 6 and the end, 8
    assert all(torch.equal(streamed_weights[name], value) for name, value in weights.items())


def test_a_streamed_round_resumed_mid_epoch_skips_the_trained_batches_without_decoding_them(tree, in_memory):
    _, reference, weights = in_memory
    dataset = data.load(folder(tree, "true"), seed=0, device=CPU)
    saved = {}

    def stop(trainer: Trainer) -> None:
        if trainer.step == 6:  # the middle of the second epoch
            saved.update(trainer.state_dict())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trained(dataset, after_step=stop)
    result, resumed_weights = trained(dataset, state=saved)
    assert len(dataset.train.reader.sampler.batches) == 2  # steps 7 and 8 only were read from disk
    assert result.history == reference.history
    assert all(torch.equal(resumed_weights[name], value) for name, value in weights.items())


def test_stream_modes_and_an_unreadable_image_in_one_line(tree, tmp_path):
    budget = 1000
    assert not streams("false", 10**12, budget) and streams("true", 1, budget)
    assert streams("auto", int(STREAM_ABOVE * budget) + 1, budget) and not streams("auto", 250, budget)
    assert type(data.load(folder(tree, "auto"), seed=0, device=CPU).train) is data.Split  # a tiny tree: in memory
    broken = write_image_tree(tmp_path, per_class=4)
    write_image_tree(tmp_path, per_class=1, split="val")
    (broken / "train" / "class_1" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ConfigError) as error:
        data.load(folder(broken, "true", workers=0), seed=0, device=CPU)
    assert str(error.value).count("\n") == 0 and "2.png is not a readable image" in str(error.value)
    with pytest.raises(ConfigError, match=r"dataset.stream=maybe is not allowed; .* one of: auto, true, false"):
        folder(tree, "maybe")


@pytest.mark.slow
def test_streaming_through_worker_processes_trains_as_in_memory(tree, in_memory):
    _, reference, weights = in_memory
    result, streamed_weights = trained(data.load(folder(tree, "true", workers=2), seed=0, device=CPU))
    assert result.history == reference.history
    assert all(torch.equal(streamed_weights[name], value) for name, value in weights.items())
