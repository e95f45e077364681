"""Strict schema validation, the fast path: core kinds against kubernetes-validate's strict schemas
of the Kubernetes minor the control plane pins, CRDs against schemas/<group>/<kind>_<version>.json
(kubeconform's layout, generated from the pinned CRDs by scripts/gen_schemas.py).

Unknown fields fail everywhere (`additionalProperties: false`), like `kubeconform -strict`; a kind
with no schema fails too, like kubeconform without `-ignore-missing-schemas`. The real kubeconform
runs on the same schemas afterwards (scripts/manifests/kubeconform.py) and must agree.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import jsonschema
from referencing import Registry, Resource

from scripts import engines
from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj, path_str


def kubernetes_schema_version() -> str:
    """`X.Y.0` of the Kubernetes the control plane pins (tools/engines/kubernetes/go.mod, the one
    home of that version): kubernetes-validate ships one schema set per minor."""
    version = engines.engine_of("kube-apiserver").version()
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if match is None:
        raise ValueError(f"k8s.io/kubernetes {version}: not vX.Y.Z")
    return f"{match[1]}.{match[2]}.0"


KUBERNETES_VERSION = kubernetes_schema_version()

SCHEMA_DIR = REPO_ROOT / "schemas"


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@lru_cache(maxsize=None)
def _core_definitions(version: str) -> Resource[Any]:
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (base / f"v{version}-local-strict" / "_definitions.json").read_text()
    return Resource.from_contents(json.loads(text))


@lru_cache(maxsize=None)
def _core_validator(version: str, kind: str, api_version: str) -> jsonschema.Validator | None:
    # kubernetes-validate names files <kind>-<first group label>-<version>.json
    flat = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    schema_file = base / f"v{version}-local-strict" / f"{kind.lower()}-{flat}.json"
    if not schema_file.is_file():
        return None
    schema = json.loads(schema_file.read_text())
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = _core_definitions(version) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


@lru_cache(maxsize=None)
def _crd_validator(schema_dir: Path, kind: str, api_version: str) -> jsonschema.Validator | None:
    group, version = _split_api_version(api_version)
    path = schema_dir / group / f"{kind.lower()}_{version}.json"
    if not group or not path.is_file():
        return None
    schema = json.loads(path.read_text())
    # the generated files declare draft 4, kubeconform's default (scripts/gen_schemas.py)
    validator: type[jsonschema.Validator] = jsonschema.validators.validator_for(schema)
    return validator(schema)


def _leaf_error(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For anyOf/oneOf failures, the most specific sub-error (jsonschema's own ranking)."""
    if error.context:
        best = jsonschema.exceptions.best_match(error.context)
        if best is not None:
            return _leaf_error(best)
    return error


def _finding(obj: Obj, error: jsonschema.ValidationError) -> Iterator[Finding]:
    error = _leaf_error(error)
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = (
            set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
        )
        extra = sorted(k for k in error.instance if k not in allowed)
        for key in extra or ["?"]:
            yield Finding(
                "schema", obj, path_str(where + [key]), f"unknown field {key!r} (not in the schema)"
            )
        return
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        key = missing[0] if missing else "?"
        yield Finding("schema", obj, path_str(where + [key]), f"required field {key!r} is missing")
        return
    yield Finding("schema", obj, path_str(where) or "(object)", error.message)


class SchemaValidator:
    """Validates objects; validators are built once per (kind, apiVersion) and cached."""

    def __init__(
        self, schema_dir: Path = SCHEMA_DIR, kubernetes_version: str = KUBERNETES_VERSION
    ) -> None:
        self.schema_dir = schema_dir
        self.kubernetes_version = kubernetes_version

    def validator_for(self, kind: str, api_version: str) -> jsonschema.Validator | None:
        crd = _crd_validator(self.schema_dir, kind, api_version)
        if crd is not None:
            return crd
        return _core_validator(self.kubernetes_version, kind, api_version)

    def knows_api_version(self, api_version: str) -> bool:
        """Whether any kind has a schema in this apiVersion (so a miss is the kind's fault)."""
        group, version = _split_api_version(api_version)
        if group and any((self.schema_dir / group).glob(f"*_{version}.json")):
            return True
        flat = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
        folder = base / f"v{self.kubernetes_version}-local-strict"
        suffix = f"-{flat}.json"
        return any(
            entry.name.endswith(suffix) and entry.name.count("-") == suffix.count("-")
            for entry in folder.iterdir()
        )

    def validate(self, obj: Obj) -> list[Finding]:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not kind:
            return [Finding("schema", obj, "kind", "missing or not a string")]
        if not isinstance(api_version, str) or not api_version:
            return [Finding("schema", obj, "apiVersion", "missing or not a string")]
        meta = obj.get("metadata")
        if not isinstance(meta, dict) or not meta.get("name"):
            return [Finding("schema", obj, "metadata.name", "every object needs a name")]
        validator = self.validator_for(kind, api_version)
        if validator is None:
            field = "kind" if self.knows_api_version(api_version) else "apiVersion"
            return [
                Finding(
                    "schema",
                    obj,
                    field,
                    f"no schema for kind {kind!r} in {api_version!r} (Kubernetes "
                    f"{self.kubernetes_version} or {self.schema_dir.name}/): wrong apiVersion or "
                    "kind, or a CRD kind missing from KINDS in scripts/gen_schemas.py",
                )
            ]
        findings: list[Finding] = []
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path))):
            findings.extend(_finding(obj, error))
        return findings
