"""The language-model task end to end (issue 20): `lth run model=gpt|lstm dataset=textfile`, its metrics (bits per
character), AdamW with pruned weights, ticket transfer between corpora, and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import lth_in_process, lth_ok, tiny_gpt, write_text_corpus
from safetensors.torch import load_file


def tiny(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny_gpt(corpus, f"hydra.run.dir={run_dir}", *extra)


def metrics(run_dir: Path, round_index: int) -> dict:
    return json.loads((run_dir / f"round_{round_index:02d}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("text") / "corpus.txt")


@pytest.fixture(scope="module")
def gpt_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT trained with AdamW and weight decay (the gpt recipe's), 2 rounds."""
    from lth.cli import main  # in this process (a module fixture has no capsys for lth_ok)

    run_dir = tmp_path_factory.mktemp("gpt") / "run"
    main(["run", *tiny(corpus, run_dir, "train.weight_decay=0.1")])
    return run_dir


def test_a_gpt_run_reports_loss_bits_per_character_and_next_token_accuracy(gpt_run):
    record = json.loads((gpt_run / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["train"]["optimizer"] == "adamw"
    dense, pruned = metrics(gpt_run, 0), metrics(gpt_run, 1)
    assert dense["task"] == "language_model" and all(pruned["checks"].values())
    assert dense["test_bpc"] == pytest.approx(dense["test_loss"] / math.log(2))
    assert dense["early_stop_val_bpc"] == pytest.approx(dense["early_stop_val_loss"] / math.log(2))
    # 23 steps from a uniform guess over 17 characters (log2 17 = 4.09 bits) learn the letter frequencies at least
    assert dense["early_stop_test_bpc"] < 3.9 and 0.1 < dense["test_accuracy"] < 1
    layers = pruned["layer_density"]  # projections, MLP and the tied embedding (the output layer): no norms, positions
    assert set(layers) == {
        f"blocks.0.{m}.weight" for m in ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.fc", "mlp.proj")
    } | {"tok_embed.weight"}
    assert layers["tok_embed.weight"] == pytest.approx(0.9, abs=0.01)  # the output layer at half the rate


def test_adamw_weight_decay_leaves_pruned_weights_exactly_zero(gpt_run):
    mask = load_file(gpt_run / "round_01" / "mask.safetensors")
    final = load_file(gpt_run / "round_01" / "final.safetensors")
    for name, keep in mask.items():
        assert (keep == 0).any() and torch.all(final[name][keep == 0] == 0), name
        assert torch.all(final[name][keep == 1] != 0), name  # the survivors trained (and decayed), not zeroed


def test_the_report_leads_with_bits_per_character_for_a_language_model(gpt_run, capsys, wide_console):
    rows = json.loads(lth_ok("report", str(gpt_run), "--json", capsys=capsys))
    assert [r["round"] for r in rows] == [0, 1] and all("early_stop_test_bpc" in r for r in rows)
    table = lth_ok("report", str(gpt_run), capsys=capsys)
    assert "bpc (early stop)" in table and "acc (early stop)" not in table


def test_an_lstm_trains_and_prunes_its_gate_matrices(corpus, tmp_path, capsys):
    run_dir = tmp_path / "lstm"
    args = tiny(corpus, run_dir, "model=lstm", "model.hidden=16", "model.n_embd=8")
    args = [a for a in args if not a.startswith(("model.n_head", "model.n_embd=16"))]
    lth_ok("run", *args, capsys=capsys)
    layers = metrics(run_dir, 1)["layer_density"]
    assert set(layers) == {"tok_embed.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "head.weight"}
    assert layers["lstm.weight_hh_l0"] == pytest.approx(0.8, abs=0.01) and layers["head.weight"] == pytest.approx(
        0.9, abs=0.01
    )


@pytest.mark.slow  # two runs
def test_a_ticket_transfers_between_two_corpora_of_one_byte_vocabulary(corpus, tmp_path, capsys):
    other = write_text_corpus(tmp_path / "other.txt", seed=1)
    source, target = tmp_path / "source", tmp_path / "target"
    lth_ok("run", *tiny(corpus, source, "dataset.vocab=byte"), capsys=capsys)
    lth_ok("run", *tiny(other, target, "dataset.vocab=byte", f"prune.masks_from={source}"), capsys=capsys)
    ours, theirs = (load_file(d / "round_01" / "mask.safetensors") for d in (target, source))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


GPT_KEYS = ("model.n_",)  # keys of model=gpt's schema that other models' schemas lack
TEXT_KEYS = ("dataset.block_size", "dataset.root")


@pytest.mark.parametrize(
    ("extra", "drop", "message"),
    [
        (["dataset.block_size=300"], (), "dataset.block_size=300 is not allowed; the val split holds"),
        (["model.n_embd=15"], (), "model.n_embd=15 is not allowed; model.n_embd must be a multiple of model.n_head=2"),
        (["dataset.val_fraction=0.0001"], (), "dataset.val_fraction=0.0001 is not allowed with dataset.test_fraction"),
        (["model.block_size=8"], (), "model.block_size=8 is not allowed; model.block_size must be at least"),
        (["dataset=synthetic"], TEXT_KEYS, "model=gpt is a language_model model and is not allowed; model must be a"),
        (["model=vit"], GPT_KEYS, "model=vit is a classification model and is not allowed; model must be a language_m"),
        (["dataset.root=null"], (), "dataset.root=null is not allowed; dataset=textfile needs dataset.root"),
        (["prune.criterion=snip"], (), "prune.criterion=snip is not allowed; prune.criterion must be one of magnitude"),
        (["model=lstm", "train.replicates=2", "train.grad_clip=null"], GPT_KEYS, "train.replicates needs a model wi"),
    ],
)
def test_bad_input_is_one_line_naming_the_key_and_nothing_is_written(corpus, tmp_path, capsys, extra, drop, message):
    args = [a for a in tiny(corpus, tmp_path / "run") if not a.startswith(drop or "-")] + extra
    code, _, err = lth_in_process("run", *args, capsys=capsys)
    assert code == 2 and err.startswith("lth: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_language_model_sweep_checks_every_jobs_sizes_before_the_first_starts(corpus, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    code, _, err = lth_in_process("run", "-m", *tiny(corpus, tmp_path / "run"), "dataset.subset=4,99999",
                                  f"hydra.sweep.dir={sweep}", capsys=capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "dataset.subset=99999 is not allowed; dataset.subset must be at most the 246 training examples of" in err
    assert not sweep.exists()


@pytest.mark.parametrize(("content", "message"), [(b"", "is empty"), (b"caf\xe9 " * 300, "is not UTF-8 text (byte 3")])
def test_an_empty_or_non_utf8_file_is_refused_with_vocab_char(tmp_path, capsys, content, message):
    (tmp_path / "bad.txt").write_bytes(content)
    code, _, err = lth_in_process("run", *tiny(tmp_path / "bad.txt", tmp_path / "run"), capsys=capsys)
    assert code == 2 and err.startswith("lth: error: dataset.root: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_exported_language_model_ticket_loads_and_scores_its_bits_per_character(gpt_run, corpus, tmp_path, capsys):
    from lth.data import text
    from lth.export import load_ticket
    from lth.tasks import bits, loss

    lth_ok("export", str(gpt_run), "--round", "1", str(tmp_path / "ticket"), capsys=capsys)
    card = json.loads((tmp_path / "ticket" / "card.json").read_text())
    assert card["task"] == "language_model" and card["input_shape"] == [16] and card["inputs"]["vocab"] == "char"
    model = load_ticket(tmp_path / "ticket")
    vocab = text.Vocab("char", card["inputs"]["chars"])
    held_out = text.load_text(corpus, block_size=16)
    inputs, targets = text.eval_windows(vocab.encode(vocab.decode(held_out.test)), 16, "test")
    with torch.no_grad():
        assert bits(loss(model(inputs), targets).item()) == pytest.approx(card["test_bpc"], rel=1e-5)


@pytest.mark.parametrize("model", ["gpt", "lstm"])
def test_the_recipes_and_the_shakespeare_presets_compose(model):
    from lth import config

    cfg = config.compose([*config.recipe_overrides([f"model={model}"]), f"model={model}"])
    assert (cfg.dataset.name, cfg.train.optimizer, cfg.dataset.block_size) == ("shakespeare", "adamw", 128)
    assert cfg.train.grad_clip is not None and cfg.model.n_layer >= 1
    jobs = config.expand_sweep([f"+experiment={model}_shakespeare"])
    assert len(jobs) == 6  # 3 seeds x rewinding to initialisation or to step 50
    preset = config.compose(jobs[-1])
    assert (preset.model.name, preset.prune.rewind_to, preset.dataset.subset) == (model, "50it", 4000)


@pytest.mark.slow  # two runs
def test_batched_gpt_replicates_equal_runs_alone(corpus, tmp_path, capsys):
    lth_ok("run", *tiny(corpus, tmp_path / "pair", "train.replicates=2", "train.grad_clip=null"), capsys=capsys)
    lth_ok("run", *tiny(corpus, tmp_path / "alone", "seed=1", "train.grad_clip=null"), capsys=capsys)
    batched, alone = metrics(tmp_path / "pair" / "seed_1", 1), metrics(tmp_path / "alone", 1)
    assert batched["test_bpc"] == pytest.approx(alone["test_bpc"], rel=1e-4)
    assert batched["early_stop_step"] == alone["early_stop_step"]
