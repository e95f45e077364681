"""The real kubeconform (the pinned build of tools/engines/kubeconform) runs in `make manifests`
and agrees with the fast path: every corpus case the fast path rejects on schema, kubeconform
rejects too, naming the same object and field; the repository itself passes both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scripts.gen_schemas import kubernetes_schema_dir
from scripts.manifests import kubeconform
from scripts.manifests.cli import main
from scripts.manifests.vocabulary import Problem, TargetResult
from scripts.manifests.schema import KUBERNETES_VERSION
from scripts.manifests.validate import Checks, validate_target
from scripts.engines import engine_of
from tests.manifests.conftest import CORPUS

CASES = sorted(p for p in CORPUS.iterdir() if (p / "expect.yaml").is_file())


def _schema_problems(problems: list[Problem], check: str) -> set[tuple[str, str, str]]:
    return {(p.file, p.obj, p.field) for p in problems if p.check == check}


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_kubeconform_rejects_what_the_fast_path_rejects(
    case: Path, contract_metrics: set[str]
) -> None:
    result = validate_target(case, Checks(contract_metrics, "contract", promtool=False))
    fast = _schema_problems(result.problems, "schema")
    real = _schema_problems(result.problems, "kubeconform")
    assert fast == real, "\n".join(map(str, result.problems))
    assert not [p for p in result.problems if p.check == "schema-agreement"]


def test_the_corpus_has_schema_cases_for_both_engines(contract_metrics: set[str]) -> None:
    expected = {
        "typo-service-field",
        "typo-rollout-field",
        "typo-container-field",
        "wrong-type",
        "missing-required-field",
        "wrong-kind",
        "wrong-apiversion",
        "setweight-not-integer",
        "rollout-field-newer-than-controller",
    }
    checks = Checks(contract_metrics, "contract", promtool=False)
    for name in sorted(expected):
        expect = yaml.safe_load((CORPUS / name / "expect.yaml").read_text())
        result = validate_target(CORPUS / name, checks)
        named = [p for p in result.problems if p.check == "kubeconform"]
        assert [p.field for p in named] == [expect["field"]], name
        assert named[0].file == f"tests/manifests/corpus/{name}/{expect['file']}"
        assert named[0].obj == expect["object"]


def test_the_repository_passes_kubeconform(results: dict[str, TargetResult]) -> None:
    checks = {p.check for r in results.values() for p in r.problems}
    assert "kubeconform" not in checks and "schema-agreement" not in checks
    assert sum(len(r.objects) for r in results.values()) > 100


def test_disagreement_is_reported(
    contract_metrics: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If kubeconform saw nothing wrong where the fast path does, the run says so."""
    monkeypatch.setattr(kubeconform, "run", lambda files, core_dir, schema_dir: [])
    case = CORPUS / "typo-rollout-field"
    result = validate_target(case, Checks(contract_metrics, "contract", promtool=False))
    (agreement,) = [p for p in result.problems if p.check == "schema-agreement"]
    assert agreement.obj == "Rollout/demo" and agreement.field == "spec.strategy.canary.stepz"
    assert "schema rejects this object and kubeconform accepts it" in agreement.message


def test_a_missing_binary_fails_the_run_with_what_to_do(
    contract_metrics: set[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFORM", str(tmp_path / "nowhere"))
    result = validate_target(
        CORPUS / "typo-rollout-field", Checks(contract_metrics, "contract", promtool=False)
    )
    (problem,) = [p for p in result.problems if p.check == "kubeconform"]
    assert "KUBECONFORM=" in problem.message and "not an executable file" in problem.message


def test_core_schemas_are_made_standalone(tmp_path: Path) -> None:
    """kubernetes-validate's files reach `_definitions.json` by a `$ref` kubeconform cannot
    resolve; the standalone copy carries what it needs, even for recursive definitions."""
    source = kubernetes_schema_dir(KUBERNETES_VERSION)
    raw = (source / "service-v1.json").read_text()
    assert '"/api/_definitions.json#' in raw
    schema = kubeconform.standalone_core_schema(source / "service-v1.json")
    text = json.dumps(schema)
    assert "_definitions.json" not in text
    assert "io.k8s.api.core.v1.ServiceSpec" in schema["$defs"]
    crd = kubeconform.standalone_core_schema(
        source / kubeconform.core_file_name("CustomResourceDefinition", "apiextensions.k8s.io/v1")
    )
    props = "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    assert props in crd["$defs"] and f'"#/$defs/{props}"' in json.dumps(crd["$defs"][props])


def test_file_names_follow_kubeconform_template() -> None:
    assert kubeconform.core_file_name("Service", "v1") == "service-v1.json"
    assert kubeconform.core_file_name("Deployment", "apps/v1") == "deployment-apps-v1.json"
    assert (
        kubeconform.core_file_name("NetworkPolicy", "networking.k8s.io/v1")
        == "networkpolicy-networking-v1.json"
    )


def test_field_paths_from_kubeconform_messages() -> None:
    verdict = kubeconform.Verdict(
        "f",
        "Deployment",
        "d",
        "statusInvalid",
        "problem validating schema. Check JSON formatting: jsonschema validation failed with "
        "'file:///x#' - at '/spec': validation failed   - at '/spec/template/spec/containers/0':"
        " additional properties 'a', 'b' not allowed   - at '/spec/replicas': anyOf failed"
        "     - at '/spec/replicas': got string, want integer"
        "     - at '/spec/replicas': got string, want null",
        (("/spec", "validation failed"),),
    )
    found = [(f.field, f.message) for f in kubeconform.findings(verdict, None)]
    assert found == [
        ("spec.template.spec.containers[0].a", "additional properties 'a', 'b' not allowed"),
        ("spec.template.spec.containers[0].b", "additional properties 'a', 'b' not allowed"),
        ("spec.replicas", "got string, want integer; got string, want null"),
    ]


def test_cli_runs_kubeconform_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "k.xml"
    case = str(CORPUS / "typo-rollout-field")
    assert main(["kubeconform", case, "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "spec.strategy.canary.stepz" in out and engine_of("kubeconform").version() in out
    assert 'name="kubeconform"' in junit.read_text()
    assert main(["kubeconform", str(CORPUS / "selector-mismatch")]) == 0
