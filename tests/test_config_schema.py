"""config_schema/: a valid JSON Schema (draft 2020-12) that accepts and rejects the same documents as the
C++ validator, on every fixture and on every invalid case the schema can decide."""
import json
from pathlib import Path

import jsonschema
import pytest

import pntk
from test_rope_errors import INVALID_CONFIGS

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "config_schema" / "pntk-config.schema.json").read_text())
VALID_FIXTURES = sorted((ROOT / "tests" / "data" / "configs" / "valid").glob("*.json"))
# Cross-field rules live only in the C++ validator (the schema's description lists them).
CROSS_FIELD = {
    "odd rotary dim", "odd partial rotary dim", "type disagrees", "original above max",
    "pntk original == max", "pntk without original", "rope_scaling disagrees with rope_parameters",
}


def schema_accepts(document) -> bool:
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(document)


def core_accepts(document) -> bool:
    try:
        pntk._core.plan_from_json(json.dumps(document), "<schema test>")
        return True
    except pntk.ConfigError:
        return False


def test_schema_is_valid_draft_2020_12():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_fixtures_exist():
    assert len(VALID_FIXTURES) >= 8


@pytest.mark.parametrize("path", VALID_FIXTURES, ids=lambda p: p.stem)
def test_valid_fixtures_pass_both(path):
    document = json.loads(path.read_text())
    jsonschema.validate(document, SCHEMA)
    assert core_accepts(document)
    assert pntk.RopePlan.from_config(path).source == str(path)


@pytest.mark.parametrize("name,document,field", INVALID_CONFIGS, ids=[c[0] for c in INVALID_CONFIGS])
def test_invalid_documents_fail_both(name, document, field):
    assert not core_accepts(document)
    if name in CROSS_FIELD:
        assert schema_accepts(document), f"{name}: the schema now decides it; drop it from CROSS_FIELD"
    else:
        assert not schema_accepts(document), name
