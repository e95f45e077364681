"""Network rules of one app's render: what its NetworkPolicies and Istio objects let through, read
the way the cluster will (docs/PLATFORM.md has each rule with the versions it was read from).

- `peer-selector-rewritten`: a NetworkPolicy peer in another namespace selects pods by a label
  kustomize stamped onto it (`labels` with `includeSelectors: true`, or `commonLabels`, also
  rewrite the `podSelector.matchLabels` of every ingress/egress peer): the label is this app's
  own, the pods there do not carry it, the policy admits nobody.
- `istio-mtls-without-sidecar`: a DestinationRule asks for `ISTIO_MUTUAL` towards pods that get
  no sidecar: clients in the mesh then send mTLS to a plaintext server.
- `istio-sidecar-egress`: pods that get a sidecar, under a default-deny egress policy, must be
  allowed to reach istiod (namespace istio-system, TCP 15012), or the sidecar never gets its
  configuration and certificate and the pod never becomes ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj
from scripts.manifests.sources import SourceDoc
from scripts.manifests.workloads import PodTemplate, name_of, namespace_of, pod_templates, selects

INJECT_LABEL = "sidecar.istio.io/inject"
"""Pod label the default-revision injection webhook of Istio 1.24 selects on (value "true")."""
NAMESPACE_INJECTION = "istio-injection"
ISTIOD_NAMESPACE = "istio-system"
ISTIOD_XDS_PORT = 15012
"""istiod's port for sidecar configuration (xDS) and certificates (Istio 1.24)."""
METADATA_NAME = "kubernetes.io/metadata.name"


def stamped_labels(docs: list[SourceDoc]) -> dict[str, tuple[str, str]]:
    """{label: (value, kustomization file)} that kustomize writes into selectors, read from the
    kustomization files among a target's source documents."""
    out: dict[str, tuple[str, str]] = {}
    for doc in docs:
        if doc.kind != "Kustomization":
            continue
        try:
            data = yaml.safe_load(doc.text)
        except yaml.YAMLError:
            continue
        if not isinstance(data, dict):
            continue
        for key, value in (data.get("commonLabels") or {}).items():
            out[str(key)] = (str(value), doc.path.as_posix())
        for entry in data.get("labels") or []:
            if isinstance(entry, dict) and entry.get("includeSelectors"):
                for key, value in (entry.get("pairs") or {}).items():
                    out[str(key)] = (str(value), doc.path.as_posix())
    return out


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def _selects_only_own_namespace(peer: dict[str, Any], own: str | None) -> bool:
    selector = peer.get("namespaceSelector")
    if not isinstance(selector, dict):
        return False
    labels = selector.get("matchLabels") or {}
    return own is not None and labels.get(METADATA_NAME) == own


def _peers(policy: Obj) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = policy.get("spec") or {}
    for direction, side in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(spec.get(direction) or []):
            for j, peer in enumerate((rule or {}).get(side) or []):
                if isinstance(peer, dict):
                    yield f"spec.{direction}[{i}].{side}[{j}]", peer


def check_peer_selectors(objects: list[Obj], docs: list[SourceDoc]) -> Iterator[Finding]:
    stamped = stamped_labels(docs)
    if not stamped:
        return
    for policy in (o for o in objects if o.get("kind") == "NetworkPolicy"):
        for field, peer in _peers(policy):
            if "namespaceSelector" not in peer or _selects_only_own_namespace(
                peer, namespace_of(policy)
            ):
                continue
            match = ((peer.get("podSelector") or {}).get("matchLabels")) or {}
            for key, value in match.items():
                if key in stamped and stamped[key][0] == str(value):
                    where = _rel(Path(stamped[key][1]))
                    yield Finding(
                        "network",
                        policy,
                        f"{field}.podSelector.matchLabels.{key}",
                        f"rule peer-selector-rewritten: this peer selects pods of other "
                        f"namespaces by {key}={value}, a label kustomize stamps on every "
                        f"selector of this app ({where}: labels with includeSelectors); pods "
                        "there do not carry it, so the policy admits nobody. Select them with "
                        "matchExpressions (kustomize leaves those alone) or by namespace only",
                    )


def _injected(pod: PodTemplate, namespaces: dict[str, Obj]) -> bool:
    if pod.labels.get(INJECT_LABEL) == "true":
        return True
    namespace = namespaces.get(namespace_of(pod.obj) or "")
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(NAMESPACE_INJECTION) == "enabled" and pod.labels.get(INJECT_LABEL) != "false"


def check_istio(objects: list[Obj]) -> Iterator[Finding]:
    namespaces = {name_of(o): o for o in objects if o.get("kind") == "Namespace"}
    pods = [p for o in objects for p in pod_templates(o)]
    services = {name_of(o): o for o in objects if o.get("kind") == "Service"}
    for rule in (o for o in objects if o.get("kind") == "DestinationRule"):
        spec = rule.get("spec") or {}
        host = str(spec.get("host", "")).split(".")[0]
        service = services.get(host)
        if service is None:
            continue
        selector = (service.get("spec") or {}).get("selector")
        backends = [p for p in pods if selector and selects(selector, p.labels)]
        bare = [p for p in backends if not _injected(p, namespaces)]
        if not bare:
            continue
        for field, mode in _tls_modes(spec):
            if mode == "ISTIO_MUTUAL":
                yield Finding(
                    "istio",
                    rule,
                    field,
                    f"rule istio-mtls-without-sidecar: ISTIO_MUTUAL towards Service {host!r}, "
                    f"whose pods ({', '.join(sorted({name_of(p.obj) for p in bare}))}) get no "
                    f'sidecar (no pod label {INJECT_LABEL}="true", no namespace label '
                    f"{NAMESPACE_INJECTION}=enabled): clients in the mesh would send mTLS to a "
                    "plaintext server",
                )
    yield from _sidecar_egress(objects, pods, namespaces)


def _tls_modes(spec: dict[str, Any]) -> Iterator[tuple[str, str]]:
    policies = [("spec.trafficPolicy", spec.get("trafficPolicy"))]
    for i, subset in enumerate(spec.get("subsets") or []):
        policies.append((f"spec.subsets[{i}].trafficPolicy", (subset or {}).get("trafficPolicy")))
    for prefix, policy in policies:
        if not isinstance(policy, dict):
            continue
        mode = (policy.get("tls") or {}).get("mode")
        if mode:
            yield f"{prefix}.tls.mode", str(mode)
        for j, port in enumerate(policy.get("portLevelSettings") or []):
            mode = ((port or {}).get("tls") or {}).get("mode")
            if mode:
                yield f"{prefix}.portLevelSettings[{j}].tls.mode", str(mode)


ISTIOD_POD_LABELS = {"app": "istiod", "istio": "pilot"}
"""Labels of istiod's pods in the istiod chart 1.24.3 (its Deployment's template)."""


@dataclass(frozen=True)
class Endpoint:
    """A pod, for the NetworkPolicy evaluation: its namespace and labels."""

    namespace: str
    labels: dict[str, str]

    @property
    def namespace_labels(self) -> dict[str, str]:
        # the label the API server sets on every namespace (Kubernetes >= 1.22)
        return {METADATA_NAME: self.namespace}


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        return False  # addresses are unknown here
    pods = peer.get("podSelector")
    spaces = peer.get("namespaceSelector")
    if spaces is None:
        in_scope = other.namespace == policy_ns
    else:
        in_scope = selects(spaces, other.namespace_labels)
    return in_scope and (pods is None or selects(pods, other.labels))


def _port_matches(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports") or []
    return not ports or any(
        (p or {}).get("port") in (port, None) and (p or {}).get("protocol", "TCP") == protocol
        for p in ports
    )


def _direction_allows(
    policies: list[Obj], direction: str, own: Endpoint, other: Endpoint, port: int, protocol: str
) -> bool | None:
    """Whether `own`'s policies let traffic go `direction` to/from `other`; None: none apply."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    side = "from" if direction == "ingress" else "to"
    applying = []
    for policy in policies:
        spec = policy.get("spec") or {}
        if namespace_of(policy) not in (own.namespace, None):
            continue
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if kind in types and selects(spec.get("podSelector") or {}, own.labels):
            applying.append(policy)
    if not applying:
        return None
    for policy in applying:
        for rule in (policy.get("spec") or {}).get(direction) or []:
            rule = rule or {}
            if not _port_matches(rule, port, protocol):
                continue
            peers = rule.get(side)
            if not peers or any(_peer_matches(p or {}, own.namespace, other) for p in peers):
                return True
    return False


def traffic_allowed(
    objects: list[Obj], source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    """Whether the NetworkPolicies among `objects` let `source` open `port` on `destination`:
    the source's egress policies and the destination's ingress policies must both allow it
    (no policy selecting a pod in a direction: that direction is open)."""
    policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
    egress = _direction_allows(policies, "egress", source, destination, port, protocol)
    ingress = _direction_allows(policies, "ingress", destination, source, port, protocol)
    return egress is not False and ingress is not False


def _sidecar_egress(
    objects: list[Obj], pods: list[PodTemplate], namespaces: dict[str, Obj]
) -> Iterator[Finding]:
    istiod = Endpoint(ISTIOD_NAMESPACE, ISTIOD_POD_LABELS)
    for pod in pods:
        if not _injected(pod, namespaces):
            continue
        source = Endpoint(namespace_of(pod.obj) or "", pod.labels)
        if traffic_allowed(objects, source, istiod, ISTIOD_XDS_PORT):
            continue
        label = f"{pod.prefix[: -len('spec.')]}metadata.labels.{INJECT_LABEL}"
        yield Finding(
            "network",
            pod.obj,
            label,
            f"rule istio-sidecar-egress: these pods get an Istio sidecar, and the egress policies "
            f"selecting them do not let it reach istiod ({ISTIOD_NAMESPACE}, TCP "
            f"{ISTIOD_XDS_PORT}): the sidecar would get no configuration or certificate and the "
            "pod would never be ready",
        )
