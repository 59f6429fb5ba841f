"""run.json's config and config_hash are pinned: the fixtures were written by the code before issue 17's
restructuring (tests/fixtures/config_records.json: composed configs; fast_run.json: a real run's record)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lth import config

FIXTURES = Path(__file__).parent / "fixtures"
RECORDS = json.loads((FIXTURES / "config_records.json").read_text())


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_composed_configs_serialise_and_hash_as_before(name):
    record = RECORDS[name]
    cfg = config.compose(config.recipe_overrides(record["overrides"]) + record["overrides"])
    assert json.dumps(config.to_container(cfg), indent=2, sort_keys=True) == record["config_json"]
    assert config.config_hash(cfg) == record["config_hash"]


def test_a_stored_run_record_reads_back_to_the_same_config_and_hash():
    stored = json.loads((FIXTURES / "fast_run.json").read_text())
    cfg = config.from_container(stored["config"], FIXTURES / "fast_run.json")
    assert config.to_container(cfg) == stored["config"]
    assert json.dumps(config.to_container(cfg), sort_keys=True) == json.dumps(stored["config"], sort_keys=True)
    assert config.config_hash(cfg) == stored["config_hash"]


def test_the_debug_preset_is_the_fast_experiment_the_fixtures_were_written_with():
    cfg = config.compose(["+debug=fast"])
    assert json.dumps(config.to_container(cfg), indent=2, sort_keys=True) == RECORDS["fast"]["config_json"]
    assert config.config_hash(cfg) == RECORDS["fast"]["config_hash"]


def test_run_json_records_the_code_and_keeps_the_config_hash(finished_template):
    import lth

    record = json.loads((finished_template / "run.json").read_text())
    stored = json.loads((FIXTURES / "fast_run.json").read_text())
    assert record["config_hash"] == stored["config_hash"] and record["config"] == stored["config"]
    code = record["code"]
    assert code["version"] == lth.__version__
    if "commit" in code:  # run from a git checkout
        assert len(code["commit"]) == 40 and isinstance(code["dirty"], bool)
