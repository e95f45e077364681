"""The pieces of `make gitops-up` that need no cluster: the pod-spec-to-process translation of
Argo CD's install manifests, the substituted platform Applications, the served repository and
its time-scaling commit, the git server and its proxy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from scripts.cluster.canary import rollout_of, scale_time
from scripts.cluster.pki import Pki
from scripts.engines import engine_of, program_path
from scripts.gitops import argocd, served, substitutes
from scripts.gitops.__main__ import (
    GitopsError,
    generated_overlays,
    local_settings,
    model_of_app,
    root_application,
    storage_stand_ins,
    drop_held_operation,
    sync_by_hand,
    wanted_images,
    with_settings,
)
from scripts.gitops.git_server import read_body, split_cgi
from scripts.manifests.render import render_overlay
from scripts.platform import CHARTS, component
from scripts.processes import ManagedProcess, free_port, wait_until
from scripts.repo_copy import copy_repo

REPO = Path(__file__).resolve().parents[2]


def test_the_argo_cd_pin_is_one_version() -> None:
    """The engine built and the CRDs/schemas/install manifests come from one Argo CD."""
    assert engine_of("argocd").version() == component("argo-cd").version


# ---- install.yaml as processes -------------------------------------------------------------


@pytest.fixture(scope="module")
def install() -> tuple[list[dict[str, Any]], list[argocd.Workload]]:
    return argocd.read_install()


def test_install_is_applied_without_crds_and_workloads(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]],
) -> None:
    objects, workloads = install
    kinds = {o["kind"] for o in objects}
    assert not kinds & {"CustomResourceDefinition", "Deployment", "StatefulSet"}
    assert {"ClusterRole", "Role", "ConfigMap", "Secret", "ServiceAccount"} <= kinds
    assert all(
        o["metadata"]["namespace"] == "argocd"
        for o in objects
        if o["kind"] not in ("ClusterRole", "ClusterRoleBinding")
    )
    names = {w.name for w in workloads}
    assert set(argocd.RUN) <= names and set(argocd.NOT_RUN) <= names
    controller = next(w for w in workloads if w.name == "argocd-application-controller")
    assert (controller.kind, controller.service_account) == (
        "StatefulSet",
        "argocd-application-controller",
    )


def cluster_data(kind: str, name: str) -> dict[str, str] | None:
    data = {
        ("Secret", "argocd-redis"): {"auth": "s3cret"},
        ("ConfigMap", "argocd-cmd-params-cm"): {"repo.server": "127.0.0.1:1"},
        ("ConfigMap", "argocd-cm"): {"timeout.reconciliation": "10s"},
        ("ConfigMap", "argocd-tls-certs-cm"): {"gitlab.example.com": "PEM"},
        ("ConfigMap", "argocd-ssh-known-hosts-cm"): {"ssh_known_hosts": "x"},
        ("ConfigMap", "argocd-gpg-keys-cm"): {},
    }
    return data.get((kind, name))


def lookup(kind: str, name: str, key: str) -> str | None:
    return (cluster_data(kind, name) or {}).get(key)


def spec_of(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]], name: str, folder: Path
) -> argocd.ProcessSpec:
    workload = next(w for w in install[1] if w.name == name)
    ports = {key: 10000 + i for i, key in enumerate(argocd.listeners(name))}
    return argocd.process_spec(workload, folder, lookup, cluster_data, ports, {"EXTRA": "1"})


def test_the_repo_server_runs_as_its_pod_would(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]], tmp_path: Path
) -> None:
    spec = spec_of(install, "argocd-repo-server", tmp_path)
    assert Path(spec.argv[0]).name == "argocd" and spec.argv[1] == "repo-server"
    assert spec.argv[2:] == ["--port=10000", "--metrics-port=10001"]
    env = spec.env
    # valueFrom resolved from the cluster; optional keys that are missing are left out
    assert env["REDIS_PASSWORD"] == "s3cret"
    assert env["ARGOCD_RECONCILIATION_TIMEOUT"] == "10s"
    assert "ARGOCD_REPO_SERVER_LOGLEVEL" not in env
    # mounted ConfigMaps are folders, and Argo CD reads them there
    tls = Path(env["ARGOCD_TLS_DATA_PATH"])
    assert (tls / "gitlab.example.com").read_text() == "PEM"
    assert Path(env["TMPDIR"]).is_dir() and env["TMPDIR"].startswith(str(tmp_path))
    assert env["HELM_CACHE_HOME"].startswith(str(tmp_path))  # /helm-working-dir moved too
    assert env["EXTRA"] == "1"
    assert str(Path(env["PATH"].split(os.pathsep)[0]).name).startswith("kustomize-")
    assert spec.ready_url == "http://127.0.0.1:10001/healthz"


def test_redis_gets_the_password_its_pod_would(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]], tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is missing: `make bootstrap` installs it (system-packages.txt)")
    spec = spec_of(install, "argocd-redis", tmp_path)
    assert Path(spec.argv[0]).name == "redis-server"
    assert "--requirepass s3cret" in spec.argv  # $(REDIS_PASSWORD) expanded, as the kubelet does
    assert spec.argv[-2:] == ["--port", "10000"]


def test_a_missing_required_setting_names_what_and_where(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]], tmp_path: Path
) -> None:
    workload = next(w for w in install[1] if w.name == "argocd-application-controller")
    with pytest.raises(argocd.ArgoCDError, match="REDIS_PASSWORD needs Secret argocd/argocd-redis"):
        argocd.process_spec(workload, tmp_path, lambda *a: None, lambda *a: None, {"8082": 1}, {})


def test_env_expansion_follows_kubernetes() -> None:
    env = {"A": "x"}
    assert argocd._expand("$(A)-$(B)-$$(A)", env) == "x-$(B)-$(A)"


def test_local_settings_land_in_upstream_configmaps(
    install: tuple[list[dict[str, Any]], list[argocd.Workload]],
) -> None:
    objects = [dict(o) for o in install[0]]
    settings = local_settings({"repo": 1, "redis": 2}, 5, "PEM", "gitlab.example.com")
    merged = {o["metadata"]["name"]: o for o in with_settings(objects, settings)}
    assert merged["argocd-cmd-params-cm"]["data"]["repo.server"] == "127.0.0.1:1"
    assert merged["argocd-cm"]["data"]["timeout.reconciliation"] == "5s"
    # upstream's own keys stay
    assert "resource.customizations.ignoreResourceUpdates.all" in merged["argocd-cm"]["data"]
    assert merged["argocd-tls-certs-cm"]["data"] == {"gitlab.example.com": "PEM"}


# ---- substituted platform Applications ----------------------------------------------------


def test_every_chart_has_a_stand_in_statement() -> None:
    assert {c.name for c in CHARTS} <= set(substitutes.STAND_INS)


def test_chart_applications_are_marked_and_others_left_to_argo_cd() -> None:
    objects = render_overlay(REPO / "clusters/staging")
    marked = {
        o["metadata"]["name"]: substitutes.substitute(o)
        for o in objects
        if o["kind"] == "Application"
    }
    assert marked["root-staging"] is None
    rollouts = marked["argo-rollouts"]
    assert rollouts is not None
    annotations = rollouts["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/skip-reconcile"] == "true"
    assert "real Argo Rollouts controller v1.8.3" in annotations[substitutes.SUBSTITUTED]
    assert rollouts["status"]["health"]["status"] == "Healthy"
    assert (
        rollouts["spec"]
        == next(o for o in objects if o["metadata"]["name"] == "argo-rollouts")["spec"]
    )
    assert root_application(objects, "staging")["metadata"]["name"] == "root-staging"


# ---- the served repository ----------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("gitops-source"))


def test_serving_puts_the_ref_on_main_of_a_bare_repository(source: Path, tmp_path: Path) -> None:
    url = "https://gitlab.example.com/mlops/gitops.git"
    result = served.serve(source, "HEAD", tmp_path, url)
    assert result.bare == tmp_path / "mlops/gitops.git"
    head = served.git(result.bare, "rev-parse", "main")
    assert head == result.head == result.source_commit
    with pytest.raises(served.ServeError, match="no commit 'nope'"):
        served.serve(source, "nope", tmp_path, url)
    with pytest.raises(served.ServeError, match="expected https://<host>/<group>/<name>.git"):
        served.bare_path(tmp_path, "https://gitlab.example.com/../x")


def test_the_time_scaling_commit_matches_the_canary_rule(source: Path, tmp_path: Path) -> None:
    """Rendered from the scaled commit, the overlay carries what scale_time makes of it."""
    result = served.serve(source, "HEAD", tmp_path, "https://h.example/g/r.git", time_factor=60)
    assert result.head != result.source_commit and result.scaled
    message = served.git(result.bare, "log", "-1", "--format=%B", "main")
    assert message.startswith("local: canary pauses and analysis intervals / 60")
    work = tmp_path / "work"
    served.git(tmp_path, "clone", "-q", str(result.bare), str(work))
    overlay = "apps/digits-classifier/overlays/staging"
    scaled = render_overlay(work / overlay)
    expected = render_overlay(source / overlay)
    scale_time(expected, 60)

    def timings(objects: list[dict[str, Any]]) -> list[Any]:
        steps = rollout_of(objects)["spec"]["strategy"]["canary"]["steps"]
        metrics = [
            (o["metadata"]["name"], m.get("interval"), m.get("initialDelay"))
            for o in objects
            if o["kind"] == "AnalysisTemplate"
            for m in o["spec"]["metrics"]
        ]
        return [s.get("pause") for s in steps] + metrics

    assert timings(scaled) == timings(expected)
    assert "[5m]" in str(scaled)  # PromQL windows untouched
    # comments survive: the first line of every manifest says what it is
    steps = (work / "rollouts/strategies/canary-standard/steps.yaml").read_text()
    assert steps.startswith("# Steps of the") and "duration: 2s" in steps


# ---- the git server and the network to it -------------------------------------------------


def test_cgi_output_and_chunked_bodies() -> None:
    status, headers, body = split_cgi(
        b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno"
    )
    assert (status, headers, body) == (404, [("Content-Type", "text/plain")], b"no")

    class Handler:
        headers = {"Transfer-Encoding": "chunked"}

        def __init__(self, data: bytes) -> None:
            import io

            self.rfile = io.BytesIO(data)

    assert read_body(Handler(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")) == b"abcde"  # type: ignore


def test_a_clone_fetches_and_pushes_through_the_proxy_and_nothing_else_is_reachable(
    source: Path, tmp_path: Path
) -> None:
    url = "https://gitlab.example.com/mlops/gitops.git"
    result = served.serve(source, "HEAD", tmp_path / "root", url)
    pki = Pki(tmp_path / "pki")
    pki.ensure()
    pair = pki.serving("git-server", ("gitlab.example.com",))
    port, proxy_port = free_port(), free_port()
    server = ManagedProcess(
        "git-server",
        [
            sys.executable,
            "-m",
            "scripts.gitops.git_server",
            f"--root={tmp_path / 'root'}",
            "--name=gitlab.example.com",
            f"--cert={pair.cert}",
            f"--key={pair.key}",
            f"--port={port}",
            f"--proxy-port={proxy_port}",
        ],
        tmp_path / "git-server.log",
        cwd=REPO,
    )
    server.start()
    try:
        wait_until(
            lambda: "ready" in (tmp_path / "git-server.log").read_text(), 20, "git server", server
        )
        env = {
            **os.environ,
            "HTTPS_PROXY": f"http://127.0.0.1:{proxy_port}",
            "GIT_SSL_CAINFO": str(pki.ca.cert),
        }
        clone = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", url, str(clone)], env=env, check=True)
        assert served.git(clone, "rev-parse", "HEAD") == result.head
        served.git(clone, "commit", "-q", "--allow-empty", "-m", "pushed")
        subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=clone, env=env, check=True)
        assert served.git(result.bare, "log", "-1", "--format=%s", "main") == "pushed"
        other = subprocess.run(
            ["git", "ls-remote", "https://github.com/argoproj/argo-helm.git"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert other.returncode != 0 and "403" in other.stderr
    finally:
        server.stop()
    assert "refused CONNECT github.com:443" in (tmp_path / "git-server.log").read_text()


# ---- what up creates besides Argo CD's own objects -------------------------------------------


def test_each_generated_app_gets_its_own_model_and_a_volume_per_claim(tmp_path: Path) -> None:
    cluster_objects = render_overlay(REPO / "clusters/staging")
    overlays = generated_overlays(REPO, cluster_objects)
    assert sorted(app for app, _ in overlays) == [
        "breast-cancer",
        "breast-cancer",
        "digits-classifier",
        "digits-classifier",
    ]
    images = wanted_images(overlays)
    assert images == {
        "registry.example.com/mlops/breast-cancer:0.1.0": "breast-cancer",
        "registry.example.com/mlops/digits-classifier:0.1.0": "digits-classifier",
    }
    volumes = storage_stand_ins(overlays, tmp_path)
    claims = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for _, objects in overlays
        for o in objects
        if o["kind"] == "PersistentVolumeClaim"
    }
    assert (
        claims
        and {(v["spec"]["claimRef"]["namespace"], v["spec"]["claimRef"]["name"]) for v in volumes}
        == claims
    )
    assert all(v["spec"]["hostPath"]["path"].startswith(str(tmp_path)) for v in volumes)


def test_an_untrained_model_is_named_with_the_command_that_makes_it(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text((REPO / "models.yaml").read_text())
    with pytest.raises(GitopsError) as error:
        model_of_app(tmp_path, "breast-cancer")
    assert str(tmp_path / "models/breast-cancer/model.onnx") in str(error.value)
    assert "make pipeline MODEL=breast-cancer" in str(error.value)
    with pytest.raises(GitopsError, match="no model with app 'nope'"):
        model_of_app(tmp_path, "nope")


def rendered_targets() -> list[Path]:
    return sorted(REPO.glob("apps/*/overlays/*")) + [
        REPO / "clusters" / name for name in ("staging", "production")
    ]


@pytest.mark.parametrize("target", rendered_targets(), ids=lambda p: str(p.relative_to(REPO)))
def test_the_repo_servers_kustomize_renders_what_pykustomize_renders(target: Path) -> None:
    """Argo CD's repo server runs the kustomize engine (v5.8.2); `make manifests` validates
    pykustomize's rendering (kustomize/api v0.21.3): both must produce the same objects."""
    result = subprocess.run(
        [str(program_path("kustomize")), "build", str(target)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    by_engine = [d for d in yaml.safe_load_all(result.stdout) if d]

    def key(obj: dict[str, Any]) -> str:
        return json.dumps(obj, sort_keys=True)

    assert sorted(map(key, by_engine)) == sorted(map(key, render_overlay(target)))


class FakeApplications:
    """The Applications resource as the API server keeps it: an update at a stale
    resourceVersion is a 409 conflict."""

    def __init__(self, app: dict[str, Any], conflicts: int = 0) -> None:
        self.app = {**app, "metadata": {**app["metadata"], "resourceVersion": "1"}}
        self.conflicts = conflicts
        self.updates = 0
        self.gets = 0

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.gets += 1
        return json.loads(json.dumps(self.app))

    def replace_namespaced_custom_object(self, *args: Any) -> None:
        body = args[-1]
        if self.conflicts:
            self.conflicts -= 1
            self.app["metadata"]["resourceVersion"] = str(
                int(self.app["metadata"]["resourceVersion"]) + 1
            )
            raise ApiException(status=409, reason="Conflict")
        assert body["metadata"]["resourceVersion"] == self.app["metadata"]["resourceVersion"]
        self.updates += 1
        self.app = body


APP = "digits-classifier-production"
PRODUCTION_APP: dict[str, Any] = {
    "metadata": {"name": APP},
    "spec": {
        "syncPolicy": {
            "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"],
            "retry": {"limit": 5},
        }
    },
    "status": {"operationState": {"phase": "Succeeded", "message": "an earlier sync"}},
}


def test_a_hand_sync_carries_the_apps_options_and_clears_the_last_state() -> None:
    apps = FakeApplications(PRODUCTION_APP, conflicts=2)
    sync_by_hand(apps, APP, "release-manager")  # type: ignore[arg-type]
    operation = apps.app["operation"]
    assert operation["initiatedBy"] == {"username": "release-manager"}
    assert operation["sync"]["syncOptions"] == ["CreateNamespace=true", "ServerSideApply=true"]
    assert operation["retry"] == {"limit": 5}
    assert "operationState" not in apps.app["status"]
    assert apps.updates == 1  # after two conflicts, one update at the current version


class EndingOperation(FakeApplications):
    """An automated sync that the controller ends just before read number ``ends_at``."""

    def __init__(self, app: dict[str, Any], ends_at: int) -> None:
        super().__init__(app)
        self.ends_at = ends_at

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        if self.gets + 1 == self.ends_at:
            del self.app["operation"]
        return super().get_namespaced_custom_object(*args)


RUNNING: dict[str, Any] = {
    **PRODUCTION_APP,
    "operation": {"initiatedBy": {"automated": True}, "sync": {}},
    "status": {"operationState": {"phase": "Running", "message": "one wave to go"}},
}


def test_a_hand_sync_asks_again_until_the_running_operation_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("scripts.gitops.__main__.time.sleep", lambda seconds: None)
    apps = EndingOperation(RUNNING, ends_at=3)
    sync_by_hand(apps, APP, "release-manager", retry_for=60)  # type: ignore[arg-type]
    assert apps.app["operation"]["initiatedBy"] == {"username": "release-manager"}
    assert apps.updates == 1
    # without retry_for the first refusal is the answer
    once = EndingOperation(RUNNING, ends_at=3)
    with pytest.raises(GitopsError, match="another operation is already in progress"):
        sync_by_hand(once, APP, "release-manager")  # type: ignore[arg-type]
    assert once.updates == 0


def test_a_hand_sync_gives_up_when_its_time_is_over(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 10))  # each look at the clock: 10 s later
    monkeypatch.setattr("scripts.gitops.__main__.time.monotonic", lambda: float(next(clock)))
    monkeypatch.setattr("scripts.gitops.__main__.time.sleep", lambda seconds: None)
    apps = EndingOperation(RUNNING, ends_at=100)
    with pytest.raises(GitopsError, match="another operation is already in progress$"):
        sync_by_hand(apps, APP, "release-manager", retry_for=30)  # type: ignore[arg-type]
    assert apps.gets == 3  # asked at 0, 10 and 20 s; at 30 s its time is over
    assert apps.updates == 0


def test_a_hand_sync_is_refused_while_an_operation_runs_and_a_held_one_can_be_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a fake clock: an implementation that waited on a held operation fails here at once
    # (more than one read) instead of hanging for the hour it was given
    clock = iter(range(0, 100000, 10))
    monkeypatch.setattr("scripts.gitops.__main__.time.monotonic", lambda: float(next(clock)))
    monkeypatch.setattr("scripts.gitops.__main__.time.sleep", lambda seconds: None)
    held = {
        **PRODUCTION_APP,
        "operation": {"initiatedBy": {"automated": True}, "sync": {}},
        "status": {
            "operationState": {
                "phase": "Running",
                "message": "Sync operation blocked by sync window",
            }
        },
    }
    apps = FakeApplications(held)
    with pytest.raises(GitopsError, match="another operation is already in progress .held by"):
        # a held operation never ends by itself: refused at once, however long one would wait
        sync_by_hand(apps, APP, "platform-admin", retry_for=3600)  # type: ignore[arg-type]
    assert (
        apps.gets == 1
        and apps.updates == 0
        and apps.app["operation"]["initiatedBy"] == {"automated": True}
    )
    drop_held_operation(apps, APP)  # type: ignore[arg-type]
    assert "operation" not in apps.app and "operationState" not in apps.app["status"]
    sync_by_hand(apps, APP, "platform-admin")  # type: ignore[arg-type]
    assert apps.app["operation"]["initiatedBy"] == {"username": "platform-admin"}
    # a sync that is merely running is not the admin's to drop
    running = FakeApplications(
        {**held, "status": {"operationState": {"phase": "Running", "message": "waiting"}}}
    )
    with pytest.raises(GitopsError, match="no operation is held by a sync window"):
        drop_held_operation(running, APP)  # type: ignore[arg-type]
