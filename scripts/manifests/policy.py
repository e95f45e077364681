"""Pod policy: the Kubernetes "restricted" Pod Security profile plus the operational rules this
repo wants (limits, probes, pinned images, no API token). Applied to every pod template of every
workload kind, so a new kind of workload is covered without edits."""

from __future__ import annotations

from typing import Any, Iterator

from scripts.manifests.vocabulary import Finding, Obj
from scripts.manifests.workloads import PodTemplate, name_of, pod_templates

ALLOWED_ADDED_CAPABILITIES = {"NET_BIND_SERVICE"}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None when it is."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image!r} has no tag (means :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image!r} uses :latest"
    return None


def _pod_level(pod: PodTemplate) -> Iterator[Finding]:
    spec, obj, p = pod.spec, pod.obj, pod.prefix
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            yield Finding("policy", obj, p + key, f"{key} is not allowed")
    for i, vol in enumerate(spec.get("volumes") or []):
        if isinstance(vol, dict) and "hostPath" in vol:
            yield Finding(
                "policy", obj, f"{p}volumes[{i}].hostPath", "hostPath volumes are not allowed"
            )


def _effective(pod: PodTemplate, container: dict[str, Any], key: str) -> Any:
    csc = container.get("securityContext") or {}
    if key in csc:
        return csc[key]
    return (pod.spec.get("securityContext") or {}).get(key)


def _container(pod: PodTemplate, field: str, c: dict[str, Any], init: bool) -> Iterator[Finding]:
    obj = pod.obj
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        yield Finding(
            "policy",
            obj,
            f"{field}.securityContext.privileged",
            "privileged containers are not allowed",
        )
    if sc.get("allowPrivilegeEscalation") is not False:
        yield Finding(
            "policy", obj, f"{field}.securityContext.allowPrivilegeEscalation", "must be false"
        )
    if sc.get("readOnlyRootFilesystem") is not True:
        yield Finding(
            "policy", obj, f"{field}.securityContext.readOnlyRootFilesystem", "must be true"
        )
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        yield Finding("policy", obj, f"{field}.securityContext.capabilities.drop", "must drop ALL")
    added = set(caps.get("add") or []) - ALLOWED_ADDED_CAPABILITIES
    if added:
        yield Finding(
            "policy", obj, f"{field}.securityContext.capabilities.add", f"adds {sorted(added)}"
        )
    if _effective(pod, c, "runAsNonRoot") is not True:
        yield Finding(
            "policy",
            obj,
            f"{field}.securityContext.runAsNonRoot",
            "must be true (pod or container)",
        )
    if _effective(pod, c, "runAsUser") == 0:
        yield Finding("policy", obj, f"{field}.securityContext.runAsUser", "must not be 0 (root)")
    seccomp = (_effective(pod, c, "seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_SECCOMP:
        yield Finding(
            "policy",
            obj,
            f"{field}.securityContext.seccompProfile.type",
            "must be RuntimeDefault or Localhost (pod or container)",
        )
    image = c.get("image")
    if not isinstance(image, str) or not image:
        yield Finding("policy", obj, f"{field}.image", "container has no image")
    elif (why := image_problem(image)) is not None:
        yield Finding("policy", obj, f"{field}.image", why)
    resources = c.get("resources") or {}
    for section in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in (resources.get(section) or {}):
                yield Finding(
                    "policy", obj, f"{field}.resources.{section}.{res}", f"{section} {res} missing"
                )
    for i, port in enumerate(c.get("ports") or []):
        if isinstance(port, dict) and port.get("hostPort"):
            yield Finding("policy", obj, f"{field}.ports[{i}].hostPort", "hostPort is not allowed")
    if not init:
        for probe in ("readinessProbe", "livenessProbe"):
            if not c.get(probe):
                yield Finding("policy", obj, f"{field}.{probe}", f"{probe} missing")


def check_policy(objects: list[Obj]) -> Iterator[Finding]:
    service_accounts = {name_of(o): o for o in objects if o.get("kind") == "ServiceAccount"}
    for obj in objects:
        for pod in pod_templates(obj):
            yield from _pod_level(pod)
            for key in ("containers", "initContainers"):
                for i, c in enumerate(pod.spec.get(key) or []):
                    if isinstance(c, dict):
                        field = f"{pod.prefix}{key}[{i}]"
                        yield from _container(pod, field, c, key == "initContainers")
            if not pod.spec.get("containers"):
                yield Finding("policy", obj, f"{pod.prefix}containers", "pod has no containers")
            sa = service_accounts.get(str(pod.spec.get("serviceAccountName", "default")))
            mounted = pod.spec.get("automountServiceAccountToken")
            if mounted is None and sa is not None:
                mounted = sa.get("automountServiceAccountToken")
            if mounted is not False:
                yield Finding(
                    "policy",
                    obj,
                    f"{pod.prefix}automountServiceAccountToken",
                    "must be false (on the pod or its ServiceAccount): no API token is needed",
                )
