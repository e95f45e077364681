"""The validator's building blocks, on small inputs: selectors, images, templates, sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scripts.manifests.analysis import check_references, check_templates, resolve_static_args
from scripts.manifests.vocabulary import Problem, object_id, path_str
from scripts.manifests.policy import check_policy, image_problem
from scripts.manifests.references import check_object_refs, template_keys
from scripts.manifests.render import RenderError, parse_documents, render_overlay
from scripts.manifests.schema import SchemaValidator
from scripts.manifests.sources import locate, source_documents
from scripts.manifests.workloads import pod_templates, selects
from scripts.rehearsal.analysis import parse_duration


def test_selector_semantics() -> None:
    labels = {"app": "a", "tier": "web"}
    assert selects({"matchLabels": {"app": "a"}}, labels)
    assert not selects({"matchLabels": {"app": "b"}}, labels)
    assert selects({"app": "a"}, labels)
    assert selects(None, labels)
    expr = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}
    assert selects(expr, labels)
    for op, ok in (("NotIn", False), ("Exists", True), ("DoesNotExist", False)):
        assert (
            selects(
                {"matchExpressions": [{"key": "tier", "operator": op, "values": ["web"]}]}, labels
            )
            is ok
        )
    assert not selects(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x"]}]}, labels
    )
    assert not selects({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)


@pytest.mark.parametrize(
    "image, problem",
    [
        ("r.io/a/b:1.0", None),
        ("r.io:5000/a/b@sha256:" + "0" * 64, None),
        ("r.io:5000/a/b", "no tag"),
        ("b:latest", ":latest"),
    ],
)
def test_image_pinning(image: str, problem: str | None) -> None:
    why = image_problem(image)
    assert (why is None) if problem is None else (problem in str(why))


def test_go_template_keys() -> None:
    text = (
        "{{.app}}-{{ .cluster.server }} {{- if .sync.automated }}"
        '{{ index .path.segments 1 }}{{ "x.y" }}'
    )
    assert template_keys(text) == {
        ("app",),
        ("cluster", "server"),
        ("sync", "automated"),
        ("path", "segments"),
    }


def test_static_args_resolution() -> None:
    rollout = {
        "metadata": {
            "name": "r",
            "namespace": "n",
            "annotations": {"t": "0.5"},
            "labels": {"env": "dev"},
        }
    }
    args: list[dict[str, Any]] = [
        {"name": "a", "value": "1"},
        {"name": "b", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "c", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['t']"}}},
        {"name": "d", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['env']"}}},
        {"name": "e", "valueFrom": {"podTemplateHashValue": "Stable"}},
        {"name": "f", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "g", "value": None},
        # any path into the Rollout, as the controller walks it (the rehearsal's resolver)
        {"name": "h", "valueFrom": {"fieldRef": {"fieldPath": "spec.replicas"}}},
        {"name": "i", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['nope']"}}},
        {"name": "j", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope.deeper"}}},
    ]
    rollout["spec"] = {"replicas": 2}
    assert resolve_static_args(rollout, args) == {
        "a": "1",
        "b": "n",
        "c": "0.5",
        "d": "dev",
        "e": None,
        "f": "r",
        "g": None,
        "h": "2",
        "i": None,
        "j": None,
    }


def test_analysis_spec_errors() -> None:
    metric = {
        "name": "m",
        "interval": "1 minute",
        "count": 3,
        "failureLimit": -2,
        "successCondition": "len(result) > 0 && result[0] > 1",
        "provider": {"prometheus": {"query": "{{ secret }}"}, "web": {"url": "x"}},
    }
    template = {
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"metrics": [metric, {"name": "m", "provider": {"job": {}}}]},
    }
    messages = " | ".join(f.message for f in check_templates([template]))
    for text in (
        "invalid interval string",
        "failureLimit must be >= 0, or -1",
        "multiple providers specified",
        "isNaN",
        "not an arg",
        "duplicate",
    ):
        assert text in messages
    metric2 = {"name": "x", "count": 3, "provider": {"job": {}}}
    template2 = {
        "kind": "AnalysisTemplate",
        "metadata": {"name": "u"},
        "spec": {"metrics": [metric2]},
    }
    messages2 = " ".join(f.message for f in check_templates([template2]))
    assert "interval must be specified when count > 1" in messages2


# Go's time.ParseDuration, which the controller uses for interval and initialDelay. The manifests
# check once had its own regex that refused the Greek mu and fractions without a leading digit,
# which the controller accepts: both tools now read durations through one function.
DURATIONS = [
    ("30s", True),
    ("1h30m", True),
    ("1.5s", True),
    (".5s", True),
    ("1.s", True),
    ("300us", True),
    ("300\u00b5s", True),  # micro sign
    ("300\u03bcs", True),  # Greek mu
    ("0", True),
    ("-1s", True),
    ("30", False),
    ("1 minute", False),
    (".s", False),
    ("5d", False),
]


@pytest.mark.parametrize(("duration", "valid"), DURATIONS)
def test_manifests_and_rehearsal_read_durations_alike(duration: str, valid: bool) -> None:
    metric = {"name": "m", "interval": duration, "provider": {"job": {}}}
    template = {
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"metrics": [metric]},
    }
    flagged = any(f.field.endswith(".interval") for f in check_templates([template]))
    assert flagged is not valid
    if valid:
        parse_duration(duration)
    else:
        with pytest.raises(ValueError):
            parse_duration(duration)


def test_background_analysis_and_fieldref_checks() -> None:
    template = {
        "kind": "ClusterAnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"args": [{"name": "x"}]},
    }
    rollout = {
        "kind": "Rollout",
        "metadata": {"name": "r"},
        "spec": {
            "strategy": {
                "canary": {
                    "analysis": {
                        "templates": [{"templateName": "t", "clusterScope": True}],
                        "args": [
                            {
                                "name": "x",
                                "valueFrom": {
                                    "fieldRef": {"fieldPath": "metadata.annotations['missing']"}
                                },
                            },
                            {"name": "y"},
                        ],
                    }
                }
            }
        },
    }
    messages = [f.message for f in check_references([template, rollout])]
    assert any("resolves to nothing" in m for m in messages)
    assert any("neither value nor valueFrom" in m for m in messages)


def _pod(**spec: object) -> dict[str, object]:
    return {"kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}}, "spec": spec}


def test_policy_on_a_bare_pod_and_cronjob() -> None:
    pod = _pod(
        containers=[
            {
                "name": "c",
                "image": "x:1",
                "ports": [{"hostPort": 80}],
                "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
            }
        ],
        hostPID=True,
    )
    fields = {f.field for f in check_policy([pod])}
    assert {
        "spec.hostPID",
        "spec.containers[0].ports[0].hostPort",
        "spec.containers[0].securityContext.capabilities.add",
    } <= fields
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    }
    assert [f.message for f in check_policy([cron])][:1] == ["pod has no containers"] or any(
        f.message == "pod has no containers" for f in check_policy([cron])
    )
    assert pod_templates({"kind": "Service", "spec": {}}) == []


def test_object_refs_missing_configmap_and_sa() -> None:
    dep = {
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {
            "template": {
                "metadata": {"labels": {}},
                "spec": {
                    "serviceAccountName": "ghost",
                    "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}]}],
                    "volumes": [{"name": "v", "configMap": {"name": "vol"}}],
                },
            }
        },
    }
    messages = [f.message for f in check_object_refs([dep])]
    assert len(messages) == 3 and all("does not exist" in m for m in messages)


def test_schema_validator_basics() -> None:
    v = SchemaValidator()
    assert v.validate({"apiVersion": "v1"})[0].field == "kind"
    assert v.validate({"kind": "Service"})[0].field == "apiVersion"
    assert (
        v.validate({"kind": "Service", "apiVersion": "v1", "metadata": {}})[0].field
        == "metadata.name"
    )
    assert (
        v.validate({"kind": "Nope", "apiVersion": "nope.io/v9", "metadata": {"name": "x"}})[0].field
        == "apiVersion"
    )
    assert (
        v.validate({"kind": "Servic", "apiVersion": "v1", "metadata": {"name": "x"}})[0].field
        == "kind"
    )
    port = {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "http"}]},
    }
    assert v.validate(port)[0].field == "spec.ports[0].port"


def test_render_errors_and_documents(tmp_path: Path) -> None:
    with pytest.raises(RenderError):
        render_overlay(tmp_path)
    with pytest.raises(RenderError):
        parse_documents("- a\n- b\n")
    assert parse_documents("---\n---\na: 1\n") == [{"a": 1}]


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (["spec", "containers", 0, "image"], "spec.containers[0].image"),
        (["spec", "template", "spec", "volumes", 2], "spec.template.spec.volumes[2]"),
        ([0, "name"], "[0].name"),
        (["metrics", 1, 0], "metrics[1][0]"),
        ([], ""),
    ],
)
def test_a_field_is_named_as_kubectl_explain_names_it(parts: list[str | int], text: str) -> None:
    assert path_str(parts) == text


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        ({"kind": "Rollout", "metadata": {"name": "web", "namespace": "prod"}}, "Rollout/prod/web"),
        ({"kind": "ClusterRole", "metadata": {"name": "reader"}}, "ClusterRole/reader"),
        ({"kind": "Service"}, "Service/?"),
        ({"metadata": "not a mapping"}, "?/?"),
        (None, ""),
    ],
)
def test_an_object_is_named_by_kind_namespace_and_name(obj: Any, name: str) -> None:
    assert object_id(obj) == name


def test_a_problem_points_at_the_file_to_edit_and_reports_every_column() -> None:
    # The line a developer reads: the source file when known, else the render target, then the
    # object and field ("-" when the problem is about the target as a whole).
    placed = Problem("policy", "apps/a/overlays/prod", "base/rollout.yaml", "Rollout/web",
                     "spec.replicas", "too few")  # fmt: skip
    assert str(placed) == "base/rollout.yaml: Rollout/web: spec.replicas: too few"
    unplaced = Problem("render", "apps/a/overlays/prod", "", "", "", "cannot render")
    assert str(unplaced) == "apps/a/overlays/prod: -: -: cannot render"
    # The JSON report's columns (its readers key on these names).
    assert placed.as_dict() == {
        "check": "policy",
        "target": "apps/a/overlays/prod",
        "file": "base/rollout.yaml",
        "object": "Rollout/web",
        "field": "spec.replicas",
        "message": "too few",
    }


def test_locate_prefers_patch_that_mentions_the_field(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "kustomization.yaml").write_text("resources: [d.yaml]\n")
    (tmp_path / "base" / "d.yaml").write_text(
        "kind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [base]\npatches:\n  - path: p.yaml\n"
        "  - path: j.yaml\n    target: {kind: Deployment}\n"
        "patchesStrategicMerge: [s.yaml]\nnamePrefix: x-\n"
    )
    (tmp_path / "p.yaml").write_text(
        "kind: Deployment\nmetadata: {name: web}\nspec:\n  paused: true\n"
    )
    (tmp_path / "j.yaml").write_text("- op: add\n  path: /spec/minReadySeconds\n  value: 1\n")
    (tmp_path / "s.yaml").write_text("kind: Deployment\nmetadata: {name: web}\n")
    docs = source_documents(tmp_path)
    obj = {"kind": "Deployment", "metadata": {"name": "x-web"}}
    assert locate(obj, "spec.paused", docs, tmp_path, tmp_path) == "p.yaml"
    assert locate(obj, "spec.replicas", docs, tmp_path, tmp_path) == "base/d.yaml"
    assert locate(None, "", docs, tmp_path, tmp_path) == "kustomization.yaml"
    assert locate({"kind": "Service"}, "", docs, tmp_path, tmp_path) == "kustomization.yaml"


def test_a_condition_the_rehearsal_cannot_judge_is_refused_here() -> None:
    # The guarded shape with anything but a plain comparison: refused at `make manifests` time,
    # naming the construct, instead of stopping the rehearsal later.
    guarded = "len(result) > 0 && !isNaN(result[0]) && "
    metric = {
        "name": "m",
        "successCondition": guarded + "max(result) >= {{args.min}}",
        "failureCondition": guarded + "result[0] < {{args.min}}",
        "provider": {"job": {}},
    }
    template = {
        "kind": "AnalysisTemplate",
        "metadata": {"name": "t"},
        "spec": {"args": [{"name": "min"}], "metrics": [metric]},
    }
    findings = list(check_templates([template]))
    assert [(f.field, "function 'max'" in f.message) for f in findings] == [
        ("spec.metrics[0].successCondition", True)
    ]
