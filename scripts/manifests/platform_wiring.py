"""Platform rules of a cluster's render (clusters/<cluster>): does the Argo CD wiring let the
pinned charts install what the apps need, in order, and leave them alone afterwards?

The charts cannot be rendered here, so what each chart does comes from scripts/platform.py
(CHARTS, read from each chart's source at its pinned version; docs/PLATFORM.md). Rules, each
named in its messages:

- `chart-pinned`: a chart Application names a chart version CHARTS does not describe.
- `project-destinations`: every namespace a chart writes to (its own and, per its values, others
  such as kube-system) is a destination of the Application's AppProject; Argo CD refuses to sync
  an object into any other namespace.
- `crds-installed`: every custom resource kind an app of this cluster renders is installed by a
  platform Application of this cluster, at a sync wave before the ApplicationSet creating the app.
- `services-installed`: every in-cluster URL an app renders (`http[s]://<svc>.<ns>.svc[:port]`)
  names a Service a platform Application creates, with that port and scheme.
- `application-health`: sync waves between Applications wait only when Argo CD assesses an
  Application's health, which it has not done by default since 1.8 (argocd-cm key
  `resource.customizations.health.argoproj.io_Application` restores it); that ConfigMap, in this
  render, syncs before every Application it orders.
- `runtime-fields`: a field a controller rewrites after the sync (CHARTS) is ignored by the
  Application and the Application respects that on sync (`RespectIgnoreDifferences=true`);
  `ignore-differences`: `ignoreDifferences` without `RespectIgnoreDifferences=true` is undone by
  the next sync, and `RespectIgnoreDifferences=true` without `ignoreDifferences` does nothing.
- `sync-window-effective`: a deny window blocks something: it denies manual syncs too, or it
  matches at least one Application that syncs automatically.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts import gen_schemas, platform
from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj
from scripts.manifests.workloads import name_of

Renderer = Callable[[Path], list[Obj]]

HEALTH_KEY = "resource.customizations.health.argoproj.io_Application"
WAVE = "argocd.argoproj.io/sync-wave"
RESPECT = "RespectIgnoreDifferences=true"
_URL = re.compile(
    r"\b(https?)://([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc"
    r"(?:\.cluster\.local)?(?::(\d+))?"
)


def wave(obj: Obj) -> int:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations.get(WAVE, 0))
    except (TypeError, ValueError):
        return 0


def helm_values(app: Obj) -> dict[str, Any]:
    """The values an Application gives its chart: `valuesObject`, else the `values` string, then
    `parameters` on top (Argo CD's precedence; value files cannot be read here)."""
    helm = (((app.get("spec") or {}).get("source")) or {}).get("helm") or {}
    values: dict[str, Any] = {}
    if isinstance(helm.get("valuesObject"), dict):
        values = json.loads(json.dumps(helm["valuesObject"]))
    elif isinstance(helm.get("values"), str):
        loaded = yaml.safe_load(helm["values"])
        values = loaded if isinstance(loaded, dict) else {}
    for parameter in helm.get("parameters") or []:
        node = values
        keys = str((parameter or {}).get("name", "")).split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = (parameter or {}).get("value")
    return values


@dataclass(frozen=True)
class Release:
    """A chart Application of the render, with its chart's facts."""

    app: Obj
    chart: platform.Chart
    values: dict[str, Any]

    @property
    def name(self) -> str:
        helm = (((self.app.get("spec") or {}).get("source")) or {}).get("helm") or {}
        return str(helm.get("releaseName") or name_of(self.app))

    @property
    def namespace(self) -> str:
        return str(((self.app.get("spec") or {}).get("destination") or {}).get("namespace", ""))

    def when(self, paths: tuple[str, ...]) -> bool:
        return platform.helm_conditions(self.values, paths, self.chart.defaults)

    def value(self, path: str) -> Any:
        return platform.helm_value(self.values, path, self.chart.defaults)


def releases(objects: list[Obj]) -> tuple[list[Release], list[Finding]]:
    found: list[Release] = []
    problems: list[Finding] = []
    for app in (o for o in objects if o.get("kind") == "Application"):
        source = (app.get("spec") or {}).get("source") or {}
        if not source.get("chart"):
            continue
        item = platform.chart(str(source["chart"]), str(source.get("targetRevision")))
        if item is None or item.repo != source.get("repoURL"):
            problems.append(
                Finding(
                    "platform",
                    app,
                    "spec.source.targetRevision",
                    f"rule chart-pinned: chart {source['chart']} {source.get('targetRevision')} "
                    f"from {source.get('repoURL')} is not in CHARTS of scripts/platform.py, so "
                    "what it installs is unknown here: read its templates and add it",
                )
            )
            continue
        found.append(Release(app, item, helm_values(app)))
    return found, problems


def check_platform(
    objects: list[Obj], render: Renderer, root: Path = REPO_ROOT
) -> Iterator[Finding]:
    """Every rule on one cluster render; `render` gives the objects of an app overlay."""
    if not any(o.get("kind") == "AppProject" for o in objects):
        return
    found, problems = releases(objects)
    yield from problems
    yield from _project_destinations(objects, found)
    apps = list(_generated_apps(objects, root))
    yield from _crds_installed(found, apps, render)
    yield from _services_installed(found, apps, render)
    yield from _application_health(objects)
    yield from _runtime_fields(found)
    yield from _ignore_differences(objects)
    yield from _sync_windows(objects, apps)


# ---- project-destinations ----------------------------------------------------------------------


def _allowed(project: Obj, namespace: str, server: str) -> bool:
    return any(
        fnmatch.fnmatch(namespace, str(d.get("namespace", "")))
        and fnmatch.fnmatch(server, str(d.get("server", "*")))
        for d in ((project.get("spec") or {}).get("destinations") or [])
    )


def _project_destinations(objects: list[Obj], found: list[Release]) -> Iterator[Finding]:
    projects = {name_of(o): o for o in objects if o.get("kind") == "AppProject"}
    for release in found:
        spec = release.app.get("spec") or {}
        project = projects.get(str(spec.get("project")))
        if project is None:
            continue  # reported by the reference checks
        server = str((spec.get("destination") or {}).get("server", ""))
        writes: list[tuple[str, str]] = [(release.namespace, "its objects")]
        for foreign in release.chart.foreign:
            if not release.when(foreign.when):
                continue
            what = platform.fill(foreign.objects, release.name, release.chart, release.values)
            spaces = [foreign.namespace] if foreign.namespace else []
            if foreign.namespaces_value:
                listed = release.value(foreign.namespaces_value) or []
                spaces += [str(n) for n in listed if str(n) != release.namespace]
            writes += [(n, what) for n in spaces]
        for namespace, what in writes:
            if not _allowed(project, namespace, server):
                yield Finding(
                    "platform",
                    release.app,
                    "spec.project",
                    f"rule project-destinations: chart {release.chart.ref} writes {what} into "
                    f"namespace {namespace!r}, which AppProject {name_of(project)!r} does not "
                    "list as a destination: Argo CD would refuse the sync",
                )


# ---- the apps of the cluster -------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedApp:
    """One Application an ApplicationSet of the render creates (git files generator)."""

    appset: Obj
    field: str
    config_path: Path
    config: dict[str, Any]

    @property
    def overlay(self) -> Path:
        return self.config_path.parent

    @property
    def rel(self) -> str:
        return (
            self.config_path.relative_to(REPO_ROOT).as_posix()
            if self.config_path.is_relative_to(REPO_ROOT)
            else str(self.config_path)
        )

    @property
    def name(self) -> str:
        template = str(
            (((self.appset.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
                "name", ""
            )
        )
        return re.sub(
            r"{{\s*\.([A-Za-z_][\w.]*)\s*}}",
            lambda m: str(_lookup(self.config, m[1].split("."))),
            template,
        )

    @property
    def project(self) -> str:
        spec = ((self.appset.get("spec") or {}).get("template") or {}).get("spec") or {}
        return str(spec.get("project", ""))

    @property
    def automated(self) -> bool:
        """Whether Argo CD syncs it on its own: the template's syncPolicy, or a templatePatch that
        adds `automated` (when guarded by `.sync.automated`, as config.json says)."""
        spec = ((self.appset.get("spec") or {}).get("template") or {}).get("spec") or {}
        if (spec.get("syncPolicy") or {}).get("automated") is not None:
            return True
        patch = str((self.appset.get("spec") or {}).get("templatePatch") or "")
        if "automated:" not in patch:
            return False
        if ".sync.automated" in patch:
            return bool(_lookup(self.config, ["sync", "automated"]))
        return True


def _lookup(data: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _generated_apps(objects: list[Obj], root: Path) -> Iterator[GeneratedApp]:
    for appset in (o for o in objects if o.get("kind") == "ApplicationSet"):
        for g, gen in enumerate((appset.get("spec") or {}).get("generators") or []):
            for f, entry in enumerate(((gen or {}).get("git") or {}).get("files") or []):
                field = f"spec.generators[{g}].git.files[{f}].path"
                for path in sorted(root.glob(str((entry or {}).get("path", "")))):
                    try:
                        config = json.loads(path.read_text())
                    except (OSError, json.JSONDecodeError):
                        continue  # reported by the reference checks
                    if isinstance(config, dict):
                        yield GeneratedApp(appset, field, path, config)


def _rendered(app: GeneratedApp, render: Renderer) -> list[Obj]:
    try:
        return render(app.overlay)
    except Exception:  # noqa: BLE001 (the overlay's own target reports why it does not render)
        return []


# ---- crds-installed ----------------------------------------------------------------------------


def _crds_installed(
    found: list[Release], apps: list[GeneratedApp], render: Renderer
) -> Iterator[Finding]:
    installers: dict[str, list[Release]] = {}
    for release in found:
        crds = release.chart.installs_crds_when
        if crds is not None and release.when(crds):
            installers.setdefault(release.chart.component, []).append(release)
    for app in apps:
        needed: dict[str, set[str]] = {}
        for obj in _rendered(app, render):
            item = gen_schemas.kind_of(str(obj.get("kind")), str(obj.get("apiVersion")))
            if item is not None:
                needed.setdefault(item.component, set()).add(item.kind)
        for component, kinds in sorted(needed.items()):
            listed = ", ".join(sorted(kinds))
            owners = installers.get(component, [])
            if not owners:
                charts = " or ".join(platform.component(component).charts) or "no chart"
                yield Finding(
                    "platform",
                    app.appset,
                    app.field,
                    f"rule crds-installed: {app.rel}: the app renders {listed}, whose CRDs "
                    f"({component}) no platform Application of this cluster installs "
                    f"({charts})",
                )
            elif min(wave(r.app) for r in owners) >= wave(app.appset):
                yield Finding(
                    "platform",
                    app.appset,
                    app.field,
                    f"rule crds-installed: {app.rel}: the CRDs of {listed} ({component}) come "
                    f"at sync wave {min(wave(r.app) for r in owners)}, not before this "
                    f"ApplicationSet's wave {wave(app.appset)}",
                )


# ---- services-installed ------------------------------------------------------------------------


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _services_installed(
    found: list[Release], apps: list[GeneratedApp], render: Renderer
) -> Iterator[Finding]:
    offered: dict[tuple[str, str], tuple[int, bool, Release]] = {}
    for release in found:
        for service in release.chart.services:
            if not release.when(service.when):
                continue
            name = platform.fill(service.name, release.name, release.chart, release.values)
            tls = bool(release.value(service.tls_value)) if service.tls_value else False
            port = int(release.value(service.port_value))
            offered[(name, release.namespace)] = (port, tls, release)
    for app in apps:
        seen: set[str] = set()
        for obj in _rendered(app, render):
            if obj.get("kind") in ("ConfigMap", "Secret"):
                texts = list(_strings(obj.get("data")))
            else:
                texts = list(_strings(obj.get("spec")))
            for text in texts:
                for match in _URL.finditer(text):
                    url = match[0]
                    if url in seen:
                        continue
                    seen.add(url)
                    yield from _check_url(app, obj, match, offered)


def _check_url(
    app: GeneratedApp,
    obj: Obj,
    match: re.Match[str],
    offered: dict[tuple[str, str], tuple[int, bool, Release]],
) -> Iterator[Finding]:
    scheme, service, namespace = match[1], match[2], match[4]
    if namespace == app.config.get("namespace"):
        return  # the app's own Service: the reference checks judge those
    port = int(match[6]) if match[6] else (443 if scheme == "https" else 80)
    where = f"rule services-installed: {app.rel}: {obj.get('kind')} {name_of(obj)} calls {match[0]}"
    offer = offered.get((service, namespace))
    if offer is None:
        yield Finding(
            "platform",
            app.appset,
            app.field,
            f"{where}, but no platform Application of this cluster creates Service "
            f"{service!r} in namespace {namespace!r}",
        )
        return
    have_port, tls, release = offer
    if have_port != port:
        yield Finding(
            "platform",
            app.appset,
            app.field,
            f"{where}, but {release.chart.ref} (Application {name_of(release.app)}) serves it on "
            f"port {have_port}",
        )
    if tls != (scheme == "https"):
        speaks = "TLS" if tls else "plain HTTP"
        yield Finding(
            "platform",
            app.appset,
            app.field,
            f"{where}, but {release.chart.ref} (Application {name_of(release.app)}) serves "
            f"{speaks} there",
        )


# ---- application-health ------------------------------------------------------------------------


def _application_health(objects: list[Obj]) -> Iterator[Finding]:
    ordered = [o for o in objects if o.get("kind") in ("Application", "ApplicationSet")]
    waves = sorted({wave(o) for o in ordered if not _is_root(o)})
    if len(waves) < 2:
        return
    later = max(ordered, key=wave)
    config = next(
        (
            o
            for o in objects
            if o.get("kind") == "ConfigMap"
            and name_of(o) == "argocd-cm"
            and HEALTH_KEY in ((o.get("data") or {}))
        ),
        None,
    )
    if config is None:
        yield Finding(
            "platform",
            later,
            f"metadata.annotations.{WAVE}",
            f"rule application-health: Applications here sync in waves {waves}, but Argo CD "
            f"moves to the next wave without waiting for an Application to be healthy unless "
            f"argocd-cm sets {HEALTH_KEY}; no argocd-cm in this render does",
        )
    elif wave(config) >= waves[0]:
        yield Finding(
            "platform",
            config,
            f"metadata.annotations.{WAVE}",
            f"rule application-health: argocd-cm syncs at wave {wave(config)}, not before the "
            f"first Application it orders (wave {waves[0]})",
        )


def _is_root(obj: Obj) -> bool:
    """The Application that syncs the cluster folder itself (its wave orders nothing here)."""
    source = (obj.get("spec") or {}).get("source") or {}
    return obj.get("kind") == "Application" and str(source.get("path", "")).startswith("clusters/")


# ---- runtime-fields and ignore-differences -----------------------------------------------------


def _sync_options(spec: dict[str, Any]) -> list[str]:
    return [str(o) for o in ((spec.get("syncPolicy") or {}).get("syncOptions") or [])]


def _ignores(spec: dict[str, Any], field: platform.RuntimeField) -> bool:
    for entry in spec.get("ignoreDifferences") or []:
        entry = entry or {}
        if entry.get("group", "") != field.group or entry.get("kind") != field.kind:
            continue
        if entry.get("name") not in (None, field.name):
            continue
        if field.json_pointer in (entry.get("jsonPointers") or []):
            return True
        if field.jq_path in (entry.get("jqPathExpressions") or []):
            return True
    return False


def _runtime_fields(found: list[Release]) -> Iterator[Finding]:
    for release in found:
        spec = release.app.get("spec") or {}
        for field in release.chart.runtime_fields:
            if not release.when(field.when):
                continue
            what = f"{field.kind} {field.name} {field.json_pointer}"
            if not _ignores(spec, field):
                yield Finding(
                    "platform",
                    release.app,
                    "spec.ignoreDifferences",
                    f"rule runtime-fields: chart {release.chart.ref} creates {what}, which "
                    f"changes after the sync ({field.why}): without an ignoreDifferences entry "
                    "the Application is OutOfSync for good and self-heal and the controller "
                    "undo each other",
                )
            elif RESPECT not in _sync_options(spec):
                yield Finding(
                    "platform",
                    release.app,
                    "spec.syncPolicy.syncOptions",
                    f"rule runtime-fields: {what} is ignored in the diff but every sync still "
                    f"writes it back ({field.why}): add {RESPECT}",
                )


def _ignore_differences(objects: list[Obj]) -> Iterator[Finding]:
    for obj in objects:
        if obj.get("kind") == "Application":
            spec, prefix = obj.get("spec") or {}, "spec."
        elif obj.get("kind") == "ApplicationSet":
            spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
            prefix = "spec.template.spec."
        else:
            continue
        ignores, respects = bool(spec.get("ignoreDifferences")), RESPECT in _sync_options(spec)
        if respects and not ignores:
            yield Finding(
                "platform",
                obj,
                f"{prefix}syncPolicy.syncOptions",
                f"rule ignore-differences: {RESPECT} without ignoreDifferences does nothing "
                "(is the ignoreDifferences on another Application?)",
            )
        elif ignores and not respects and not _chart_covered(obj):
            yield Finding(
                "platform",
                obj,
                f"{prefix}ignoreDifferences",
                f"rule ignore-differences: the ignored fields are still written back by every "
                f"sync: add {RESPECT}",
            )


def _chart_covered(obj: Obj) -> bool:
    """Chart Applications are judged by the sharper runtime-fields rule instead."""
    source = (obj.get("spec") or {}).get("source") or {}
    return obj.get("kind") == "Application" and bool(source.get("chart"))


# ---- sync-window-effective ---------------------------------------------------------------------


def _window_matches(window: dict[str, Any], name: str, namespace: str, cluster: str) -> bool:
    """Argo CD v3.2.11: a window selects by application name, destination namespace or cluster
    (server or name), wildcards allowed; the selectors are OR-ed unless `andOperator`."""
    tests = [
        (window.get("applications"), name),
        (window.get("namespaces"), namespace),
        (window.get("clusters"), cluster),
    ]
    results = [
        any(fnmatch.fnmatch(value, str(p)) for p in patterns)
        for patterns, value in tests
        if patterns
    ]
    return bool(results) and (all(results) if window.get("andOperator") else any(results))


def _cluster(destination: dict[str, Any]) -> str:
    return str(destination.get("server") or destination.get("name") or "")


def _sync_windows(objects: list[Obj], apps: list[GeneratedApp]) -> Iterator[Finding]:
    static = [
        (
            name_of(o),
            str(((o.get("spec") or {}).get("destination") or {}).get("namespace", "")),
            _cluster((o.get("spec") or {}).get("destination") or {}),
            str((o.get("spec") or {}).get("project", "")),
            (((o.get("spec") or {}).get("syncPolicy") or {}).get("automated")) is not None,
        )
        for o in objects
        if o.get("kind") == "Application"
    ]
    generated = [
        (
            app.name,
            str(app.config.get("namespace", "")),
            _cluster(app.config.get("cluster") or {}),
            app.project,
            app.automated,
        )
        for app in apps
    ]
    for project in (o for o in objects if o.get("kind") == "AppProject"):
        for i, window in enumerate((project.get("spec") or {}).get("syncWindows") or []):
            window = window or {}
            if window.get("kind") != "deny" or not window.get("manualSync"):
                continue
            matched = [
                (name, automated)
                for name, namespace, cluster, owner, automated in static + generated
                if owner == name_of(project) and _window_matches(window, name, namespace, cluster)
            ]
            if not any(automated for _, automated in matched):
                names = ", ".join(sorted(n for n, _ in matched)) or "no Application"
                yield Finding(
                    "platform",
                    project,
                    f"spec.syncWindows[{i}]",
                    f"rule sync-window-effective: this deny window lets manual syncs through "
                    f"(manualSync: true) and matches only Applications without automated sync "
                    f"({names}): it blocks nothing",
                )
