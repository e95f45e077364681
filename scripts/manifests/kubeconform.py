"""The real kubeconform (built by `make engines`) on every rendered target, strictly, offline.

Schemas: CRDs from schemas/ (generated from the pinned CRDs), core kinds from kubernetes-validate's
strict schemas of the Kubernetes minor the control plane pins. Those core files point at a shared
`_definitions.json` by an absolute `$ref` kubeconform resolves to a file that does not exist (it
then reports "could not find schema"), so each core kind a render uses is written once as a
standalone schema (the kind plus the definitions it reaches) into the git-ignored `.cache/`.

kubeconform's verdict is reported per object and field like the fast path's, under the check
`kubeconform`; where one rejects an object the other accepts, a `schema-agreement` problem says so.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from scripts import engines
from scripts.gen_schemas import kubernetes_schema_dir
from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj, path_str
from scripts.manifests.render import dump_documents
from scripts.manifests.schema import KUBERNETES_VERSION, SCHEMA_DIR

CACHE_ROOT = REPO_ROOT / ".cache" / "kubeconform"
CRD_LOCATION = "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"
CORE_LOCATION = "{{ .ResourceKind }}{{ .KindSuffix }}.json"


class KubeconformError(RuntimeError):
    """kubeconform could not run or said something this module cannot read."""


def core_file_name(kind: str, api_version: str) -> str:
    """kubernetes-validate's and kubeconform's name: <kind>-<first group label>-<version>.json."""
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def core_cache_dir(kubernetes_version: str = KUBERNETES_VERSION) -> Path:
    """Standalone core schemas, keyed by Kubernetes and kubernetes-validate versions."""
    tool = metadata.version("kubernetes-validate")
    return CACHE_ROOT / f"v{kubernetes_version}-local-strict-kv{tool}"


_DEFINITIONS_REF = re.compile(r"^(?:/api/)?_definitions\.json#/\$defs/(.+)$")


def standalone_core_schema(kind_file: Path) -> dict[str, Any]:
    """A kubernetes-validate kind schema with the definitions it reaches copied into `$defs`."""
    definitions: dict[str, Any] = json.loads(
        (kind_file.parent / "_definitions.json").read_text(encoding="utf-8")
    )["$defs"]
    needed: dict[str, Any] = {}

    def local(node: Any) -> Any:
        if isinstance(node, list):
            return [local(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                name = value.rsplit("/", 1)[-1]
                match = _DEFINITIONS_REF.match(value)
                if match is not None or value.startswith("#/$defs/"):
                    if name not in needed:
                        needed[name] = {}  # placeholder first: definitions may recurse
                        needed[name] = local(definitions[name])
                    value = f"#/$defs/{name}"
            out[key] = local(value)
        return out

    schema: dict[str, Any] = local(json.loads(kind_file.read_text(encoding="utf-8")))
    schema["$defs"] = dict(sorted(needed.items()))
    return schema


def ensure_core_schemas(
    objects: Iterable[Obj], kubernetes_version: str = KUBERNETES_VERSION
) -> Path:
    """Write the standalone schema of every core kind among `objects` that is not cached yet."""
    target = core_cache_dir(kubernetes_version)
    source = kubernetes_schema_dir(kubernetes_version)
    for obj in objects:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not isinstance(api_version, str):
            continue
        name = core_file_name(kind, api_version)
        if (target / name).is_file() or not (source / name).is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        # write then rename: concurrent runs in one clone never see half a file
        handle, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(standalone_core_schema(source / name), out, sort_keys=True)
        os.replace(tmp, target / name)
    return target


@dataclass(frozen=True)
class Verdict:
    """kubeconform's answer for one object of one rendered file."""

    filename: str
    kind: str
    name: str
    status: str
    message: str
    errors: tuple[tuple[str, str], ...]
    """(JSON pointer, message) of each validation error."""


def command(
    files: list[Path], core_dir: Path, schema_dir: Path = SCHEMA_DIR, workers: int = 1
) -> list[str]:
    """The kubeconform invocation: strict, our CRD schemas first, then the core ones, no network.
    One worker: more only compile the same large schemas twice (measured: no faster on 2 cores)."""
    return [
        str(engines.program_path("kubeconform")),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-n",
        str(workers),
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        f"{schema_dir}/{CRD_LOCATION}",
        "-schema-location",
        f"{core_dir}/{CORE_LOCATION}",
        *map(str, files),
    ]


def run(files: list[Path], core_dir: Path, schema_dir: Path = SCHEMA_DIR) -> list[Verdict]:
    """Run kubeconform on rendered files; -> every object it did not find valid."""
    try:
        proc = subprocess.run(
            command(files, core_dir, schema_dir), capture_output=True, text=True, check=False
        )
    except engines.EngineError as exc:
        raise KubeconformError(str(exc)) from None
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise KubeconformError(
            f"kubeconform exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[:500]}"
        ) from None
    verdicts = [
        Verdict(
            str(item.get("filename", "")),
            str(item.get("kind", "")),
            str(item.get("name", "")),
            str(item.get("status", "")),
            str(item.get("msg", "")),
            tuple(
                (str(e.get("path", "")), str(e.get("msg", "")))
                for e in item.get("validationErrors") or []
            ),
        )
        for item in report.get("resources") or []
    ]
    if proc.returncode != 0 and not verdicts:
        raise KubeconformError(f"kubeconform exited {proc.returncode}: {proc.stderr.strip()}")
    return verdicts


_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _field(pointer: str, message: str) -> list[str]:
    """Dotted fields an error names: the pointer, plus the property for unknown/missing ones."""
    parts: list[str | int] = [
        int(p) if p.isdigit() else p.replace("~1", "/").replace("~0", "~")
        for p in pointer.split("/")
        if p
    ]
    if message.startswith(("additional properties", "missing propert")):
        names = _QUOTED.findall(message)
        return [path_str(parts + [name]) for name in names] or [path_str(parts)]
    return [path_str(parts) or "(object)"]


# kubeconform's `validationErrors` stop at the first level of the error tree (for core kinds that
# is the `$ref` of `spec`: "validation failed"); its `msg` carries the whole tree on one line.
_TREE_ENTRY = re.compile(r"- at '((?:[^'\\]|\\.)*)': (.*?)(?= +- at '|$)")
_WRAPPERS = {"validation failed", "allOf failed", "anyOf failed", "oneOf failed"}


def errors_of(verdict: Verdict) -> list[tuple[str, str]]:
    """(JSON pointer, message) of the innermost errors, alternatives at one place joined."""
    entries = [(m[1], m[2].strip()) for m in _TREE_ENTRY.finditer(verdict.message)]
    leaves = [(pointer, text) for pointer, text in entries if text not in _WRAPPERS]
    if not leaves:
        leaves = [e for e in verdict.errors if e[1] not in _WRAPPERS] or list(verdict.errors)
    merged: dict[str, list[str]] = {}
    for pointer, text in leaves:
        if text not in merged.setdefault(pointer, []):
            merged[pointer].append(text)
    out: list[tuple[str, str]] = []
    for pointer, texts in merged.items():
        properties = [
            t for t in texts if t.startswith(("additional properties", "missing propert"))
        ]
        out += [(pointer, t) for t in properties]
        rest = [t for t in texts if t not in properties]
        if rest:
            out.append((pointer, "; ".join(rest)))
    return out


def findings(verdict: Verdict, obj: Obj | None) -> list[Finding]:
    """One finding per field kubeconform names (its own words), or one for the object."""
    if verdict.status == "statusError":
        field = "kind" if "could not find schema" in verdict.message else "(object)"
        return [Finding("kubeconform", obj, field, verdict.message)]
    out = [
        Finding("kubeconform", obj, field, message)
        for pointer, message in errors_of(verdict)
        for field in _field(pointer, message)
    ]
    return out or [Finding("kubeconform", obj, "(object)", verdict.message)]


def validate_rendered(
    rendered: dict[str, list[Obj]], schema_dir: Path = SCHEMA_DIR
) -> dict[str, list[Finding]]:
    """kubeconform on each target's rendered objects (one process for all) -> findings per target.

    `rendered` maps a target's name to its objects; each object a finding names is the rendered
    object itself, so callers place it in a source file like any other finding.
    """
    core_dir = ensure_core_schemas(o for objects in rendered.values() for o in objects)
    out: dict[str, list[Finding]] = {name: [] for name in rendered}
    with tempfile.TemporaryDirectory(prefix="kubeconform-") as scratch:
        files: dict[str, str] = {}
        for index, (name, objects) in enumerate(rendered.items()):
            path = Path(scratch) / f"{index:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.yaml"
            path.write_text(dump_documents(objects), encoding="utf-8")
            files[str(path)] = name
        if not files:
            return out
        verdicts = run([Path(f) for f in files], core_dir, schema_dir)
    for verdict in verdicts:
        if verdict.filename not in files:
            raise KubeconformError(f"kubeconform reported an unknown file {verdict.filename}")
        target = files[verdict.filename]
        obj = next(
            (
                o
                for o in rendered[target]
                if o.get("kind") == verdict.kind
                and (o.get("metadata") or {}).get("name") == verdict.name
            ),
            None,
        )
        out[target] += findings(verdict, obj)
    return out
