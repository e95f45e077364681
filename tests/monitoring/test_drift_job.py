"""The drift job end to end: samples from real service pods (merged by traffic), the detector,
the JSON/HTML report, the Pushgateway push and the dry-run trigger, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from ml.monitoring.cli import main
from ml.monitoring.live import (
    LiveSampleError,
    fetch_snapshots,
    load_sample_file,
    merge_snapshots,
    resolve_pods,
)
from ml.monitoring.metrics import DriftMetrics, exposition
from ml.monitoring.shifts import apply_shift
from ml.serving.config import ServingConfig
from tests.conftest import REPO
from tests.monitoring.conftest import write_digits_split
from tests.serving.conftest import make_onnx, threaded_server, write_registration

from .conftest import FakeHTTP, Recorded

# the digits model: its own params over the shared root file, as the drift CronJob gets them
DIGITS_PARAMS = [
    "--params",
    str(REPO / "models/digits/params.yaml"),
    "--shared-params",
    str(REPO / "params.yaml"),
]

TOKEN = "sample-token-0123456789"


def window(rows: np.ndarray, seen: int, start: float = 0.0) -> dict[str, Any]:
    return {
        "seen": seen,
        "start_unix": start,
        "end_unix": start + 60,
        "rows": rows.tolist(),
        "labels": [0] * len(rows),
    }


def test_merge_takes_rows_in_proportion_to_the_traffic_each_window_saw() -> None:
    busy = np.full((100, 2), 1.0, dtype=np.float32)  # 100 kept of 9,000 answered
    quiet = np.full((50, 2), 2.0, dtype=np.float32)  # all 50 answered kept
    snapshots = [
        {"source": "a", "model_version": "7", "windows": [window(busy, 9000)]},
        {"source": "b", "model_version": "8", "windows": [window(quiet, 50), window(busy[:0], 0)]},
    ]
    live = merge_snapshots(snapshots, max_rows=10_000, rng=np.random.default_rng(0))
    # the busy window limits the size: 100 rows may stand for 9,000 -> 100 * 9050 / 9000 = 100
    assert live.seen == 9050 and live.rows.shape == (100, 2)
    assert (live.rows[:, 0] == 2.0).sum() == 1  # 50/9050 of 100 rows, rounded
    assert live.model_versions == ("7", "8") and live.sources == ("a", "b")
    capped = merge_snapshots(snapshots, max_rows=20, rng=np.random.default_rng(0))
    assert capped.rows.shape[0] == 20
    assert live.describe()["windows"][0] == {
        "source": "a",
        "seen": 9000,
        "kept": 100,
        "start_unix": 0.0,
        "end_unix": 60,
    }


def test_merge_refuses_pods_that_disagree_and_tolerates_empty_windows() -> None:
    a = {"source": "a", "windows": [window(np.zeros((3, 2)), 3)]}
    b = {"source": "b", "windows": [window(np.zeros((3, 5)), 3)]}
    with pytest.raises(LiveSampleError, match="b: 5 features"):
        merge_snapshots([a, b], 100, np.random.default_rng(0))
    broken = {"source": "c", "windows": [{**window(np.zeros((3, 2)), 3), "labels": [1]}]}
    with pytest.raises(LiveSampleError, match="c: malformed"):
        merge_snapshots([broken], 100, np.random.default_rng(0))
    empty = merge_snapshots(
        [{"source": "d", "windows": [window(np.zeros((0, 2)), 0)]}], 100, np.random.default_rng(0)
    )
    assert empty.rows.shape[0] == 0 and empty.seen == 0


def test_fetch_skips_a_failing_pod_and_fails_when_none_answers(fake_http: FakeHTTP) -> None:
    good = {"windows": [window(np.zeros((2, 2)), 2)], "model_version": "7"}
    fake_http.routes["GET /monitoring/sample"] = lambda r: (200, good)
    dead = "http://127.0.0.1:9"
    with httpx.Client(timeout=2) as client:
        snapshots, failures = fetch_snapshots([fake_http.url, dead], TOKEN, client)
        assert [s["source"] for s in snapshots] == [fake_http.url] and len(failures) == 1
        assert fake_http.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
        fake_http.routes["GET /monitoring/sample"] = lambda r: (200, {"no": "windows"})
        with pytest.raises(LiveSampleError, match="no pod returned a sample: .*not a sample"):
            fetch_snapshots([fake_http.url], TOKEN, client)


def test_resolve_pods_lists_every_address_of_a_name() -> None:
    assert resolve_pods("localhost", 8080)[0] in ("http://127.0.0.1:8080", "http://[::1]:8080")
    with pytest.raises(LiveSampleError, match="cannot resolve"):
        resolve_pods("no-such-host.invalid", 80)


def test_sample_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(LiveSampleError, match="no such sample file"):
        load_sample_file(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(LiveSampleError, match="unreadable sample"):
        load_sample_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "ok.npz", X=np.ones((3, 4)))
    sample = load_sample_file(tmp_path / "ok.npz")
    assert sample.rows.shape == (3, 4) and sample.labels is None


def pushgateway(fake: FakeHTTP) -> list[Recorded]:
    pushed: list[Recorded] = []

    def put(request: Recorded) -> tuple[int, Any]:
        pushed.append(request)
        return 200, {}

    fake.routes["PUT /metrics/job/drift-monitor/app/digits/namespace/ml-prod"] = put
    return pushed


def test_drift_job_on_live_pods_reports_pushes_and_dry_runs_the_trigger(
    tmp_path: Path, fake_http: FakeHTTP
) -> None:
    """Two real service instances answer darkened digits; the job finds the drift."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(x))  # the data set is ordered by writer
    x, y = x[order].astype(np.float32), y[order]
    np.savez(tmp_path / "train.npz", X=x[600:], y=y[600:])
    live, _ = apply_shift(x[:600], y[:600], "darker", np.random.default_rng(0), 16.0, 0.8)
    model = make_onnx(tmp_path / "model" / "model.onnx", seed=3)
    write_registration(model, version="12")
    config = ServingConfig(model_uri=str(model), sample_token=TOKEN, port=0)
    with threaded_server(config) as (first, _), threaded_server(config) as (second, _):
        for url, part in ((first, live[:400]), (second, live[400:])):
            for batch in np.array_split(part, 8):
                response = httpx.post(f"{url}/predict", json={"instances": batch.tolist()})
                assert response.status_code == 200
        pushed = pushgateway(fake_http)
        out = tmp_path / "report"
        argv = ["drift", *DIGITS_PARAMS]
        argv += ["--reference", str(tmp_path / "train.npz"), "--out", str(out)]
        argv += ["--service-url", first, "--service-url", second]
        argv += ["--pushgateway", fake_http.url, "--namespace", "ml-prod", "--app", "digits"]
        argv += ["--trigger", "--dry-run", "--state", str(tmp_path / "state.json")]
        assert main(argv, env={"SAMPLE_TOKEN": TOKEN}) == 0

    report = json.loads((out / "drift.json").read_text())
    assert report["drift"]["detected"] and report["drift"]["signals"]["features"]
    assert report["live"]["rows"] == 600 and report["live"]["seen"] == 600
    assert report["live"]["model_versions"] == ["12"] and len(report["live"]["sources"]) == 2
    assert report["reference"]["rows"] == 1197
    assert report["retrain"]["action"] == "dry-run"
    assert not (tmp_path / "state.json").exists()
    page = (out / "drift.html").read_text()
    assert "Drift detected" in page and "<script" not in page
    (push,) = pushed
    text = push.body.decode()
    assert 'drift_detected{signal="features"} 1.0' in text
    assert 'retrain_decision{action="dry-run"} 1.0' in text
    assert (out / "drift.prom").read_text() == text


def test_drift_cli_on_a_local_sample_and_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_digits_split(tmp_path)
    base = ["drift", *DIGITS_PARAMS, "--reference"]
    base += [str(tmp_path / "train.npz"), "--out", str(tmp_path / "out")]
    assert main([*base, "--sample", str(tmp_path / "live.npz")], env={}) == 0
    assert "drift: no drift" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "drift.json").read_text())
    assert report["retrain"] is None and report["drift"]["prediction_shift"] < 0.1
    # failures are one line naming the cause, exit 1
    assert main([*base, "--service-url", "http://127.0.0.1:9"], env={}) == 1
    assert "SAMPLE_TOKEN is not set" in capsys.readouterr().err
    assert main([*base, "--service-dns", "nocolon"], env={"SAMPLE_TOKEN": TOKEN}) == 1
    assert "expected HOST:PORT" in capsys.readouterr().err
    trigger = [*base, "--sample", str(tmp_path / "live.npz"), "--trigger"]
    assert main(trigger, env={}) == 1
    assert "no retraining backend" in capsys.readouterr().err
    assert main([*trigger, "--backend", "argo"], env={}) == 1
    assert "--argo-server" in capsys.readouterr().err
    assert main([*trigger, "--backend", "gitlab"], env={}) == 1
    assert "GITLAB_TRIGGER_TOKEN" in capsys.readouterr().err
    gateway = [*base, "--sample", str(tmp_path / "live.npz"), "--pushgateway", "http://127.0.0.1:9"]
    assert main(gateway, env={}) == 1
    assert "push to http://127.0.0.1:9 failed" in capsys.readouterr().err


def test_trigger_cli_validates_accuracy_and_reads_token_files(
    tmp_path: Path, fake_http: FakeHTTP, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["trigger", *DIGITS_PARAMS, "--state", str(tmp_path / "s.json")]
    assert main([*base, "--current-accuracy", "0.9"], env={}) == 1
    assert "positive --baseline-accuracy" in capsys.readouterr().err
    (tmp_path / "token").write_text("file-token\n")
    # the Argo Server's shapes: a list has metadata (items null when empty), a workflow a spec
    fake_http.routes["GET /api/v1/workflows/ns"] = lambda r: (200, {"metadata": {}, "items": None})
    fake_http.routes["POST /api/v1/workflows/ns/submit"] = lambda r: (
        200,
        {"metadata": {"name": "training-abc"}, "spec": {}},
    )
    argo = ["--backend", "argo", "--argo-server", fake_http.url]
    argo += ["--argo-token-file", str(tmp_path / "token")]
    assert main([*base, "--reason", "manual", *argo], env={"POD_NAMESPACE": "ns"}) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["action"] == "triggered" and decision["run"]["id"] == "training-abc"
    assert fake_http.requests[-1].headers["authorization"] == "Bearer file-token"
    missing = [*base, "--reason", "manual", *argo[:4], "--argo-token-file", str(tmp_path / "no")]
    assert main(missing, env={"POD_NAMESPACE": "ns"}) == 1
    assert "cannot read ARGO_TOKEN" in capsys.readouterr().err


def test_synthetic_cli_writes_a_shifted_sample_with_predicted_labels(tmp_path: Path) -> None:
    x, y = load_digits(return_X_y=True)
    data = tmp_path / "prepared"
    data.mkdir()
    for name, part in (("val", slice(0, 100)), ("test", slice(100, 300))):
        np.savez(data / f"{name}.npz", X=x[part].astype(np.float32), y=y[part])
    model = make_onnx(tmp_path / "model.onnx")
    argv = ["synthetic", *DIGITS_PARAMS, "--data", str(data)]
    argv += ["--shift", "darker", "--model", str(model), "--out", str(tmp_path / "s.npz")]
    assert main(argv, env={}) == 0
    sample = load_sample_file(tmp_path / "s.npz")
    assert sample.rows.shape == (300, 64) and sample.labels is not None
    assert np.allclose(sample.rows, np.clip(x[:300] * 0.9, 0, 16))
    assert main([*argv[:-2], "--out", str(tmp_path / "n.npz"), "--split", "nope"], env={}) == 1


def test_metrics_exposition_names_every_family_with_its_labels() -> None:
    text = exposition()
    for family in (
        "drift_feature_group_score",
        "drift_drifted_features_share",
        "drift_prediction_shift",
        "drift_detected",
        "drift_threshold",
        "drift_live_rows",
        "drift_input_out_of_range_share",
        "drift_last_run_timestamp_seconds",
        "retrain_last_triggered_timestamp_seconds",
        "retrain_cooldown_remaining_seconds",
        "retrain_decision",
    ):
        assert f"# TYPE {family} gauge" in text, family
    assert 'drift_threshold{kind="feature"} 0.1' in text
    assert DriftMetrics().text().count("# TYPE") == 11
