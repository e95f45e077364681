"""`make gitops-up` / `gitops-down` / `gitops-status`: Argo CD syncing a cluster from git.

python -m scripts.gitops up [--cluster staging] [--source .] [--ref HEAD] [--time-factor 1]
python -m scripts.gitops status
python -m scripts.gitops down

On the local cluster of `make cluster-up`: serves REF of the repository under the repoURL of
clusters/ (scripts/gitops/git_server.py, served.py), runs Argo CD's application controller,
repo server, ApplicationSet controller and Redis as processes from upstream's install manifests
(argocd.py), marks the Helm-chart platform Applications as substituted (substitutes.py), applies
the cluster's root Application and its AppProject once by hand (the bootstrap step of
clusters/README.md), and waits until Argo CD has synced everything to Synced and Healthy. It
prints each phase's time, and what was substituted. The processes keep running after it
returns (`make cluster-down` stops them too); `down` stops them, deletes what Argo CD created
and stops the git server.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ml.catalog import CatalogError, load_catalog
from scripts.cluster.canary import CanaryError, process_image
from scripts.cluster.control_plane import (
    REPO_ROOT,
    ClusterError,
    Layout,
    State,
    kubeconfig_for,
    service_account,
)
from scripts.cluster.images import ImageError
from scripts.engines import EngineError, component_version_of, program_path
from scripts.gitops import argocd
from scripts.gitops.served import ServeError, git, serve
from scripts.gitops.substitutes import SUBSTITUTED, substitute
from scripts.manifests.render import RenderError, render_overlay
from scripts.platform import PlatformError
from scripts.processes import DaemonRecord, ManagedProcess, ProcessError, free_port, stop_daemon
from scripts.processes import wait_until

GROUP, VERSION = "argoproj.io", "v1alpha1"
FIELD_MANAGER = "gitops-up"


class GitopsError(RuntimeError):
    """Argo CD could not be started or did not converge; the message says what and where."""


ERRORS = (
    GitopsError,
    argocd.ArgoCDError,
    ServeError,
    ClusterError,
    EngineError,
    PlatformError,
    ProcessError,
    RenderError,
    ImageError,
    CanaryError,
)


class Say:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"gitops [{time.monotonic() - self.started:5.1f} s]: {text}", flush=True)


@dataclass
class Record:
    """What `up` leaves for `status`, `down` and the benchmark (gitops/state.json)."""

    cluster: str
    url: str
    served_commit: str
    source_commit: str
    time_factor: float
    proxy: str
    ca: str
    daemons: list[str]
    phases: dict[str, float] = field(default_factory=dict)
    substituted: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def path(layout: Layout) -> Path:
        return layout.root / "gitops" / "state.json"

    def write(self, layout: Layout) -> None:
        self.path(layout).parent.mkdir(parents=True, exist_ok=True)
        self.path(layout).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, layout: Layout) -> "Record | None":
        try:
            return cls(**json.loads(cls.path(layout).read_text()))
        except (OSError, ValueError, TypeError):
            return None


# ---- the cluster ---------------------------------------------------------------------------


class Cluster:
    """The running local cluster, as the admin."""

    def __init__(self, layout: Layout) -> None:
        state = State.read(layout)
        if state is None or not state.running():
            raise GitopsError("the local cluster is not up: run `make cluster-up` first")
        self.layout, self.state = layout, state
        self.api = config.new_client_from_config(config_file=str(layout.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(program_path("kubectl")), f"--kubeconfig={self.layout.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise GitopsError(f"kubectl {' '.join(args[:4])}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, objects: list[dict[str, Any]], manager: str = FIELD_MANAGER) -> None:
        text = "\n---\n".join(json.dumps(o) for o in objects)
        self.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={manager}",
            "-f",
            "-",
            stdin=text,
        )

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except ApiException as exc:
            if exc.status != 409:
                raise

    def data(self, kind: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "ConfigMap":
                found = self.core.read_namespaced_config_map(name, argocd.NAMESPACE)
                return dict(found.data or {})
            secret = self.core.read_namespaced_secret(name, argocd.NAMESPACE)
            return argocd.decode_secret(secret.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def applications(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, argocd.NAMESPACE, "applications"
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    def application_sets(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, argocd.NAMESPACE, "applicationsets"
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return items

    def add_daemons(self, records: list[DaemonRecord]) -> None:
        """Record processes in the cluster's state, so `make cluster-down` stops them too."""
        state = State.read(self.layout) or self.state
        state = State(state.server, state.daemons + tuple(records))
        self.layout.state.write_text(json.dumps(state.to_json(), indent=2) + "\n")


# ---- up ------------------------------------------------------------------------------------


def export(repository: Path, commit: str, target: Path) -> Path:
    """The tree of `commit` as plain files (what Argo CD's repo server checks out)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=repository, capture_output=True
    )
    if archive.returncode != 0:
        raise GitopsError(f"git archive {commit} in {repository}: {archive.stderr.decode()}")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as handle:
        handle.write(archive.stdout)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(target, filter="data")
    return target


def root_application(objects: list[dict[str, Any]], cluster: str) -> dict[str, Any]:
    """The Application that syncs clusters/<cluster> itself (the app of apps)."""
    for obj in objects:
        source = (obj.get("spec") or {}).get("source") or {}
        if obj.get("kind") == "Application" and source.get("path") == f"clusters/{cluster}":
            return obj
    raise GitopsError(
        f"clusters/{cluster}: no Application syncs path clusters/{cluster} (the root Application)"
    )


def local_settings(record_ports: dict[str, int], poll: float, ca: str, host: str) -> dict[str, Any]:
    """The settings of this local Argo CD, merged into upstream's ConfigMaps: where the
    components find each other, how often they poll git, which CA the git server has."""
    seconds = f"{poll:g}s"
    return {
        "argocd-cmd-params-cm": {
            "repo.server": f"127.0.0.1:{record_ports['repo']}",
            "redis.server": f"127.0.0.1:{record_ports['redis']}",
            "reposerver.listen.address": "127.0.0.1",
            "reposerver.metrics.listen.address": "127.0.0.1",
            # how soon a generated Application follows a new config.json (upstream: 3m)
            "applicationsetcontroller.requeue.after": seconds,
            # each resource's health in the Application's status, where tests and `status` read
            # it (since 3.0 upstream keeps it only in Redis, for its API server)
            "controller.resource.health.persist": "true",
        },
        "argocd-cm": {
            # no webhook from a real GitLab here: poll often (upstream: 120 s + up to 60 s)
            "timeout.reconciliation": seconds,
            "timeout.reconciliation.jitter": "0s",
        },
        "argocd-tls-certs-cm": {host: ca},
    }


def with_settings(objects: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj["kind"] == "ConfigMap" and name in settings:
            obj["data"] = {**(obj.get("data") or {}), **settings[name]}
    return objects


def generated_overlays(
    tree: Path, cluster_objects: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(app, rendered objects) of every overlay the cluster's ApplicationSets will generate an
    Application for (their git files generators' config.json files); `app` is the config's
    `app`, the name models.yaml knows it by."""
    found: list[tuple[str, list[dict[str, Any]]]] = []
    for appset in (o for o in cluster_objects if o.get("kind") == "ApplicationSet"):
        for generator in appset["spec"].get("generators") or []:
            for item in (generator.get("git") or {}).get("files") or []:
                for config_file in sorted(tree.glob(item["path"])):
                    try:
                        app = str(json.loads(config_file.read_text())["app"])
                    except (ValueError, KeyError) as exc:
                        raise GitopsError(f"{config_file}: no `app` ({exc})") from None
                    found.append((app, render_overlay(config_file.parent)))
    return found


def wanted_images(overlays: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, str]:
    """The serving image of every generated app's Rollout -> its app."""
    images: dict[str, str] = {}
    for app, objects in overlays:
        for obj in objects:
            if obj.get("kind") == "Rollout":
                for container in obj["spec"]["template"]["spec"]["containers"]:
                    images[str(container["image"])] = app
    return images


STORAGE_LABEL = "gitops.mlops.example.com/storage-stand-in"


def storage_stand_ins(
    overlays: list[tuple[str, list[dict[str, Any]]]], root: Path
) -> list[dict[str, Any]]:
    """A PersistentVolume for every claim of the generated apps, bound to it in advance.

    The local cluster has no storage provisioner, so a claim would stay Pending, which Argo CD's
    health check reads as Progressing: the app would never be Healthy. A cluster's storage is
    the platform's, not ours (not in git); these hostPath volumes under the cluster folder stand
    in for it, and `up` says so."""
    volumes = []
    for _, objects in overlays:
        for claim in (o for o in objects if o.get("kind") == "PersistentVolumeClaim"):
            namespace, name = claim["metadata"]["namespace"], claim["metadata"]["name"]
            spec = claim["spec"]
            volumes.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": f"local-{namespace}-{name}"[:253],
                        "labels": {STORAGE_LABEL: "true"},
                    },
                    "spec": {
                        "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                        "accessModes": spec["accessModes"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": spec.get("storageClassName") or "",
                        "volumeMode": spec.get("volumeMode", "Filesystem"),
                        "hostPath": {
                            "path": str(root / "volumes" / namespace / name),
                            "type": "DirectoryOrCreate",
                        },
                        "claimRef": {"namespace": namespace, "name": name},
                    },
                }
            )
    return volumes


def model_of_app(models_from: Path, app: str) -> Path:
    """The trained model an app serves: `<folder>/model.onnx` of its models.yaml entry, in the
    checkout `models_from` (DVC outputs are not in git, so not in the served repository)."""
    try:
        entry = load_catalog(models_from / "models.yaml").by_app(app)
    except CatalogError as exc:
        raise GitopsError(f"{models_from / 'models.yaml'}: {exc}") from None
    model = models_from / entry.folder / "model.onnx"
    if not model.is_file():
        raise GitopsError(
            f"{model}: no trained model for app {app} (run `make pipeline MODEL={entry.name}`"
            f" in {models_from})"
        )
    return model


def start(
    cluster: Cluster,
    name: str,
    argv: list[str],
    env: dict[str, str] | None,
    ready: Callable[[], bool],
    started: list[ManagedProcess],
    timeout: float = 120,
) -> ManagedProcess:
    process = ManagedProcess(
        name, argv, cluster.layout.log(name), env=env, cwd=cluster.layout.root / "gitops"
    )
    process.start()
    started.append(process)
    wait_until(ready, timeout, f"{name} to be ready", process, poll=0.2)
    return process


def ask_pass_socket(work: Path) -> Path:
    """Where the repo server's git credential socket goes: a unix socket path must fit in 107
    bytes, which a folder under pytest's temp root does not, so it lives in /tmp under a name
    unique to `work`."""
    digest = hashlib.sha256(str(work.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"argocd-ask-pass-{digest}.sock"


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _tcp_ok(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def up(args: argparse.Namespace, say: Say) -> int:
    layout = Layout.default()
    cluster = Cluster(layout)
    existing = Record.read(layout)
    if existing is not None:
        alive = {r.name for r in cluster.state.daemons if r.alive()}
        if set(existing.daemons) <= alive:
            say(f"already up (serving {existing.served_commit[:12]}); `make gitops-down` first")
            return 0
        down(cluster, say)
        cluster = Cluster(layout)
    work = layout.root / "gitops"
    work.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    try:
        return _up(args, cluster, work, started, say)
    except BaseException:
        for process in reversed(started):
            process.stop()
        _forget_daemons(cluster, [p.name for p in started])
        Record.path(layout).unlink(missing_ok=True)
        raise


def _up(
    args: argparse.Namespace,
    cluster: Cluster,
    work: Path,
    started: list[ManagedProcess],
    say: Say,
) -> int:
    layout = cluster.layout
    t0 = time.monotonic()
    phases: dict[str, float] = {}
    source = Path(args.source).resolve()
    # 1. what to serve: the ref's own clusters/<cluster> names the repoURL
    commit = git(source, "rev-parse", "--verify", f"{args.ref}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="gitops-ref-") as folder:
        tree = export(source, commit, Path(folder))
        if not (tree / "clusters" / args.cluster).is_dir():
            raise GitopsError(f"{source} at {args.ref}: no folder clusters/{args.cluster}")
        url = root_application(render_overlay(tree / "clusters" / args.cluster), args.cluster)[
            "spec"
        ]["source"]["repoURL"]
    served = serve(source, args.ref, work / "git", url, args.time_factor)
    say(f"serving {source} at {served.source_commit[:12]} as {url} (branch main)")
    for line in served.scaled[:3]:
        say(f"  local time-scaling commit {served.head[:12]}: {line}")
    if len(served.scaled) > 3:
        say(f"  ... and {len(served.scaled) - 3} more (git log of the served main)")
    with tempfile.TemporaryDirectory(prefix="gitops-main-") as folder:
        tree = export(served.bare, served.head, Path(folder))
        cluster_objects = render_overlay(tree / "clusters" / args.cluster)
        overlays = generated_overlays(tree, cluster_objects)
        images = wanted_images(overlays)
        volumes = storage_stand_ins(overlays, layout.root)
    # 2. the git server and the network to it
    pki = layout.pki
    certificate = pki.serving("git-server", (served.host,))
    git_port, proxy_port = free_port(), free_port()
    log = layout.log("git-server")
    server = start(
        cluster,
        "git-server",
        [
            sys.executable,
            "-m",
            "scripts.gitops.git_server",
            f"--root={work / 'git'}",
            f"--name={served.host}",
            f"--cert={certificate.cert}",
            f"--key={certificate.key}",
            f"--port={git_port}",
            f"--proxy-port={proxy_port}",
        ],
        {**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        lambda: log.exists() and "git-server: ready" in log.read_text(errors="replace"),
        started,
    )
    cluster.add_daemons([server.record()])
    proxy = f"http://127.0.0.1:{proxy_port}"
    say(
        f"git server: https://{served.host} on 127.0.0.1:{git_port} (cluster CA), reached"
        f" through the proxy {proxy}; every other host is refused"
    )
    # 3. upstream's install manifests, and this cluster's settings
    objects, workloads = argocd.read_install()
    ports = {"repo": free_port(), "redis": free_port()}
    ca = pki.ca.cert.read_text()
    settings = local_settings(ports, args.poll, ca, served.host)
    cluster.ensure_namespace(argocd.NAMESPACE)
    cluster.apply(with_settings(objects, settings))
    if cluster.data("Secret", "argocd-redis") is None:
        cluster.apply([argocd.redis_secret()])
    say(
        f"Argo CD {component_version_of('argocd')}: {len(objects)} objects of its install.yaml"
        f" applied (RBAC, ConfigMaps, Secrets, Services); polling git every {args.poll:g} s"
    )
    # 4. the platform Applications Argo CD cannot render here, in the root's project (which
    # must exist first, or Argo CD marks them InvalidSpecError before it skips them)
    root = root_application(cluster_objects, args.cluster)
    project = next(
        (
            o
            for o in cluster_objects
            if o.get("kind") == "AppProject" and o["metadata"]["name"] == root["spec"]["project"]
        ),
        None,
    )
    if project is None:
        raise GitopsError(
            f"clusters/{args.cluster}: the root Application's project"
            f" {root['spec']['project']!r} is not in the folder"
        )
    cluster.apply([project], manager="gitops-bootstrap")
    substituted: dict[str, str] = {}
    for obj in cluster_objects:
        marked = substitute(obj) if obj.get("kind") == "Application" else None
        if marked is not None:
            marked["metadata"]["namespace"] = argocd.NAMESPACE
            cluster.apply([marked])
            substituted[obj["metadata"]["name"]] = marked["metadata"]["annotations"][SUBSTITUTED]
            say(f"Application {obj['metadata']['name']}: {substituted[obj['metadata']['name']]}")
    if volumes:
        cluster.apply(volumes)
        say(
            f"storage: {len(volumes)} hostPath PersistentVolumes under {layout.root / 'volumes'}"
            " pre-bound to the apps' claims (stand-in: the local cluster has no provisioner)"
        )
    # 5. what CI would have pushed to the registry: a process image per serving image
    models_from = Path(args.models_from or args.source).resolve()
    for image, app in sorted(images.items()):
        model = model_of_app(models_from, app)
        repository, _, tag = image.rpartition(":")
        # rebuilt when the model changed (a content-addressed image would be stale otherwise)
        process_image(layout, repository, model, {}, tag=tag)
        say(f"process image {image}: the model service on {model}")
    phases["prepare"] = time.monotonic() - t0
    # 5. the components, in order
    t1 = time.monotonic()
    lookup_all = cluster.data

    def lookup(kind: str, name: str, key: str) -> str | None:
        return (lookup_all(kind, name) or {}).get(key)

    by_name = {w.name: w for w in workloads}
    for name in argocd.RUN:
        workload = by_name[name]
        local = {key: free_port() for key in argocd.listeners(name)}
        if name == "argocd-repo-server":
            local["8081"] = ports["repo"]
        if name == "argocd-redis":
            local["6379"] = ports["redis"]
        extra = {}
        if workload.service_account != "argocd-repo-server" and name != "argocd-redis":
            identity = service_account(argocd.NAMESPACE, workload.service_account)
            extra["KUBECONFIG"] = str(
                kubeconfig_for(layout, identity, cluster.state.server, argocd.NAMESPACE)
            )
            extra["ARGOCD_FAKE_IN_CLUSTER"] = "true"
        if name == "argocd-repo-server":
            extra.update({"HTTPS_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost"})
            extra["ARGOCD_ASK_PASS_SOCK"] = str(ask_pass_socket(work))
            # GnuPG needs the image's gpg-wrapper.sh; no AppProject here sets signatureKeys, so
            # commit verification is off (Argo CD's own switch) rather than half-working
            extra["ARGOCD_GPG_ENABLED"] = "false"
        spec = argocd.process_spec(workload, work / name, lookup, lookup_all, local, extra)
        if spec.ready_url is not None:
            url_ready = spec.ready_url
            ready: Callable[[], bool] = lambda: _http_ok(url_ready)  # noqa: E731
        else:
            port = local["6379"]
            ready = lambda: _tcp_ok(port)  # noqa: E731
        process = start(cluster, name, spec.argv, spec.env, ready, started)
        cluster.add_daemons([process.record()])
        say(
            f"{name}: running as a process ({workload.kind} of install.yaml; ServiceAccount"
            f" {workload.service_account})"
        )
    for name, why in argocd.NOT_RUN.items():
        say(f"{name}: not run ({why})")
    phases["argocd"] = time.monotonic() - t1
    record = Record(
        cluster=args.cluster,
        url=url,
        served_commit=served.head,
        source_commit=served.source_commit,
        time_factor=args.time_factor,
        proxy=proxy,
        ca=str(pki.ca.cert),
        daemons=[p.name for p in started],
        phases=phases,
        substituted=substituted,
    )
    record.write(layout)
    # 6. the one step by hand: the root Application and the project it belongs to
    t2 = time.monotonic()
    cluster.apply([root], manager="gitops-bootstrap")
    say(
        f"bootstrap: applied AppProject {project['metadata']['name']} and Application"
        f" {root['metadata']['name']} by hand; Argo CD syncs everything else, and these from now on"
    )
    # 7. converge; a root held by a deny window gets its first sync by hand (manualSync)
    held_since = time.monotonic()
    while not cluster.application_sets() and time.monotonic() - held_since < args.timeout:
        found: dict[str, Any] = next(
            (
                a
                for a in cluster.applications()
                if a["metadata"]["name"] == root["metadata"]["name"]
            ),
            {},
        )
        status = found.get("status") or {}
        if status.get("operationState") or found.get("operation"):
            break
        if (status.get("sync") or {}).get("status") == "OutOfSync" and (
            time.monotonic() - held_since > 2 * args.poll + 5
        ):
            say(
                f"{root['metadata']['name']} compared but not synced automatically (a deny sync"
                " window of its project is open): syncing it by hand, as the window's manualSync"
                " allows"
            )
            # the window may close meanwhile, and the controller start its own sync first
            sync_by_hand(cluster.custom, root["metadata"]["name"], "gitops-up", retry_for=60)
            break
        time.sleep(0.5)
    appsets = [o["metadata"]["name"] for o in cluster_objects if o.get("kind") == "ApplicationSet"]
    wait_until(
        lambda: all(
            n in {a["metadata"]["name"] for a in cluster.application_sets()} for n in appsets
        ),
        args.timeout,
        f"the root Application to sync its platform waves (ApplicationSets {appsets} created)",
        poll=0.5,
    )
    phases["platform"] = time.monotonic() - t2
    say(f"platform synced: projects, settings and platform Applications, then {appsets}")
    t3 = time.monotonic()
    converge(cluster, appsets, args.timeout, say)
    phases["apps"] = time.monotonic() - t3
    phases["total"] = time.monotonic() - t0
    record.phases = phases
    record.write(layout)
    print_table(cluster, say)
    say(
        "phases: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
        + f"; export KUBECONFIG={layout.kubeconfig}"
    )
    return 0


def app_state(app: dict[str, Any]) -> tuple[str, str]:
    status = app.get("status") or {}
    return (
        str((status.get("sync") or {}).get("status", "")),
        str((status.get("health") or {}).get("status", "")),
    )


def converged(cluster: Cluster, appsets: list[str]) -> tuple[bool, str]:
    """Every Application Synced and Healthy (substituted ones: Healthy), and every app the
    ApplicationSets generate exists; -> (done, what is still missing)."""
    apps = {a["metadata"]["name"]: a for a in cluster.applications()}
    generated: set[str] = set()
    for appset in cluster.application_sets():
        if appset["metadata"]["name"] not in appsets:
            continue
        conditions = {c["type"]: c for c in (appset.get("status") or {}).get("conditions") or []}
        error = conditions.get("ErrorOccurred") or {}
        if error.get("status") == "True":
            return False, f"ApplicationSet {appset['metadata']['name']}: {error.get('message')}"
        up_to_date = conditions.get("ResourcesUpToDate") or {}
        if up_to_date.get("status") != "True":
            return False, f"ApplicationSet {appset['metadata']['name']}: not up to date"
        generated |= {r["name"] for r in (appset.get("status") or {}).get("resources") or []}
    missing = sorted(generated - set(apps))
    if missing or not generated:
        return False, f"generated Applications missing: {missing or 'none generated yet'}"
    waiting = []
    for name, app in sorted(apps.items()):
        sync, health = app_state(app)
        if SUBSTITUTED in (app["metadata"].get("annotations") or {}):
            continue
        if not automated(app):
            if sync not in ("Synced", "OutOfSync"):  # compared, and left for a human to sync
                waiting.append(f"{name} (manual) not compared yet")
            continue
        if health != "Healthy" or sync != "Synced":
            waiting.append(f"{name} {sync or '-'}/{health or '-'}")
    return not waiting, ", ".join(waiting)


def automated(app: dict[str, Any]) -> bool:
    return bool(((app.get("spec") or {}).get("syncPolicy") or {}).get("automated"))


def sync_by_hand(
    custom: client.CustomObjectsApi, name: str, who: str, retry_for: float = 0.0
) -> None:
    """What `argocd app sync` asks of the API server: an operation on the Application, which
    the application controller then carries out (project rules and sync windows apply).

    ``retry_for`` seconds: while another operation runs (an automated sync the controller
    started a moment before, say), ask again every half second, as a user of `argocd app sync`
    would, instead of failing at once. An operation a deny window holds never ends by itself,
    so that refusal is final whatever ``retry_for`` says (``drop_held_operation`` ends it).

    As the API server does (v3.2.11, util/argo SetAppOperation and server/application Sync): an
    Application that already has an operation is refused ("another operation is already in
    progress"), the previous operation's state is cleared, the write is an update at the read
    resourceVersion (retried on a conflict, never merged into an operation the controller is
    running: a deny window held such a merged sync as automated), and the operation carries the
    Application's own sync options and retry policy: without them a hand sync of an app whose
    namespace does not exist yet fails (`CreateNamespace=true` is read from the operation)."""

    def set_operation(app: dict[str, Any]) -> None:
        if app.get("operation"):
            raise OperationInProgress(name, held_by_window(app))
        policy = (app.get("spec") or {}).get("syncPolicy") or {}
        sync: dict[str, Any] = {"syncStrategy": {"hook": {}}}
        if policy.get("syncOptions"):
            sync["syncOptions"] = policy["syncOptions"]
        app["operation"] = {
            "initiatedBy": {"username": who},
            "sync": sync,
            "retry": policy.get("retry") or {},
        }
        (app.get("status") or {}).pop("operationState", None)

    deadline = time.monotonic() + retry_for
    while True:
        try:
            _update_application(custom, name, set_operation)
            return
        except OperationInProgress as busy:
            if busy.held_by_window or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


class OperationInProgress(GitopsError):
    """A hand sync refused because the Application already has an operation."""

    def __init__(self, name: str, held_by_window: bool) -> None:
        held = (
            " (held by a deny sync window: drop_held_operation ends it)" if held_by_window else ""
        )
        super().__init__(f"{name}: another operation is already in progress{held}")
        self.held_by_window = held_by_window


def held_by_window(app: dict[str, Any]) -> bool:
    """Whether the Application's running operation is one a deny window holds (the controller's
    words for it, v3.2.11 SyncAppState: "Sync operation blocked by sync window")."""
    state = (app.get("status") or {}).get("operationState") or {}
    return bool(app.get("operation")) and "blocked by sync window" in (state.get("message") or "")


def drop_held_operation(custom: client.CustomObjectsApi, name: str) -> None:
    """End an automated sync that a deny window holds mid-way, as an admin must: remove the
    operation and its state (`kubectl patch --type json` on the Application). `argocd app
    terminate-op` cannot end it: the controller (v3.2.11, SyncAppState) checks the windows
    before it looks at a Terminating phase, so the operation stays Running while the window is
    open, and a hand sync is refused while it is there."""

    def drop(app: dict[str, Any]) -> None:
        if not held_by_window(app):
            raise GitopsError(f"{name}: no operation is held by a sync window")
        del app["operation"]
        del app["status"]["operationState"]

    _update_application(custom, name, drop)


def _update_application(
    custom: client.CustomObjectsApi, name: str, change: Callable[[dict[str, Any]], None]
) -> None:
    """Read, change, update at the read resourceVersion; again on a conflict."""
    for _ in range(10):
        app = custom.get_namespaced_custom_object(
            GROUP, VERSION, argocd.NAMESPACE, "applications", name
        )
        change(app)
        try:
            custom.replace_namespaced_custom_object(
                GROUP, VERSION, argocd.NAMESPACE, "applications", name, app
            )
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
    raise GitopsError(f"{name}: the Application kept changing under 10 updates in a row")


def converge(cluster: Cluster, appsets: list[str], timeout: float, say: Say) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        done, missing = converged(cluster, appsets)
        if done:
            return
        if missing != last:
            say(f"waiting: {missing}")
            last = missing
        if time.monotonic() > deadline:
            problems = conditions_of(cluster)
            raise GitopsError(
                f"not Synced and Healthy after {timeout:g} s: {missing}"
                + (f"\n{problems}" if problems else "")
            )
        time.sleep(0.5)


def conditions_of(cluster: Cluster) -> str:
    """Argo CD's own words on what is wrong: every Application condition and failed sync."""
    lines = []
    for app in cluster.applications():
        status = app.get("status") or {}
        for condition in status.get("conditions") or []:
            lines.append(
                f"  {app['metadata']['name']}: {condition['type']}: {condition['message']}"
            )
        operation = status.get("operationState") or {}
        if operation.get("phase") in ("Failed", "Error"):
            name, phase = app["metadata"]["name"], operation["phase"]
            lines.append(f"  {name}: sync {phase}: {operation.get('message')}")
    return "\n".join(lines)


def print_table(cluster: Cluster, say: Say) -> None:
    rows = []
    for app in sorted(cluster.applications(), key=lambda a: a["metadata"]["name"]):
        sync, health = app_state(app)
        status = app.get("status") or {}
        revision = str((status.get("sync") or {}).get("revision") or "")[:12]
        if SUBSTITUTED in (app["metadata"].get("annotations") or {}):
            note = "substituted (chart not fetchable here)"
        elif not automated(app):
            note = "manual sync: waits for a human"
        else:
            note = "synced by Argo CD"
        rows.append(
            (app["metadata"]["name"], app["spec"].get("project", ""), sync, health, revision, note)
        )
    widths = [
        max(
            len(r[i]) for r in rows + [("application", "project", "sync", "health", "revision", "")]
        )
        for i in range(6)
    ]
    header = ("application", "project", "sync", "health", "revision", "")
    for row in [header] + rows:
        say("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


# ---- down / status -------------------------------------------------------------------------


def _forget_daemons(cluster: Cluster, names: list[str]) -> None:
    state = State.read(cluster.layout)
    if state is None:
        return
    kept = tuple(d for d in state.daemons if d.name not in names)
    cluster.layout.state.write_text(
        json.dumps(State(state.server, kept).to_json(), indent=2) + "\n"
    )


def down(cluster: Cluster, say: Say) -> int:
    """Stop Argo CD and the git server, then delete what Argo CD made: its Applications (no
    cascade: nobody acts on finalizers any more), ApplicationSets, AppProjects, the namespaces
    of the generated apps, and the argocd namespace."""
    record = Record.read(cluster.layout)
    names = record.daemons if record else []
    stopped = 0
    for daemon in reversed(cluster.state.daemons):
        if daemon.name in names and stop_daemon(daemon):
            stopped += 1
            say(f"stopped {daemon.name} (pid {daemon.pid})")
    _forget_daemons(cluster, names)
    # the repo server leaves its credential socket behind when stopped
    ask_pass_socket(cluster.layout.root / "gitops").unlink(missing_ok=True)
    namespaces: set[str] = set()
    try:
        for app in cluster.applications():
            if any(
                o.get("kind") == "ApplicationSet"
                for o in app["metadata"].get("ownerReferences") or []
            ):
                namespaces.add(app["spec"]["destination"].get("namespace") or "")
        for plural in ("applications", "applicationsets", "appprojects"):
            listing = cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, argocd.NAMESPACE, plural
            )
            for item in listing.get("items", []):
                name = item["metadata"]["name"]
                if item["metadata"].get("finalizers"):
                    cluster.custom.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        argocd.NAMESPACE,
                        plural,
                        name,
                        {"metadata": {"finalizers": None}},
                    )
                cluster.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, argocd.NAMESPACE, plural, name
                )
    except ApiException as exc:
        if exc.status != 404:
            raise
    deleted = []
    for namespace in sorted(n for n in namespaces if n) + [argocd.NAMESPACE]:
        try:
            cluster.core.delete_namespace(namespace)
            deleted.append(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
    for volume in cluster.core.list_persistent_volume(label_selector=STORAGE_LABEL).items:
        cluster.core.delete_persistent_volume(volume.metadata.name)
    # wait until they are gone: a next `up` into a terminating namespace would stall Argo CD's
    # sync (it cannot create objects there) until the node agent has stopped every pod
    wait_until(
        lambda: not any(_namespace_exists(cluster, n) for n in deleted),
        180,
        f"namespaces {deleted} to be deleted",
        poll=0.5,
    )
    if deleted:
        say(f"deleted namespaces {', '.join(deleted)}")
    Record.path(cluster.layout).unlink(missing_ok=True)
    say(f"down ({stopped} processes stopped)")
    return 0


def _namespace_exists(cluster: Cluster, name: str) -> bool:
    try:
        cluster.core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def status(cluster: Cluster, say: Say) -> int:
    record = Record.read(cluster.layout)
    if record is None:
        print("gitops: not up (make gitops-up)")
        return 1
    alive = {d.name for d in cluster.state.daemons if d.alive()}
    for name in record.daemons:
        say(f"{name:<34} {'running' if name in alive else 'GONE'}")
    say(f"serving {record.url} main = {record.served_commit[:12]}")
    print_table(cluster, say)
    return 0 if set(record.daemons) <= alive else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.gitops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up_cmd = sub.add_parser("up", help="start Argo CD and sync a cluster folder")
    up_cmd.add_argument("--cluster", default="staging", help="folder under clusters/")
    up_cmd.add_argument("--source", default=str(REPO_ROOT), help="the repository to serve")
    up_cmd.add_argument("--ref", default="HEAD", help="the commit served as main")
    up_cmd.add_argument(
        "--time-factor",
        type=float,
        default=1.0,
        help="divide canary pauses and analysis intervals (a local commit)",
    )
    up_cmd.add_argument("--poll", type=float, default=10.0, help="seconds between git polls")
    up_cmd.add_argument(
        "--models-from",
        type=Path,
        default=None,
        help="the checkout whose trained models/<name>/model.onnx the apps' process images"
        " serve (default: --source)",
    )
    up_cmd.add_argument("--timeout", type=float, default=300.0)
    sub.add_parser("down", help="stop Argo CD and the git server; delete what Argo CD made")
    sub.add_parser("status", help="what runs, and every Application's state")
    args = parser.parse_args(argv)
    say = Say()
    try:
        if args.command == "up":
            if args.time_factor <= 0 or args.poll <= 0:
                raise GitopsError("--time-factor and --poll must be positive")
            return up(args, say)
        cluster = Cluster(Layout.default())
        return down(cluster, say) if args.command == "down" else status(cluster, say)
    except ERRORS as exc:
        print(f"gitops: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
