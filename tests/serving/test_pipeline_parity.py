"""The service on the real pipeline's output: the exported model, its record and its test split.

Uses the shared ``pipeline_workspace`` fixture (tests/conftest.py): one from-scratch `dvc repro`
per session, reused by every tier that needs a trained, exported, registered model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest

from ml.serving.app import ModelService
from ml.serving.config import FaultConfig, ServingConfig
from ml.serving.model import load_model

from .conftest import free_port, service_env, subprocess_server
from .test_server import DOCKERFILES, final_stage


@pytest.fixture(scope="module")
def exported(pipeline_workspace: Path) -> dict[str, object]:
    models = pipeline_workspace / "models" / "digits"
    with np.load(models / "data" / "prepared" / "test.npz") as split:
        rows, truth = split["X"].astype(np.float32), split["y"]
    session = ort.InferenceSession(str(models / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities, labels = session.run(["probabilities", "label"], {"input": rows})
    return {
        "models": models,
        "rows": rows,
        "truth": truth,
        "probabilities": probabilities,
        "labels": labels,
        "session": session,
        "record": json.loads((models / "registration.json").read_text()),
    }


def test_image_entrypoint_predicts_exactly_as_the_exported_model_on_the_test_split(
    exported: dict[str, object], tmp_path: Path
) -> None:
    models: Path = exported["models"]  # type: ignore[assignment]
    rows: np.ndarray = exported["rows"]  # type: ignore[assignment]
    expected_p: np.ndarray = exported["probabilities"]  # type: ignore[assignment]
    expected_l: np.ndarray = exported["labels"]  # type: ignore[assignment]
    session: ort.InferenceSession = exported["session"]  # type: ignore[assignment]
    # the serving image's exact ENTRYPOINT and ENV, outside a container: only paths remapped
    stage = final_stage(DOCKERFILES[0])
    image_env: dict[str, str] = dict(stage["env"])  # type: ignore[call-overload]
    image_env.pop("PATH")
    image_env.update(MODEL_URI=str(models / "model.onnx"), HOST="127.0.0.1", PORT=str(free_port()))
    argv: list[str] = stage["entrypoint"]  # type: ignore[assignment]
    with subprocess_server(argv, service_env(**image_env), cwd=tmp_path) as (base, _):
        with httpx.Client(base_url=base, timeout=30) as http:
            got_p, got_l, v2_p, v2_l = [], [], [], []
            for start in range(0, len(rows), 200):
                batch = rows[start : start + 200]
                plain = http.post("/predict", json={"instances": batch.tolist()}).json()
                got_p.append(np.array(plain["probabilities"], dtype=np.float32))
                got_l.extend(plain["predictions"])
                tensor = {"name": "input", "datatype": "FP32", "shape": list(batch.shape)}
                body = {"inputs": [{**tensor, "data": batch.reshape(-1).tolist()}]}
                outputs = http.post("/v2/models/digits-classifier/infer", json=body).json()
                by_name = {o["name"]: o for o in outputs["outputs"]}
                v2_p.append(np.array(by_name["probabilities"]["data"], np.float32).reshape(-1, 10))
                v2_l.extend(by_name["label"]["data"])
            singles = [
                http.post("/predict", json={"instances": [row.tolist()]}).json() for row in rows
            ]
            metadata = http.get("/metadata").json()
    np.testing.assert_array_equal(np.concatenate(got_p), expected_p)  # bit for bit
    np.testing.assert_array_equal(np.concatenate(v2_p), expected_p)
    assert got_l == expected_l.tolist() and v2_l == expected_l.tolist()
    one_by_one, _ = zip(
        *(session.run(["probabilities", "label"], {"input": r[None]}) for r in rows)
    )
    np.testing.assert_array_equal(
        np.array([s["probabilities"][0] for s in singles], dtype=np.float32),
        np.concatenate(one_by_one),
    )
    record: dict[str, object] = exported["record"]  # type: ignore[assignment]
    for key in ("model_name", "data_hash", "metrics", "onnx_sha256", "input", "task"):
        assert metadata[key] == record[key], key
    # the git-tracked record holds no registry version: the service names the file's content
    assert metadata["version"] == f"sha256-{record['onnx_sha256'][:12]}"


def test_accuracy_matches_the_record_and_degradation_destroys_it(
    exported: dict[str, object],
) -> None:
    models: Path = exported["models"]  # type: ignore[assignment]
    rows: np.ndarray = exported["rows"]  # type: ignore[assignment]
    truth: np.ndarray = exported["truth"]  # type: ignore[assignment]
    record: dict[str, dict[str, float]] = exported["record"]  # type: ignore[assignment]
    model = load_model(str(models / "model.onnx"))
    accuracy = {}
    modes: list[Literal["", "shuffle", "constant"]] = ["", "shuffle", "constant"]
    for mode in modes:
        service = ModelService(model, ServingConfig(faults=FaultConfig(degrade=mode)))
        predictions: list[int] = []
        for start in range(0, len(rows), 200):
            body = orjson.dumps({"instances": rows[start : start + 200].tolist()})
            reply = service.dispatch("POST", "/predict", [], body)
            predictions += orjson.loads(reply.body)["predictions"]  # type: ignore[union-attr]
        accuracy[mode] = float(np.mean(np.array(predictions) == truth))
    assert accuracy[""] == pytest.approx(record["metrics"]["accuracy"], abs=1e-9)
    assert accuracy["shuffle"] < 0.3 and accuracy["constant"] < 0.3
