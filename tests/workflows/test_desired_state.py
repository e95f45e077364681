"""Every rendered app of models.yaml: the drift CronJob, the generated workflows and the references
between them resolve after kustomize's namePrefix, each app's objects carry its own names and
images, the Workflow schemas are live in the manifests tool, and every dashboard query names a
metric the service or the drift job really exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml


from ml.catalog import ModelEntry, load_catalog
from ml.config import load_params, resolved_params
from scripts.workflows.dashboard import dashboard, queries, variable_metrics
from ml.monitoring.metrics import exposition
from ml.serving.model import LoadedModel
from scripts.manifests.metric_refs import (
    PLATFORM_METRICS,
    check_metrics,
    exported_metric_names,
    job_metric_names,
    promql_metric_names,
)
from scripts.manifests.render import render_overlay
from scripts.manifests.schema import SchemaValidator
from tests.conftest import REPO
from tests.serving.conftest import AsgiClient, make_app, make_onnx, write_registration

OVERLAYS = ("dev", "staging", "production")
SCHEMA_DIR = REPO / "schemas"
CATALOG = load_catalog(REPO / "models.yaml")


@pytest.fixture(scope="module", params=CATALOG.names)
def entry(request: pytest.FixtureRequest) -> ModelEntry:
    return CATALOG.get(request.param)


@pytest.fixture(scope="module")
def rendered(entry: ModelEntry) -> dict[str, list[dict[str, Any]]]:
    return {env: render_overlay(REPO / "apps" / entry.app / "overlays" / env) for env in OVERLAYS}


def one(objects: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def names(objects: list[dict[str, Any]], kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("env", OVERLAYS)
def test_references_resolve_after_the_name_prefix(
    rendered: dict[str, list[dict[str, Any]]], env: str, entry: ModelEntry
) -> None:
    objects = rendered[env]
    cron = one(objects, "CronJob", "drift-monitor")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = pod["containers"][0]["args"][0]
    arguments = script.split()
    service = arguments[arguments.index("--service-dns") + 1].split(":")[0]
    assert service in names(objects, "Service")
    headless = one(objects, "Service", "server-pods")
    assert headless["spec"]["clusterIP"] == "None"
    template = arguments[arguments.index("--argo-template") + 1]
    assert template in names(objects, "WorkflowTemplate")
    assert pod["serviceAccountName"] in names(objects, "ServiceAccount")
    assert pod["volumes"][0]["configMap"]["name"] in names(objects, "ConfigMap")
    claim = pod["volumes"][1]["persistentVolumeClaim"]["claimName"]
    assert claim in names(objects, "PersistentVolumeClaim")
    config = pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    assert config in names(objects, "ConfigMap")
    trainer = f"registry.example.com/mlops/{entry.trainer_image}:0.1.0"
    assert pod["containers"][0]["image"] == trainer
    assert service == f"{entry.app}-server-pods" and template == f"{entry.app}-training"
    assert "--trigger" in arguments and "--dry-run" not in arguments

    workflow = one(objects, "WorkflowTemplate")
    assert workflow["spec"]["serviceAccountName"] in names(objects, "ServiceAccount")
    assert (
        workflow["spec"]["executor"]["serviceAccountName"] == workflow["spec"]["serviceAccountName"]
    )
    token = one(objects, "Secret", "service-account-token")
    sa = workflow["spec"]["serviceAccountName"]
    # Argo finds the executor's token by this name, Kubernetes fills it by the annotation
    assert token["metadata"]["name"] == f"{sa}.service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == sa
    images = {t["container"]["image"] for t in workflow["spec"]["templates"] if "container" in t}
    assert images == {trainer}
    cronworkflow = one(objects, "CronWorkflow")
    assert cronworkflow["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == (
        workflow["metadata"]["name"]
    )
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["roleRef"]["name"] in names(objects, "Role")
        assert {s["name"] for s in binding["subjects"]} <= names(objects, "ServiceAccount")

    rollout = one(objects, "Rollout")
    env_vars = {e["name"]: e for e in rollout["spec"]["template"]["spec"]["containers"][0]["env"]}
    sample_secret = env_vars["SAMPLE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
    job_env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert job_env["SAMPLE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == sample_secret
    assert "ADMIN_TOKEN" in env_vars  # the patch appended, it did not replace


def test_schedules_and_params_follow_the_models_params(
    rendered: dict[str, list[dict[str, Any]]], entry: ModelEntry
) -> None:
    params = load_params(REPO / entry.params, REPO / "params.yaml")
    objects = rendered["production"]
    assert one(objects, "CronJob")["spec"]["schedule"] == params.monitoring.drift.schedule
    assert one(objects, "CronWorkflow")["spec"]["schedules"] == [params.monitoring.retrain.schedule]
    job_params = one(objects, "ConfigMap", "drift-monitor-params")["data"]["params.yaml"]
    # the model's own params merged over the shared ones: the job needs no second file
    assert yaml.safe_load(job_params) == resolved_params(params)


def test_the_apps_schedules_differ_as_declared() -> None:
    """A main model retrains weekly, a minor one monthly (each model's params)."""
    schedules = {
        e.name: load_params(REPO / e.params, REPO / "params.yaml").monitoring.retrain.schedule
        for e in CATALOG.entries
    }
    assert schedules == {"digits": "0 3 * * 1", "breast-cancer": "0 4 1 * *"}


def test_the_drift_job_may_reach_the_pods_and_nothing_unexpected(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["staging"]
    policy = one(objects, "NetworkPolicy", "drift-monitor-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert ports == [53, 53, 2746, 8080, 9091]
    pods = policy["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
    assert pods["app.kubernetes.io/component"] == "model-server"


def test_the_manifests_tool_validates_workflows_against_their_schema(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    validator = SchemaValidator(SCHEMA_DIR)
    workflow = one(rendered["dev"], "WorkflowTemplate")
    cron = one(rendered["dev"], "CronWorkflow")
    assert validator.validate(workflow) == [] and validator.validate(cron) == []
    broken = json.loads(json.dumps(workflow))
    broken["spec"]["templates"][1]["container"]["gpu"] = 1  # not a field
    (finding,) = validator.validate(broken)
    assert finding.check == "schema" and "gpu" in finding.message


# -- metric names: dashboard and alerts ----------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """What the service's /metrics really exposes (an in-process service) plus the drift job."""
    path = make_onnx(tmp_path_factory.mktemp("model") / "model.onnx")
    write_registration(path)
    from ml.serving.model import load_model

    model: LoadedModel = load_model(str(path))
    response = AsgiClient(make_app(model)).get("/metrics")
    assert response.status == 200
    return exported_metric_names(response.body.decode()) | exported_metric_names(exposition())


def test_every_dashboard_query_names_an_exported_metric(exported: set[str]) -> None:
    document = dashboard("digits-classifier")
    exprs = queries(document)
    assert len(exprs) >= 25
    allowed = exported | set(PLATFORM_METRICS)
    for expr in exprs:
        assert promql_metric_names(expr) <= allowed, expr
    assert variable_metrics(document) == {"inference_model_info"} <= exported
    used = set().union(*(promql_metric_names(e) for e in exprs))
    # the dashboard shows the drift job's signals and the service's canary view
    assert {
        "drift_feature_group_score",
        "drift_detected",
        "retrain_cooldown_remaining_seconds",
    } <= used
    assert any("rollouts_pod_template_hash" in e for e in exprs)


def test_the_committed_dashboard_configmaps_are_loadable_and_unique() -> None:
    uids = set()
    for entry in CATALOG.entries:
        path = REPO / "apps" / entry.app / "base/continuous-training/dashboard.yaml"
        configmap = yaml.safe_load(path.read_text())
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        (text,) = configmap["data"].values()
        document = json.loads(text)
        assert document == dashboard(entry.app)
        ids = [p["id"] for p in document["panels"]]
        assert len(ids) == len(set(ids))
        uids.add(document["uid"])
    # Grafana keys dashboards by uid: one per app, or the apps overwrite each other
    assert len(uids) == len(CATALOG.entries)


def test_alert_expressions_name_only_exported_metrics(exported: set[str]) -> None:
    """The manifests tool's own check, with the live names of the service and the drift job."""
    rule = yaml.safe_load((REPO / "apps/_shared/model-service/prometheusrule.yaml").read_text())
    assert list(check_metrics([rule], exported)) == []
    drift = [g for g in rule["spec"]["groups"] if g["name"] == "model-service.drift"][0]
    used = set().union(*(promql_metric_names(r["expr"]) for r in drift["rules"]))
    assert used and used <= job_metric_names()
    # a typo is caught
    broken = json.loads(json.dumps(rule))
    broken["spec"]["groups"][-1]["rules"][0]["expr"] = "drift_detectd == 1"
    assert [f.message for f in check_metrics([broken], exported)][0].startswith(
        "metric 'drift_detectd'"
    )


def test_promtool_unit_tests_of_the_drift_alerts_pass(tmp_path: Path) -> None:
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/bootstrap.sh installs Debian's prometheus"
    rule = yaml.safe_load((REPO / "apps/_shared/model-service/prometheusrule.yaml").read_text())
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(REPO / "tests/manifests/alerts/drift.test.yaml", tmp_path)
    done = subprocess.run(
        [promtool, "test", "rules", "drift.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
