"""Training under a mask: pruned weights and their optimiser state stay exactly zero; data order is seeded."""

from __future__ import annotations

import pytest
import torch
from helpers import plan, prune_by_magnitude

from lth import data
from lth.compile_guard import GuardedCompile
from lth.config import ModelConfig, PruneConfig, SyntheticDatasetConfig, TrainConfig
from lth.models import build, prunable_weights
from lth.prune import apply_masks, dense_masks
from lth.train import Trainer, evaluate, lr_schedule, training_sample


def small_setup(seed: int = 0):
    dataset = data.load(
        SyntheticDatasetConfig(name="synthetic", train_size=400, test_size=100, val_size=50), seed, torch.device("cpu")
    )
    torch.manual_seed(seed)
    model = build(ModelConfig(name="lenet_300_100"), dataset.input_shape, dataset.num_classes)
    return dataset, model


def pruned_setup():
    """`small_setup` magnitude-pruned to round 2 at rate 0.5: a quarter of each hidden layer left."""
    dataset, model = small_setup()
    masks = prune_by_magnitude(
        {n: w.detach() for n, w in prunable_weights(model).items()},
        dense_masks(model),
        plan(model, PruneConfig(rate=0.5), dense_masks(model), 2),
    )
    apply_masks(model, masks)
    return dataset, model, masks


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(optimizer="adam", lr=1e-3, batch_size=40, epochs=2, weight_decay=1e-4),
        TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, batch_size=40, epochs=2, weight_decay=1e-4),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_pruned_weights_and_optimizer_state_stay_zero(cfg):
    dataset, model, masks = pruned_setup()
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    trainer = Trainer(model, masks, dataset, cfg, seed=0, round_index=2)
    result = trainer.run()

    assert result.steps == 2 * 9  # ceil(350 / 40) per epoch
    for name, weight in prunable_weights(model).items():
        assert bool((weight[~masks[name]] == 0).all()), f"{name}: a pruned weight moved"
        assert not torch.equal(weight[masks[name]], before[name][masks[name]]), f"{name}: survivors did not train"
        state = trainer.optimizer.state[weight]
        assert state, f"{name}: no optimiser state to check"
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if key in state:
                assert bool((state[key][~masks[name]] == 0).all()), f"{name}: {key} leaked into pruned weights"


def test_training_is_deterministic_and_seeded():
    results = []
    for seed in (0, 0, 1):
        dataset, model = small_setup(seed)
        cfg = TrainConfig(batch_size=40, epochs=1, eval_every=3)
        Trainer(model, dense_masks(model), dataset, cfg, seed=seed, round_index=0).run()
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_early_stopping_bookkeeping():
    dataset, model = small_setup()
    cfg = TrainConfig(batch_size=40, epochs=2, eval_every=4)
    result = Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=0).run()
    steps = [e.step for e in result.history]
    assert steps == [4, 8, 12, 16, 18]  # every 4 steps and at the very end
    best_val = min(result.history, key=lambda e: e.val_loss)
    assert result.early_stop == best_val
    assert result.best_test_accuracy == max(e.test_accuracy for e in result.history)
    assert result.metrics()["early_stop_step"] == best_val.step


def test_training_accuracy_is_measured_on_the_same_seeded_sample_of_the_training_split_in_every_round():
    dataset, model = small_setup()
    sample, again = training_sample(dataset, seed=0), training_sample(dataset, seed=0)
    assert len(sample) == len(dataset.val) == 50 and torch.equal(sample.images, again.images)
    assert not torch.equal(sample.images, training_sample(dataset, seed=1).images)
    same = sample.images.flatten(1)[:, None] == dataset.train.images.flatten(1)[None]
    assert same.all(2).any(1).all()  # training examples only
    cfg = TrainConfig(batch_size=40, epochs=1, eval_every=4)
    result = Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=3).run()
    last = result.history[-1]
    assert (last.train_loss, last.train_accuracy) == pytest.approx(evaluate(model, sample))
    assert result.metrics()["train_accuracy"] == last.train_accuracy


class StopAt(Exception):
    pass


@pytest.mark.parametrize(
    ("stop_step", "precision"), [(1, "32"), (7, "32"), (9, "32"), (13, "32"), (18, "32"), (7, "fp16"), (9, "bf16")]
)  # mid-epoch, epoch boundary (9), last step; the fp16 loss scale is part of the state
def test_a_round_continued_from_its_state_dict_is_bit_identical(stop_step, precision, tmp_path):
    cfg = TrainConfig(optimizer="adam", batch_size=40, epochs=2, eval_every=4, precision=precision)
    dataset, model = small_setup()
    masks = dense_masks(model)
    reference = Trainer(model, masks, dataset, cfg, seed=0, round_index=1).run()
    reference_weights = {k: v.clone() for k, v in model.state_dict().items()}

    def stop(trainer: Trainer) -> None:
        if trainer.step == stop_step:
            torch.save(trainer.state_dict(), tmp_path / "state.pt")
            raise StopAt

    dataset, model = small_setup()
    with pytest.raises(StopAt):
        Trainer(model, masks, dataset, cfg, seed=0, round_index=1).run(after_step=stop)
    torch.manual_seed(12345)  # a fresh process would start with another RNG state
    _, fresh_model = small_setup(seed=5)
    resumed = Trainer(fresh_model, masks, dataset, cfg, seed=0, round_index=1)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    result = resumed.run()
    assert all(torch.equal(fresh_model.state_dict()[k], v) for k, v in reference_weights.items())
    assert result.history == reference.history and result.steps == reference.steps


def test_step_schedule_decays_at_milestones_after_a_linear_warmup():
    cfg = TrainConfig(lr=0.1, epochs=4, lr_schedule="step", milestones=["2ep", "30it"], gamma=0.1, warmup="5it")
    lr_at = lr_schedule(cfg, per_epoch=10)
    assert [round(lr_at(s), 6) for s in (0, 4, 5, 19, 20, 29, 30, 39)] == [
        0.02,
        0.1,
        0.1,
        0.1,
        0.01,
        0.01,
        0.001,
        0.001,
    ]


def test_cosine_schedule_starts_at_lr_and_ends_near_zero():
    lr_at = lr_schedule(TrainConfig(lr=0.1, epochs=1, lr_schedule="cosine"), per_epoch=100)
    assert lr_at(0) == pytest.approx(0.1) and lr_at(50) == pytest.approx(0.05) and lr_at(99) < 1e-4


def test_the_optimizer_takes_each_step_at_the_scheduled_rate():
    dataset, model = small_setup()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=40, epochs=2, lr_schedule="step", milestones=["1ep"])
    trainer = Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=0)
    seen = []
    trainer.run(after_step=lambda t: seen.append(t.optimizer.param_groups[0]["lr"]))
    per_epoch = trainer.steps_per_epoch
    assert seen == pytest.approx([0.1] * per_epoch + [0.01] * per_epoch)
    assert [e.lr for e in trainer.history] == pytest.approx([0.1, 0.01])


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_keeps_pruned_weights_at_zero(precision):
    dataset, model, masks = pruned_setup()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    losses = {}
    for run_precision in ("32", precision):
        model.load_state_dict(start)
        cfg = TrainConfig(batch_size=40, epochs=2, precision=run_precision)
        trainer = Trainer(model, masks, dataset, cfg, seed=0, round_index=1)
        losses[run_precision] = trainer.run().final.test_loss
        assert all(bool((w[~masks[n]] == 0).all()) for n, w in prunable_weights(model).items())
    assert (trainer.scaler is not None) == (precision == "fp16")
    assert losses[precision] == pytest.approx(losses["32"], rel=0.01), "mixed precision trains like float32"


def test_channels_last_trains_a_conv_net_like_the_default_layout():
    dataset = data.load(
        SyntheticDatasetConfig(name="synthetic", like="cifar10", train_size=120, test_size=40, val_size=20),
        0,
        torch.device("cpu"),
    )
    weights = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build(ModelConfig(name="conv2"), dataset.input_shape, dataset.num_classes)
        cfg = TrainConfig(optimizer="sgd", lr=0.01, batch_size=25, epochs=1, channels_last=channels_last)
        Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=0).run()
        weights.append(model.state_dict())
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])


@pytest.mark.slow
def test_compiled_training_matches_eager():
    weights = []
    for compiled in (False, True):
        dataset, model = small_setup()
        cfg = TrainConfig(batch_size=40, epochs=1, compile=compiled)
        Trainer(model, dense_masks(model), dataset, cfg, seed=0, round_index=0).run()
        weights.append(model.state_dict())
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])


def test_a_model_that_cannot_compile_trains_eagerly_with_a_warning(monkeypatch):
    def broken_compiler(model):  # what a missing C++ toolchain looks like from the outside: the first call fails
        def compiled(x):
            raise RuntimeError("no compiler here")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compiler)
    guarded = GuardedCompile(torch.nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="train.compile: torch.compile failed"):
        out = guarded(torch.ones(3, 4))
    assert out.shape == (3, 2) and guarded.compiled is None


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_eager_optimisers_step_as_torchs_own(optimizer):
    """lth.optim's optimisers skip torch's dynamo guards (seconds of start-up): the same steps, the same state,
    and a state dict that torch's own class loads."""
    from lth.optim import _CLASSES, make_optimizer

    cfg = TrainConfig(optimizer=optimizer, lr=0.01, momentum=0.9, weight_decay=1e-3)
    models = [torch.nn.Linear(6, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    theirs = _CLASSES[optimizer](models[1].parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True,
                                 **({"momentum": cfg.momentum} if optimizer == "sgd" else {}))  # fmt: skip
    ours = make_optimizer(models[0].parameters(), cfg)
    assert type(ours).__name__ == f"Eager{type(theirs).__name__}" and isinstance(ours, type(theirs))
    x = torch.randn(8, 6)
    for _ in range(3):
        for model, opt in zip(models, (ours, theirs), strict=True):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
            assert not any(p.grad_fn for p in model.parameters())  # the step ran under no_grad
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True))
    state = ours.state_dict()
    assert str(state) == str(theirs.state_dict())
    _CLASSES[optimizer](models[1].parameters(), lr=cfg.lr).load_state_dict(state)
