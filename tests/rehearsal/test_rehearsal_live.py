"""End to end: a real Prometheus, two real model services (ml.serving), the staging overlay's
rendered Rollout and AnalysisTemplates, and the issue's scenarios (healthy, errors, latency,
degraded model, Prometheus lost, inconclusive), plus clean-up on success, failure and Ctrl-C.

The model is a logistic regression on the embedded digits, exported to ONNX with the serving
contract (input `input` [batch, 64] raw pixels, outputs `probabilities` and `label`): real enough
for the model-quality analyses, and seconds instead of a training run.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from scripts.rehearsal.canary import Event, Outcome, RehearsalResult
from scripts.rehearsal.orchestrator import (
    REPO_ROOT,
    RehearsalEnvironment,
    RehearsalOptions,
    load_manifests,
    run_rehearsal,
    wait_until,
)

pytestmark = pytest.mark.e2e

STAGING = REPO_ROOT / "apps/digits-classifier/overlays/staging"


def digit_rows() -> list[list[float]]:
    """The embedded digits, interleaved by class: the load a digits rehearsal sends."""
    from sklearn.datasets import load_digits

    from ml.data import Split, class_interleaved

    digits = load_digits()
    split = Split(digits.data.astype(np.float32), digits.target)
    rows: list[list[float]] = class_interleaved(split, 10).tolist()
    return rows


ROWS = digit_rows()


def export_logistic_digits(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    model = LogisticRegression(max_iter=2000).fit(digits.data / 16.0, digits.target)
    nodes = [
        helper.make_node("Div", ["input", "pixel_max"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "weights"], ["logits_raw"]),
        helper.make_node("Add", ["logits_raw", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    initializers = [
        numpy_helper.from_array(np.array(16.0, dtype=np.float32), "pixel_max"),
        numpy_helper.from_array(model.coef_.T.astype(np.float32), "weights"),
        numpy_helper.from_array(model.intercept_.astype(np.float32), "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "logistic-digits",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 8
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(export_logistic_digits(tmp_path_factory.mktemp("model") / "model.onnx"))


@pytest.fixture(scope="module")
def manifests() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return load_manifests(STAGING)


def rehearse(
    model: str,
    manifests: tuple[dict[str, Any], list[dict[str, Any]]],
    on_event: Any = None,
    **options: Any,
) -> tuple[RehearsalResult, dict[str, Any]]:
    return run_rehearsal(
        RehearsalOptions(candidate_model=model, load_rows=ROWS, **options),
        on_event=on_event,
        manifests=manifests,
    )


def only_templates(
    manifests: tuple[dict[str, Any], list[dict[str, Any]]], suffix: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rendered objects with every analysis step narrowed to the templates named *suffix:
    isolates one analysis when a scenario is about that analysis alone."""
    rollout = copy.deepcopy(manifests[0])
    for step in rollout["spec"]["strategy"]["canary"]["steps"]:
        if "analysis" in step:
            refs = step["analysis"]["templates"]
            step["analysis"]["templates"] = [r for r in refs if r["templateName"].endswith(suffix)]
    return rollout, manifests[1]


def measurements(result: RehearsalResult, metric: str) -> list[str]:
    return [e.phase for e in result.events if e.kind == "measurement" and e.metric == metric]


def test_healthy_canary_is_promoted_and_everything_is_cleaned_up(
    model: str, manifests: Any
) -> None:
    seen: dict[str, Any] = {}

    def capture(event: Event, env: RehearsalEnvironment) -> None:
        if not seen:
            processes = [env.prometheus, *env.services.values()]
            seen["pids"] = [p.pid for p in processes if p is not None]
            seen["workdir"] = env.workdir

    result, facts = rehearse(model, manifests, capture)
    assert result.verdict.outcome == Outcome.PROMOTED, result.verdict.headline()
    assert [r.run.phase.value for r in result.runs] == ["Successful", "Successful"]
    # the whole rehearsal within the budget at the default time factor
    assert facts["total_seconds"] < 90
    assert facts["requests"]["canary"] > 0 and facts["failed_requests"]["canary"] == 0
    for pid in seen["pids"]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not Path(seen["workdir"]).exists()


def test_ten_percent_errors_abort_at_the_first_analysis(model: str, manifests: Any) -> None:
    result, _ = rehearse(model, manifests, canary_faults={"FAULT_ERROR_RATE": "0.1"})
    verdict = result.verdict
    assert (verdict.outcome, verdict.step) == (Outcome.ABORTED, 2), verdict.headline()
    # error-rate-vs-stable (failureLimit 1) usually ends the run; success-rate (failureLimit 3)
    # fails every measurement once the canary's first errors are scraped (0.9 < 0.95), so it
    # catches the fault too. The very first measurement may still see an error-free window: a
    # 10 % canary has served only ~10 requests between its first two scrapes.
    success_rate = measurements(result, "success-rate")
    assert success_rate[-1] == "Failed" and success_rate.count("Failed") >= len(success_rate) - 1
    assert set(verdict.metrics) & {"error-rate-vs-stable", "success-rate", "error-rate"}


def test_added_latency_aborts_on_the_latency_metric(model: str, manifests: Any) -> None:
    # 60 ms is 3x the 20 ms floor the latency-vs-stable ratio applies to a fast stable
    result, _ = rehearse(model, manifests, canary_faults={"FAULT_LATENCY_MS": "60"})
    verdict = result.verdict
    assert (verdict.outcome, verdict.step) == (Outcome.ABORTED, 2), verdict.headline()
    assert "latency-p99-vs-stable" in verdict.metrics
    assert set(measurements(result, "success-rate")) == {"Successful"}


def test_degraded_model_aborts_on_model_quality(model: str, manifests: Any) -> None:
    result, _ = rehearse(model, manifests, canary_faults={"FAULT_DEGRADE": "shuffle"})
    verdict = result.verdict
    assert (verdict.outcome, verdict.step) == (Outcome.ABORTED, 2), verdict.headline()
    # the model-quality analysis fails every measurement it takes; on a CPU-starved box a latency
    # spike may also end the run first, so the verdict may name that metric as well
    assert set(measurements(result, "class-shift-vs-stable")) == {"Failed"}
    assert set(verdict.metrics) & {"confidence-vs-stable", "class-shift-vs-stable"} or (
        verdict.metrics == ("latency-p99-vs-stable",)
    )
    assert set(measurements(result, "error-rate")) == {"Successful"}


def test_prometheus_lost_mid_analysis_errors_then_aborts(model: str, manifests: Any) -> None:
    def kill_prometheus(event: Event, env: RehearsalEnvironment) -> None:
        if event.kind == "measurement" and env.prometheus is not None and env.prometheus.alive():
            env.prometheus.stop()

    result, _ = rehearse(model, manifests, kill_prometheus)
    verdict = result.verdict
    assert (verdict.outcome, verdict.step) == (Outcome.ABORTED, 2), verdict.headline()
    assert "Error: consecutiveErrors (5) > consecutiveErrorLimit (4)" in verdict.reason
    errors = [e for e in result.events if e.kind == "measurement" and e.phase == "Error"]
    assert errors and all("prometheus query failed" in e.text for e in errors)


def test_success_rate_between_thresholds_pauses(model: str, manifests: Any) -> None:
    # 3 % errors on both sides: 0.97 is between fail-below 0.95 and min 0.99 (Inconclusive), and
    # the canary is no worse than stable, so the error-rate analyses pass.
    faults = {"FAULT_ERROR_RATE": "0.03"}
    result, _ = rehearse(
        model,
        only_templates(manifests, "success-rate"),
        canary_faults=faults,
        stable_faults=faults,
    )
    verdict = result.verdict
    # At 10 % weight the canary sees one error per ~3 s of traffic (deterministic spacing), so
    # the first analysis may still judge it Successful; by the 50 % analysis it cannot.
    assert verdict.outcome == Outcome.PAUSED and verdict.step in (2, 5), verdict.headline()
    assert verdict.metric == "success-rate"
    assert verdict.exit_code == 2
    assert "Failed" not in measurements(result, "success-rate")


def test_keep_leaves_the_logs_and_tsdb(model: str, manifests: Any, tmp_path: Path) -> None:
    rollout, _ = manifests
    options = RehearsalOptions(candidate_model=model, load_rows=ROWS, keep=True)
    with RehearsalEnvironment(options, rollout) as env:
        workdir = env.workdir
    assert workdir is not None
    try:
        assert {"prometheus.yml", "prometheus.log", "stable.log", "canary.log", "tsdb"} <= {
            p.name for p in workdir.iterdir()
        }
    finally:
        import shutil

        shutil.rmtree(workdir)


def test_ctrl_c_stops_every_process_and_removes_the_temp_dir(model: str, tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    from sklearn.datasets import load_digits

    from ml.data import Split, save_split

    digits = load_digits()
    split = tmp_path / "test.npz"
    save_split(split, Split(digits.data.astype(np.float32), digits.target))
    argv = ["--model", model, "--load", str(split), "--out", str(tmp_path)]
    cli = subprocess.Popen(
        [sys.executable, "-m", "scripts.rehearsal", *argv],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert cli.stdout is not None
        for line in cli.stdout:  # wait for the rollout to be under way
            if "step 1: pause" in line:
                break
        children = psutil.Process(cli.pid).children()
        assert len(children) == 3  # prometheus, stable, canary
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 130
        assert "interrupted; every process was stopped" in (cli.stderr.read() if cli.stderr else "")
        wait_until(
            lambda: not any(c.is_running() and c.status() != "zombie" for c in children),
            10,
            "the children to exit",
        )
        assert not list(tmp_path.glob("rehearsal-*"))
    finally:
        if cli.poll() is None:
            cli.kill()
