"""The registration record contract (ml.registration): what register writes, every reader parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.registration import RecordError, parse_record, read_record

REPO = Path(__file__).resolve().parents[2]


def _record() -> dict[str, object]:
    return json.loads((REPO / "models" / "registration.json").read_text())


def test_the_committed_record_parses() -> None:
    record = read_record(REPO / "models" / "registration.json")
    assert record.model_name == "digits-classifier"
    assert all(gate.passed for gate in record.gates)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"onnx_sha256": "not-a-hash"}, "onnx_sha256"),
        ({"unexpected": 1}, "unexpected"),
        ({"model_name": "../../etc"}, "model_name"),
        ({"gates": [{"gate": "x"}]}, "gates.0.measured"),
    ],
)
def test_a_record_of_another_shape_is_refused_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    payload = _record() | change
    with pytest.raises(RecordError, match=rf"upload\.json: not a registration record: .*{field}"):
        parse_record(json.dumps(payload), "upload.json")


def test_any_json_is_not_a_record() -> None:
    with pytest.raises(RecordError, match="model_name: Field required"):
        parse_record(b'{"hello": "world"}')


def test_an_unreadable_file_names_itself(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="missing.json: cannot read"):
        read_record(tmp_path / "missing.json")
