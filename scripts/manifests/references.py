"""Cross-reference checks: names and selectors that must agree across objects, and the Argo CD
wiring that must agree with the repository layout."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from scripts.manifests.model import REPO_ROOT, Finding, Obj
from scripts.manifests.sources import kustomization_file
from scripts.manifests.workloads import (
    PodTemplate,
    name_of,
    namespace_of,
    pod_templates,
    selects,
)

# Objects Argo CD / the cluster provide, so references to them are fine without a definition here.
IMPLICIT = {("ServiceAccount", "default")}


def _index(objects: list[Obj]) -> dict[tuple[str, str | None, str], Obj]:
    return {(str(o.get("kind")), namespace_of(o), name_of(o)): o for o in objects}


def _pods_in(objects: list[Obj], ns: str | None) -> list[PodTemplate]:
    return [p for o in objects if namespace_of(o) == ns for p in pod_templates(o)]


def _port_names(pods: list[PodTemplate]) -> set[str]:
    return {
        str(port.get("name"))
        for pod in pods
        for _, c in pod.containers(init=False)
        for port in c.get("ports") or []
        if isinstance(port, dict) and port.get("name")
    }


def check_selectors(objects: list[Obj]) -> Iterator[Finding]:
    """Services, PDBs and PodMonitors select at least one pod template; named ports exist."""
    for obj in objects:
        kind, ns = obj.get("kind"), namespace_of(obj)
        spec = obj.get("spec") or {}
        if kind == "Service" and spec.get("selector"):
            pods = [p for p in _pods_in(objects, ns) if selects(spec["selector"], p.labels)]
            if not pods:
                yield Finding("reference", obj, "spec.selector", "selects no pod template here")
                continue
            names = _port_names(pods)
            for i, port in enumerate(spec.get("ports") or []):
                target = (port or {}).get("targetPort")
                if isinstance(target, str) and target not in names:
                    yield Finding(
                        "reference",
                        obj,
                        f"spec.ports[{i}].targetPort",
                        f"no container port named {target!r} in the selected pods",
                    )
        elif kind in ("PodDisruptionBudget", "PodMonitor") and "selector" in spec:
            pods = [p for p in _pods_in(objects, ns) if selects(spec.get("selector"), p.labels)]
            if not pods:
                yield Finding("reference", obj, "spec.selector", "selects no pod template here")
            if kind == "PodMonitor":
                names = _port_names(pods)
                for i, ep in enumerate(spec.get("podMetricsEndpoints") or []):
                    port = (ep or {}).get("port")
                    if pods and isinstance(port, str) and port not in names:
                        yield Finding(
                            "reference",
                            obj,
                            f"spec.podMetricsEndpoints[{i}].port",
                            f"no container port named {port!r} in the selected pods",
                        )


def _must_exist(
    index: dict[tuple[str, str | None, str], Obj],
    obj: Obj,
    field: str,
    kind: str,
    name: Any,
) -> Iterator[Finding]:
    if not isinstance(name, str) or not name:
        return
    if (kind, name) in IMPLICIT:
        return
    if (kind, namespace_of(obj), name) not in index:
        yield Finding("reference", obj, field, f"{kind} {name!r} does not exist in this render")


def check_object_refs(objects: list[Obj]) -> Iterator[Finding]:
    """ConfigMaps, Secrets, ServiceAccounts, Services and scale targets named by other objects."""
    index = _index(objects)
    for obj in objects:
        for pod in pod_templates(obj):
            sa = pod.spec.get("serviceAccountName")
            yield from _must_exist(
                index, obj, pod.prefix + "serviceAccountName", "ServiceAccount", sa
            )
            for field, c in pod.containers():
                for i, src in enumerate(c.get("envFrom") or []):
                    for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                        ref = (src or {}).get(key) or {}
                        if ref and not ref.get("optional") and kind == "ConfigMap":
                            yield from _must_exist(
                                index,
                                obj,
                                f"{field}.envFrom[{i}].{key}.name",
                                kind,
                                ref.get("name"),
                            )
            for i, vol in enumerate(pod.spec.get("volumes") or []):
                ref = (vol or {}).get("configMap") or {}
                if ref and not ref.get("optional"):
                    yield from _must_exist(
                        index,
                        obj,
                        f"{pod.prefix}volumes[{i}].configMap.name",
                        "ConfigMap",
                        ref.get("name"),
                    )
        if obj.get("kind") == "HorizontalPodAutoscaler":
            target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            yield from _must_exist(
                index, obj, "spec.scaleTargetRef.name", str(target.get("kind")), target.get("name")
            )
        if obj.get("kind") == "Rollout":
            yield from _rollout_refs(index, obj)


def _rollout_refs(index: dict[tuple[str, str | None, str], Obj], rollout: Obj) -> Iterator[Finding]:
    canary = (((rollout.get("spec") or {}).get("strategy") or {}).get("canary")) or {}
    pods = pod_templates(rollout)
    labels = pods[0].labels if pods else {}
    ns = namespace_of(rollout)
    names = {}
    for key in ("canaryService", "stableService"):
        name = canary.get(key)
        if not name:
            continue
        names[key] = name
        field = f"spec.strategy.canary.{key}"
        service = index.get(("Service", ns, str(name)))
        if service is None:
            yield Finding("reference", rollout, field, f"Service {name!r} does not exist")
        elif not selects((service.get("spec") or {}).get("selector"), labels):
            yield Finding(
                "reference", rollout, field, f"Service {name!r} does not select this Rollout's pods"
            )
    if len(names) == 2 and names["canaryService"] == names["stableService"]:
        yield Finding(
            "reference", rollout, "spec.strategy.canary.canaryService", "same as stableService"
        )
    istio = ((canary.get("trafficRouting") or {}).get("istio")) or {}
    vs_ref = istio.get("virtualService") or {}
    if vs_ref:
        field = "spec.strategy.canary.trafficRouting.istio.virtualService"
        vs = index.get(("VirtualService", ns, str(vs_ref.get("name"))))
        if vs is None:
            yield Finding(
                "reference",
                rollout,
                f"{field}.name",
                f"VirtualService {vs_ref.get('name')!r} does not exist",
            )
        else:
            routes = {r.get("name") for r in (vs.get("spec") or {}).get("http") or []}
            for i, route in enumerate(vs_ref.get("routes") or []):
                if route not in routes:
                    yield Finding(
                        "reference",
                        rollout,
                        f"{field}.routes[{i}]",
                        f"no http route {route!r} in the VirtualService",
                    )
    dr_ref = istio.get("destinationRule") or {}
    if dr_ref:
        field = "spec.strategy.canary.trafficRouting.istio.destinationRule"
        dr = index.get(("DestinationRule", ns, str(dr_ref.get("name"))))
        if dr is None:
            yield Finding(
                "reference",
                rollout,
                f"{field}.name",
                f"DestinationRule {dr_ref.get('name')!r} does not exist",
            )
        else:
            subsets = {s.get("name") for s in (dr.get("spec") or {}).get("subsets") or []}
            for key in ("canarySubsetName", "stableSubsetName"):
                if dr_ref.get(key) not in subsets:
                    yield Finding(
                        "reference",
                        rollout,
                        f"{field}.{key}",
                        f"no subset {dr_ref.get(key)!r} in the DestinationRule",
                    )


def read_kustomization(directory: Path) -> dict[str, Any]:
    kfile = kustomization_file(directory)
    if kfile is None:
        return {}
    data = yaml.safe_load(kfile.read_text())
    return data if isinstance(data, dict) else {}


def check_release_image(
    objects: list[Obj], target: Path, root: Path = REPO_ROOT
) -> Iterator[Finding]:
    """An app overlay pins its image in `images:` under the app's name (the release write-back
    target, docs/CONTRACTS.md), and the rendered containers really carry that image."""
    rel = target.resolve().relative_to(root.resolve()).parts
    if len(rel) != 4 or rel[0] != "apps" or rel[2] != "overlays":
        return
    app = rel[1]
    entries = [e for e in read_kustomization(target).get("images") or [] if isinstance(e, dict)]
    entry = next((e for e in entries if e.get("name") == app), None)
    if entry is None:
        yield Finding("image", None, "images", f"no `images:` entry named {app!r} (release target)")
        return
    repo = entry.get("newName") or app
    if entry.get("digest"):
        expected = f"{repo}@{entry['digest']}"
    elif entry.get("newTag"):
        expected = f"{repo}:{entry['newTag']}"
    else:
        yield Finding("image", None, "images", f"entry {app!r} pins neither newTag nor digest")
        return
    found = False
    for obj in objects:
        for pod in pod_templates(obj):
            for field, c in pod.containers():
                image = str(c.get("image", ""))
                base = re.split(r"[:@]", image.rsplit("/", 1)[-1])[0]
                # the repository without tag or digest: a prefix match would take another
                # image of the same app (`<app>-trainer`) for this one
                repository = image[: len(image) - len(image.rsplit("/", 1)[-1])] + base
                if base == app or repository == str(repo):
                    found = True
                    if image != expected:
                        yield Finding(
                            "image",
                            obj,
                            f"{field}.image",
                            f"is {image!r}, the overlay's images: entry says {expected!r} "
                            "(is kustomize told about this kind?)",
                        )
    if not found:
        yield Finding("image", None, "images", f"no container uses the image {expected!r}")


_GO_KEYS = re.compile(r"\.([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*)")
_GO_ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)


def template_keys(text: str) -> set[tuple[str, ...]]:
    """Parameter paths (`.cluster.server` -> ('cluster', 'server')) used by Go template actions."""
    keys: set[tuple[str, ...]] = set()
    for action in _GO_ACTION.findall(text):
        action = re.sub(r'"[^"]*"', "", action)
        for match in _GO_KEYS.findall(action):
            keys.add(tuple(match.split(".")))
    return keys


def _lookup(data: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


def check_applicationsets(
    objects: list[Obj], rendered_targets: set[Path], root: Path = REPO_ROOT
) -> Iterator[Finding]:
    """Each git-files generator matches config.json files that supply every template key (with
    missingkey=error a missing key fails the whole ApplicationSet), point at a rendered overlay,
    and name a destination the template's AppProject allows. Applications' git paths exist."""
    projects = {name_of(o): o for o in objects if o.get("kind") == "AppProject"}
    targets = {t.resolve() for t in rendered_targets}
    for appset in (o for o in objects if o.get("kind") == "ApplicationSet"):
        spec = appset.get("spec") or {}
        template = spec.get("template") or {}
        text = json.dumps(template) + str(spec.get("templatePatch") or "")
        keys = {k for k in template_keys(text) if k[0] != "path"}
        project = projects.get(str((template.get("spec") or {}).get("project")))
        if project is None:
            yield Finding(
                "argocd", appset, "spec.template.spec.project", "AppProject not in this render"
            )
        for g, gen in enumerate(spec.get("generators") or []):
            for f, entry in enumerate(((gen or {}).get("git") or {}).get("files") or []):
                pattern = str((entry or {}).get("path", ""))
                field = f"spec.generators[{g}].git.files[{f}].path"
                matches = sorted(root.glob(pattern))
                if not matches:
                    yield Finding("argocd", appset, field, f"{pattern!r} matches no file")
                for config_path in matches:
                    yield from _check_config(
                        appset, field, config_path, keys, project, targets, root
                    )
    for app in (o for o in objects if o.get("kind") == "Application"):
        source = (app.get("spec") or {}).get("source") or {}
        path = source.get("path")
        if path and not source.get("chart") and kustomization_file(root / str(path)) is None:
            yield Finding("argocd", app, "spec.source.path", f"{path!r} has no kustomization")
        project = (app.get("spec") or {}).get("project")
        if project not in projects:
            yield Finding(
                "argocd", app, "spec.project", f"AppProject {project!r} not in this render"
            )


def _check_config(
    appset: Obj,
    field: str,
    config_path: Path,
    keys: set[tuple[str, ...]],
    project: Obj | None,
    targets: set[Path],
    root: Path,
) -> Iterator[Finding]:
    rel = config_path.relative_to(root).as_posix()
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        yield Finding("argocd", appset, field, f"{rel}: not JSON ({exc})")
        return
    for key in sorted(keys):
        if not _lookup(config, key):
            yield Finding("argocd", appset, field, f"{rel}: missing key {'.'.join(key)!r}")
    if config_path.parent.resolve() not in targets:
        yield Finding("argocd", appset, field, f"{rel}: its directory is not a rendered overlay")
    namespace = config.get("namespace")
    if project is not None and isinstance(namespace, str):
        server = (config.get("cluster") or {}).get("server")
        allowed = (project.get("spec") or {}).get("destinations") or []
        if not any(
            fnmatch.fnmatch(namespace, str(d.get("namespace", "")))
            and fnmatch.fnmatch(str(server), str(d.get("server", "*")))
            for d in allowed
        ):
            yield Finding(
                "argocd",
                appset,
                field,
                f"{rel}: namespace {namespace!r} on {server!r} is not a destination of AppProject "
                f"{name_of(project)!r}",
            )
    overlay_ns = read_kustomization(config_path.parent).get("namespace")
    if overlay_ns and namespace and overlay_ns != namespace:
        yield Finding(
            "argocd",
            appset,
            field,
            f"{rel}: namespace {namespace!r} differs from the overlay's {overlay_ns!r}",
        )
