"""Metric names: PromQL parsing, exposition parsing, and the cross-check that every metric the
AnalysisTemplates and alert rules query is exported by the model service (live when possible)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from scripts.manifests import metric_refs
from scripts.manifests.analysis import prometheus_queries
from scripts.manifests.vocabulary import REPO_ROOT, Obj


def test_promql_names_skip_functions_labels_keywords_and_templates() -> None:
    expr = """
      sum by (le, pod) (rate(inference_request_duration_seconds_bucket{
        namespace="{{args.namespace}}", code=~"5.."}[5m] offset 1h))
        / on(pod) group_left(app) kube_pod_info
      unless count without (x) (up == 0) > bool {{args.threshold}} and vector(1)
    """
    assert metric_refs.promql_metric_names(expr) == {
        "inference_request_duration_seconds_bucket",
        "kube_pod_info",
        "up",
    }
    assert metric_refs.promql_metric_names('{__name__="foo_total"}') == {"foo_total"}
    assert metric_refs.promql_metric_names("histogram_quantile(0.99, x_bucket) > 1e-3") == {
        "x_bucket"
    }


def test_exposition_names_include_series_of_unobserved_families() -> None:
    text = (
        "# HELP a_total x\n# TYPE a_total counter\n"
        '# TYPE h histogram\nh_bucket{le="+Inf"} 1\n'
        '# TYPE g gauge\ng{x="1"} 1\n'
        "sample_only 3\n"
    )
    names = metric_refs.exported_metric_names(text)
    assert {"a_total", "a_created", "h_bucket", "h_sum", "h_count", "g", "sample_only"} <= names


def test_contract_exposition_lists_every_contract_metric() -> None:
    names = metric_refs.exported_metric_names(metric_refs.contract_exposition())
    assert "inference_requests_total" in names
    assert "inference_request_duration_seconds_bucket" in names
    assert "inference_prediction_confidence_sum" in names
    assert "inference_model_info" in names


def test_contract_exposition_fails_without_a_table(tmp_path: Path) -> None:
    (tmp_path / "c.md").write_text("no table\n")
    with pytest.raises(RuntimeError):
        metric_refs.contract_exposition(tmp_path / "c.md")


def test_all_queries_use_contract_metrics(
    rendered: dict[str, list[Obj]], contract_metrics: set[str]
) -> None:
    objects = rendered["apps/digits-classifier/overlays/production"]
    assert list(metric_refs.check_metrics(objects, contract_metrics)) == []
    used = set().union(
        *(metric_refs.promql_metric_names(q) for _, _, q in prometheus_queries(objects))
    )
    assert used >= {"inference_successes_total", "inference_requests_total"}


def test_unknown_metrics_are_named(
    rendered: dict[str, list[Obj]], contract_metrics: set[str]
) -> None:
    objects = rendered["apps/digits-classifier/overlays/staging"]
    findings = list(
        metric_refs.check_metrics(objects, contract_metrics - {"inference_requests_total"})
    )
    assert findings
    assert all("inference_requests_total" in f.message for f in findings)
    kinds = {str((f.obj or {}).get("kind")) for f in findings}
    assert kinds == {"AnalysisTemplate", "PrometheusRule"}


def _tiny_model(path: Path) -> Path:
    """An ONNX model honouring the serving contract (input [batch, 64] -> probabilities, label)."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(16.0, dtype=np.float32), "pixel_max")
    graph = helper.make_graph(
        [
            helper.make_node("Div", ["input", "pixel_max"], ["scaled"]),
            helper.make_node("MatMul", ["scaled", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [weights, scale],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_live_service_exports_every_queried_metric(
    tmp_path: Path, rendered: dict[str, list[Obj]]
) -> None:
    """Start the real `python -m ml.serving` on a tiny model and check against its /metrics."""
    assert metric_refs.service_available(), "ml/serving/__main__.py is missing"
    exposition = metric_refs.serve_and_fetch(_tiny_model(tmp_path / "model.onnx"))
    live = metric_refs.exported_metric_names(exposition)
    for target, objects in rendered.items():
        problems = [f"{f.field}: {f.message}" for f in metric_refs.check_metrics(objects, live)]
        assert problems == [], target


def test_serve_reports_a_service_that_dies(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(RuntimeError, match="ml.serving"):
        metric_refs.serve_and_fetch(tmp_path / "bad.onnx", timeout=30)


def test_service_available_looks_for_the_module(tmp_path: Path) -> None:
    assert metric_refs.service_available(REPO_ROOT)
    assert not metric_refs.service_available(tmp_path)
