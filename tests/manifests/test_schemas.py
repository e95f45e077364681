"""schemas/ is what the generator makes of the pinned CRDs ("run the generator, fail on diff"), and
the schemas judge like the API server of those versions: strict, integers are integers, fields a
newer controller added are unknown, free-form fields stay free. Each rule is shown on a real
rendered object, by the fast path and by the real kubeconform."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from scripts import gen_schemas, platform
from scripts.manifests.kubeconform import validate_rendered
from scripts.manifests.vocabulary import Obj
from scripts.manifests.schema import SchemaValidator
from tests.manifests.conftest import only

STAGING = "apps/digits-classifier/overlays/staging"
PRODUCTION = "apps/digits-classifier/overlays/production"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    """One real run of the generator over the pinned modules (no cache: 5-15 s)."""
    return gen_schemas.generate(cache=False)


def test_the_cache_returns_what_the_generator_makes(
    generated: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen_schemas, "CACHE_DIR", tmp_path)
    kinds = gen_schemas.KINDS[:1]
    first = gen_schemas.generate(kinds)
    assert first == {kinds[0].relpath: generated[kinds[0].relpath]}
    (stored,) = tmp_path.iterdir()
    assert stored.name == f"{gen_schemas.inputs_key(kinds)}.json"
    assert gen_schemas.generate(kinds) == first
    assert gen_schemas.inputs_key(kinds) != gen_schemas.inputs_key(gen_schemas.KINDS)


def test_committed_schemas_are_up_to_date(tmp_path: Path, generated: dict[str, str]) -> None:
    assert set(generated) == {k.relpath for k in gen_schemas.KINDS}
    assert gen_schemas.stale_files(generated, gen_schemas.SCHEMA_DIR) == []
    # and the check really detects drift and strays, and writing removes the strays
    gen_schemas.write(generated, tmp_path)
    (tmp_path / "argoproj.io" / "rollout_v1alpha1.json").write_text("{}\n")
    (tmp_path / "argoproj.io" / "stray_v1.json").write_text("{}\n")
    assert gen_schemas.stale_files(generated, tmp_path) == [
        "argoproj.io/rollout_v1alpha1.json",
        "argoproj.io/stray_v1.json",
    ]
    gen_schemas.write(generated, tmp_path)
    assert gen_schemas.stale_files(generated, tmp_path) == []


def test_check_mode_exit_codes(
    tmp_path: Path, generated: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gen_schemas, "generate", lambda: generated)
    assert gen_schemas.main(["--check"]) == 0
    assert gen_schemas.main(["--check", "--schema-dir", str(tmp_path)]) == 1
    assert gen_schemas.main(["--schema-dir", str(tmp_path)]) == 0
    assert gen_schemas.main(["--check", "--schema-dir", str(tmp_path)]) == 0


def test_a_missing_crd_is_an_error_naming_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = gen_schemas.CrdKind("argo-rollouts", "argoproj.io", "v1alpha1", "Rolout")
    real = gen_schemas.generate
    with pytest.raises(gen_schemas.SchemaGenError, match="argo-rollouts.* has no CRD for Rolout"):
        real([wrong])
    monkeypatch.setattr(gen_schemas, "generate", lambda: real([wrong]))
    assert gen_schemas.main(["--check"]) == 1


def test_provenance_and_layout() -> None:
    kind = gen_schemas.KINDS[0]
    assert kind.relpath == "argoproj.io/rollout_v1alpha1.json"
    doc = json.loads((gen_schemas.SCHEMA_DIR / kind.relpath).read_text())
    rollouts = platform.component("argo-rollouts")
    assert doc["$schema"] == gen_schemas.DRAFT
    assert f"argo-rollouts {rollouts.version}" in doc["$comment"]
    assert doc["additionalProperties"] is False


def test_every_kind_comes_from_a_platform_component() -> None:
    names = {c.name for c in platform.PLATFORM}
    assert {k.component for k in gen_schemas.KINDS} <= names
    assert gen_schemas.kind_of("Rollout", "argoproj.io/v1alpha1") == gen_schemas.KINDS[0]
    assert gen_schemas.kind_of("Rollout", "argoproj.io/v1beta1") is None


# ---- conversion rules on small CRD fragments --------------------------------------------------

META: dict[str, Any] = {"type": "object"}


def _convert(node: dict[str, Any]) -> dict[str, Any]:
    return gen_schemas._Converter(META, "test").convert(node, "X")


def test_objects_close_unless_the_crd_keeps_unknown_fields() -> None:
    closed = _convert({"type": "object", "properties": {"a": {"type": "string"}}})
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["type"] == ["string", "null"]  # optional: null is dropped
    empty = _convert({"type": "object"})
    assert empty["additionalProperties"] is False  # the API server prunes every field of it
    kept = _convert({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    assert "additionalProperties" not in kept
    mapped = _convert({"type": "object", "additionalProperties": {"type": "string"}})
    assert mapped["additionalProperties"] == {"type": "string"}


def test_value_branches_do_not_close_the_object() -> None:
    node = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "oneOf": [{"required": ["a"]}, {"properties": {"b": {"type": "string"}}}],
    }
    out = _convert(node)
    assert out["additionalProperties"] is False
    assert "additionalProperties" not in out["oneOf"][1]


def test_int_or_string_nullable_required_and_sets() -> None:
    out = _convert(
        {
            "type": "object",
            "required": ["port"],
            "properties": {
                "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}]},
                "mode": {"type": "string", "enum": ["a"], "nullable": True},
                "tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "x-kubernetes-list-type": "set",
                },
            },
        }
    )
    assert out["properties"]["port"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert out["properties"]["mode"]["enum"] == ["a", None]
    assert out["properties"]["tags"]["uniqueItems"] is True


def test_an_unknown_keyword_is_an_error_not_a_silent_pass() -> None:
    with pytest.raises(gen_schemas.SchemaGenError, match=r"X\.a uses \['x-new'\]"):
        _convert({"type": "object", "properties": {"a": {"type": "string", "x-new": 1}}})


# ---- the rules on real objects, fast path and kubeconform alike --------------------------------


def _verdicts(obj: Obj) -> tuple[list[str], list[str]]:
    """(fields the fast path names, fields kubeconform names) for one object."""
    fast = [f.field for f in SchemaValidator().validate(obj)]
    real = [f.field for f in validate_rendered({"t": [obj]})["t"]]
    return fast, real


def _edited(rendered: dict[str, list[Obj]], target: str, kind: str) -> Obj:
    return copy.deepcopy(only(rendered[target], kind))


def test_fields_newer_than_the_pinned_controllers_are_rejected(
    rendered: dict[str, list[Obj]],
) -> None:
    rollout = _edited(rendered, STAGING, "Rollout")
    rollout["spec"]["strategy"]["canary"]["replicaProgressThreshold"] = {"type": "Pod", "value": 1}
    field = "spec.strategy.canary.replicaProgressThreshold"
    assert _verdicts(rollout) == ([field], [field])
    monitor = _edited(rendered, STAGING, "PodMonitor")
    monitor["spec"]["scrapeNativeHistograms"] = True
    assert _verdicts(monitor) == (["spec.scrapeNativeHistograms"],) * 2
    service = _edited(rendered, PRODUCTION, "VirtualService")
    service["spec"]["http"][0]["retries"] = {"attempts": 3, "backoff": "1s"}
    assert _verdicts(service) == (["spec.http[0].retries.backoff"],) * 2
    service["spec"]["http"][0]["retries"] = {"attempts": 3}
    assert _verdicts(service) == ([], [])


@pytest.mark.parametrize("weight", [10.5, "10"])
def test_set_weight_is_an_integer(rendered: dict[str, list[Obj]], weight: object) -> None:
    rollout = _edited(rendered, STAGING, "Rollout")
    rollout["spec"]["strategy"]["canary"]["steps"][0] = {"setWeight": weight}
    field = "spec.strategy.canary.steps[0].setWeight"
    assert _verdicts(rollout) == ([field], [field])


def test_workflow_steps_are_a_list_of_parallel_groups(rendered: dict[str, list[Obj]]) -> None:
    template = _edited(rendered, STAGING, "WorkflowTemplate")
    steps = [[{"name": "a", "template": "prepare"}], [{"name": "b", "template": "train"}]]
    template["spec"]["templates"].append({"name": "sequence", "steps": steps})
    assert _verdicts(template) == ([], [])
    template["spec"]["templates"][-1]["steps"] = [{"name": "a", "template": "prepare"}]
    field = f"spec.templates[{len(template['spec']['templates']) - 1}].steps[0]"
    assert _verdicts(template) == ([field], [field])


def test_cron_workflow_schedules_exist_in_the_pinned_argo_workflows(
    rendered: dict[str, list[Obj]],
) -> None:
    cron = _edited(rendered, STAGING, "CronWorkflow")
    assert cron["spec"]["schedules"] and _verdicts(cron) == ([], [])
    cron["spec"]["schedules"] = cron["spec"]["schedules"][0]  # a list of cron lines, not one
    assert _verdicts(cron) == (["spec.schedules"],) * 2


def test_metadata_is_strict_object_meta(rendered: dict[str, list[Obj]]) -> None:
    rule = _edited(rendered, STAGING, "PrometheusRule")
    rule["metadata"]["annotation"] = {"a": "b"}
    assert _verdicts(rule) == (["metadata.annotation"],) * 2


def test_helm_values_are_free_but_application_fields_strict() -> None:
    app: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "a"},
        "spec": {
            "project": "p",
            "destination": {"server": "https://kubernetes.default.svc"},
            "source": {"repoURL": "r", "chart": "c", "helm": {"valuesObject": {"any": {"x": 1}}}},
        },
    }
    assert _verdicts(app) == ([], [])
    app["spec"]["syncPolicyy"] = {}
    assert _verdicts(app) == (["spec.syncPolicyy"],) * 2
