"""The registration record contract (ml.registration): what register writes, every reader parses;
the git-tracked file holds content only, the machine's facts stay in the local file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pydantic import ValidationError

from ml.registration import (
    MACHINE_LOCAL,
    GateResult,
    RecordError,
    local_record_path,
    parse_record,
    read_best_record,
    read_record,
    read_release_verdict,
)
from ml.stages.register import write_release

REPO = Path(__file__).resolve().parents[2]
MODELS = ("digits", "breast-cancer")


def _record(model: str = "digits") -> dict[str, object]:
    return json.loads((REPO / "models" / model / "registration.json").read_text())


@pytest.mark.parametrize("model", MODELS)
def test_the_committed_records_parse_and_hold_no_machine_fact(model: str) -> None:
    record = read_record(REPO / "models" / model / "registration.json")
    assert record.catalog_name == model
    assert all(gate.passed for gate in record.gates)
    assert record.version is None and record.git_commit is None and record.latency is None
    assert not set(MACHINE_LOCAL) & set(_record(model))


def test_the_records_carry_schema_and_task() -> None:
    digits = read_record(REPO / "models/digits/registration.json")
    cancer = read_record(REPO / "models/breast-cancer/registration.json")
    assert digits.input.kind == "image" and digits.task.type == "multiclass"
    assert cancer.input.kind == "tabular" and cancer.task.positive_class == "malignant"
    assert cancer.input.feature_names()[:2] == ["mean radius", "mean texture"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"onnx_sha256": "not-a-hash"}, "onnx_sha256"),
        ({"unexpected": 1}, "unexpected"),
        ({"model_name": "../../etc"}, "model_name"),
        ({"gates": [{"gate": "x"}]}, "gates.0.measured"),
        ({"task": {"type": "binary", "classes": ["a"]}}, "task"),
        ({"input": {"kind": "audio"}}, "input"),
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


def test_the_local_record_is_used_only_for_the_same_model(tmp_path: Path) -> None:
    tracked = tmp_path / "registration.json"
    tracked.write_text(json.dumps(_record()))
    assert local_record_path(tracked) == tmp_path / "registration.local.json"
    assert read_best_record(tracked).version is None  # no local file: the tracked record
    local = {**_record(), "version": "7", "git_commit": "abc-dirty"}
    local_record_path(tracked).write_text(json.dumps(local))
    assert read_best_record(tracked).version == "7"
    stale = {**local, "onnx_sha256": "0" * 64}  # registered from an earlier model
    local_record_path(tracked).write_text(json.dumps(stale))
    assert read_best_record(tracked).version is None


def test_tracked_drops_exactly_the_machine_local_fields() -> None:
    full = parse_record(json.dumps({**_record(), "version": "3", "run_id": "r1"}))
    assert full.tracked().version is None and full.tracked().run_id is None
    assert set(full.tracked_json()) == set(_record())


def _gate(passed: bool) -> GateResult:
    return GateResult(gate="accuracy", measured=0.9 if passed else 0.5, limit=0.8, passed=passed)


@pytest.mark.parametrize(
    ("gates", "released", "failed"),
    [([True, True], True, 0), ([True, False], False, 1), ([False, False], False, 2)],
)
def test_the_written_verdict_is_what_its_reader_accepts(
    tmp_path: Path, gates: list[bool], released: bool, failed: int
) -> None:
    path = tmp_path / "release.json"
    write_release(path, [_gate(passed) for passed in gates], released=released)
    verdict = read_release_verdict(path)
    assert (verdict.gates_passed, verdict.released, verdict.failed_gates) == (
        all(gates),
        released,
        failed,
    )


def test_a_release_past_a_failed_gate_cannot_be_written(tmp_path: Path) -> None:
    """The writer goes through the readers' contract: a verdict they would refuse is never
    written, and nothing is left behind."""
    path = tmp_path / "release.json"
    with pytest.raises(ValidationError, match="released is true although a gate failed"):
        write_release(path, [_gate(True), _gate(False)], released=True)
    assert not path.exists()
