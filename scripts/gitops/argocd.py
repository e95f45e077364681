"""Argo CD's components as processes, from upstream's own install manifests.

`manifests/install.yaml` of the pinned Argo CD (in the Go module the engine is built from) is
applied to the local API server without its CRDs (cluster-up installed them) and without its
Deployments and StatefulSet: ServiceAccounts, RBAC, ConfigMaps, Secrets, Services and
NetworkPolicies as upstream ships them. Each workload this repository needs is then run as a
process, translated from its pod template the way a kubelet would run it:

- the program: the engine's `argocd` for Argo CD's image (the first argument names the
  component, as the image's links do), Debian's `redis-server` for the Redis image;
- the environment: the container's `env`, with `valueFrom` resolved from the cluster's
  ConfigMaps and Secrets (argocd-cmd-params-cm, argocd-cm, argocd-redis), so every documented
  Argo CD setting works here as it does in a cluster;
- the volumes: each mounted ConfigMap, Secret or emptyDir becomes a folder, and the path Argo
  CD reads it from moves there through the variable Argo CD offers for it (TLS certificates,
  SSH known hosts, GnuPG, /tmp);
- the identity: a client certificate of the pod's ServiceAccount, so RBAC judges each
  controller as it would the pod; the in-cluster destination `https://kubernetes.default.svc`
  is that same API server (ARGOCD_FAKE_IN_CLUSTER, Argo CD's own switch for running outside);
- the network: every port a pod would own moves to a free loopback port, and the components
  find each other through argocd-cmd-params-cm (`repo.server`, `redis.server`), the settings
  upstream documents for that.

Not run: the API server and UI (`argocd-server`), Dex and the notifications controller; nothing
here needs them, and the engine does not build them.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scripts.engines import program_path
from scripts.platform import component, module_dir

NAMESPACE = "argocd"
RUN = (
    "argocd-redis",
    "argocd-repo-server",
    "argocd-application-controller",
    "argocd-applicationset-controller",
)
"""The workloads run here, in start order (each needs the ones before it)."""
NOT_RUN = {
    "argocd-server": "API server and UI: syncs by hand set the Application's `operation` instead",
    "argocd-dex-server": "single sign-on for the API server",
    "argocd-notifications-controller": "notifications",
}

PORT_FLAGS: dict[str, tuple[tuple[str, int | None], ...]] = {
    # (flag template, the container port it moves; None: a listener the pod spec does not list)
    "argocd-repo-server": (("--port={port}", 8081), ("--metrics-port={port}", 8084)),
    "argocd-application-controller": (("--metrics-port={port}", 8082),),
    "argocd-applicationset-controller": (
        ("--metrics-addr=127.0.0.1:{port}", 8080),
        ("--webhook-addr=127.0.0.1:{port}", 7000),
        ("--probe-addr=127.0.0.1:{port}", None),
    ),
    "argocd-redis": (("--port {port}", 6379),),
}
"""Where each workload listens: pods own their ports, processes on one machine must not."""

PATH_VARIABLES = {
    "/app/config/tls": "ARGOCD_TLS_DATA_PATH",
    "/app/config/ssh": "ARGOCD_SSH_DATA_PATH",
    "/app/config/gpg/source": "ARGOCD_GPG_DATA_PATH",
    "/app/config/gpg/keys": "ARGOCD_GNUPGHOME",
    "/home/argocd/cmp-server/plugins": "ARGOCD_PLUGINSOCKFILEPATH",
    "/home/argocd": "HOME",
    "/tmp": "TMPDIR",
}
"""Mount paths Argo CD reads, and the variable that moves each (upstream's common package)."""


class ArgoCDError(RuntimeError):
    """Argo CD's manifests or settings cannot be turned into processes; the message says why."""


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str
    service_account: str
    container: dict[str, Any]
    volumes: dict[str, dict[str, Any]]


@dataclass
class ProcessSpec:
    """What to run for one workload: argv, environment, folders, readiness check."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ports: dict[str, int]
    """Listener name (`8081`, or the flag for an unlisted one) -> local port."""
    ready_url: str | None
    notes: list[str] = field(default_factory=list)


def install_manifest() -> Path:
    item = component("argo-cd")
    return module_dir(item.module, item.version) / "manifests" / "install.yaml"


def split_install(documents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Workload]]:
    """install.yaml -> (objects to apply as they are, the workloads to run as processes)."""
    objects, workloads = [], []
    for document in documents:
        kind = document.get("kind")
        if kind == "CustomResourceDefinition":
            continue  # cluster-up installs every platform CRD at its pinned version
        if kind in ("Deployment", "StatefulSet"):
            pod = document["spec"]["template"]["spec"]
            name = document["metadata"]["name"]
            containers = [c for c in pod["containers"] if c["name"] == name] or pod["containers"]
            workloads.append(
                Workload(
                    name=name,
                    kind=str(kind),
                    service_account=str(pod.get("serviceAccountName") or "default"),
                    container=containers[0],
                    volumes={v["name"]: v for v in pod.get("volumes") or []},
                )
            )
            continue
        document.setdefault("metadata", {})
        if kind not in ("ClusterRole", "ClusterRoleBinding"):
            document["metadata"]["namespace"] = NAMESPACE
        objects.append(document)
    return objects, workloads


def read_install() -> tuple[list[dict[str, Any]], list[Workload]]:
    path = install_manifest()
    documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return split_install(documents)


def redis_secret() -> dict[str, Any]:
    """What upstream's `secret-init` container (`argocd admin redis-initial-password`) creates
    before Redis starts: the password every component reads as REDIS_PASSWORD."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "argocd-redis", "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"auth": secrets.token_urlsafe(16)},
    }


# ---- the pod spec, as a process ----------------------------------------------------------------

Lookup = Callable[[str, str, str], str | None]
"""(ConfigMap|Secret, name, key) -> value, None when the object or key is missing."""


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values; $$ escapes, unknown stays as is."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, text)


def resolve_env(workload: Workload, lookup: Lookup) -> dict[str, str]:
    """The container's env as the kubelet resolves it (a missing optional key is left out, a
    missing required one stops the start)."""
    env: dict[str, str] = {}
    for item in workload.container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = _expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {"metadata.namespace": NAMESPACE, "metadata.name": workload.name}
            if path not in fields:
                raise ArgoCDError(f"{workload.name}: env {name}: fieldRef {path} not supported")
            env[name] = fields[path]
            continue
        kind, ref = (
            ("ConfigMap", source["configMapKeyRef"])
            if "configMapKeyRef" in source
            else ("Secret", source.get("secretKeyRef"))
        )
        if ref is None:
            raise ArgoCDError(f"{workload.name}: env {name}: {sorted(source)} not supported")
        found = lookup(kind, ref["name"], ref["key"])
        if found is not None:
            env[name] = found
        elif not ref.get("optional"):
            raise ArgoCDError(
                f"{workload.name}: env {name} needs {kind} {NAMESPACE}/{ref['name']}"
                f" key {ref['key']}, which does not exist"
            )
    return env


def materialise_volumes(
    workload: Workload, folder: Path, lookup_all: Callable[[str, str], dict[str, str] | None]
) -> tuple[dict[str, Path], list[str]]:
    """Each mounted volume as a folder (mount path -> folder); notes on what is not reproduced."""
    mounts: dict[str, Path] = {}
    notes: list[str] = []
    for mount in workload.container.get("volumeMounts") or []:
        volume = workload.volumes.get(mount["name"])
        if volume is None:
            raise ArgoCDError(f"{workload.name}: volumeMount {mount['name']} has no volume")
        target = folder / "volumes" / mount["name"]
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
            if key not in volume:
                continue
            source = volume[key]
            name = source.get("name") or source.get("secretName")
            data = lookup_all(kind, str(name))
            if data is None and not source.get("optional"):
                raise ArgoCDError(f"{workload.name}: volume {mount['name']}: {kind} {name} missing")
            items = source.get("items") or [{"key": k, "path": k} for k in sorted(data or {})]
            for item in items:
                if data is not None and item["key"] in data:
                    path = target / item["path"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(data[item["key"]])
        mounts[mount["mountPath"].rstrip("/")] = target
        if mount["mountPath"].rstrip("/") not in PATH_VARIABLES:
            notes.append(
                f"volume {mount['name']} at {mount['mountPath']}: not read here (Argo CD has no"
                " variable to move that path)"
            )
    return mounts, notes


def translate_path(value: str, mounts: Mapping[str, Path]) -> str:
    """A path inside the container -> the folder standing in for its mount, if any."""
    for inside in sorted(mounts, key=len, reverse=True):
        if value == inside or value.startswith(inside + "/"):
            return str(mounts[inside]) + value[len(inside) :]
    return value


def program_of(workload: Workload) -> tuple[list[str], list[str]]:
    """(argv prefix, the container's remaining args) for the workload's image."""
    image = str(workload.container.get("image", ""))
    words = [*(workload.container.get("command") or []), *(workload.container.get("args") or [])]
    repository = image.rsplit(":", 1)[0]
    if repository.endswith("/argoproj/argocd"):
        if not words or not Path(words[0]).name.startswith("argocd-"):
            raise ArgoCDError(f"{workload.name}: cannot tell the component from {words}")
        # the image's /usr/local/bin/argocd-<component> links are the one multi-call binary
        return [str(program_path("argocd")), Path(words[0]).name[len("argocd-") :]], words[1:]
    if repository.endswith("/redis"):
        redis = shutil.which("redis-server")
        if redis is None:
            raise ArgoCDError(
                "redis-server is not installed: it comes from Debian (system-packages.txt,"
                " `make bootstrap`)"
            )
        return [redis], words  # the image's entrypoint runs redis-server with these args
    raise ArgoCDError(f"{workload.name}: no local program stands in for image {image}")


def process_spec(
    workload: Workload,
    folder: Path,
    lookup: Lookup,
    lookup_all: Callable[[str, str], dict[str, str] | None],
    ports: Mapping[str, int],
    extra_env: Mapping[str, str],
) -> ProcessSpec:
    """The process that runs `workload`: its pod's program, args, env and volumes, moved to
    `folder` and to the local `ports` (container port or flag -> port)."""
    prefix, args = program_of(workload)
    mounts, notes = materialise_volumes(workload, folder, lookup_all)
    mounts.setdefault("/tmp", folder / "tmp")
    mounts.setdefault("/home/argocd", folder / "home")
    for path in mounts.values():
        path.mkdir(parents=True, exist_ok=True)
    resolved = resolve_env(workload, lookup)
    env = {
        "PATH": os.pathsep.join(
            [str(program_path("kustomize").parent), str(program_path("argocd").parent)]
            + [os.environ.get("PATH", "/usr/bin:/bin")]
        ),
        "LANG": "C.UTF-8",
    }
    env.update({k: translate_path(v, mounts) for k, v in resolved.items()})
    for inside, variable in PATH_VARIABLES.items():
        if inside in mounts:
            env[variable] = str(mounts[inside])
    env.update(extra_env)
    argv = prefix + [_expand(a, resolved) for a in args]
    for template, container_port in PORT_FLAGS.get(workload.name, ()):
        key = str(container_port) if container_port is not None else template.split("=")[0]
        argv += template.format(port=ports[key]).split(" ")
    probe = (workload.container.get("readinessProbe") or {}).get("httpGet")
    ready_url = None
    if probe is not None:
        ready_url = f"http://127.0.0.1:{ports[str(probe['port'])]}{probe.get('path', '/')}"
    elif workload.name == "argocd-applicationset-controller":
        # its pod has no probe, and its probe server registers no check (404): once the
        # manager serves metrics, its informers and controllers have started
        ready_url = f"http://127.0.0.1:{ports['8080']}/metrics"
    return ProcessSpec(workload.name, argv, env, dict(ports), ready_url, notes)


def listeners(workload: str) -> list[str]:
    """The listener keys of `workload` that need a local port."""
    return [
        str(port) if port is not None else template.split("=")[0]
        for template, port in PORT_FLAGS.get(workload, ())
    ]


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str] | None:
    if data is None:
        return None
    return {k: base64.b64decode(v).decode() for k, v in data.items()}
