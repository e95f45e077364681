"""Generate schemas/<group>/<kind>_<version>.json from the CRDs of the pinned platform versions.

Each file is the CRD's own `openAPIV3Schema` (scripts/platform.py says which module version holds
it) turned into a standalone JSON Schema (draft 4, kubeconform's default) with the API server's
rules made explicit, so `scripts.manifests validate` and the real kubeconform judge a custom
resource the way the API server of the pinned controller would:

- strict: an object rejects fields its schema does not list (the API server's strict field
  validation), unless the CRD says `x-kubernetes-preserve-unknown-fields`;
- `metadata` (of the resource and of embedded resources) is Kubernetes' ObjectMeta, strictly;
- `x-kubernetes-int-or-string` is an integer or a string, `type: integer` stays an integer;
- a field that is not required may be null (the API server drops it), like the core schemas;
- `x-kubernetes-list-type: set` items are unique.
What JSON Schema cannot say is left to the API server (server-side dry-run): CEL rules
(`x-kubernetes-validations`), unique keys of `list-type: map` lists, `format`. docs/SCHEMAS.md
has the rules with the versions they were read from.

`--check` regenerates into memory and fails when a committed file differs ("run the generator,
fail on diff"). Run: python -m scripts.gen_schemas [--check].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from scripts import platform

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas"
DRAFT = "http://json-schema.org/draft-04/schema#"

Schema = dict[str, Any]


@dataclass(frozen=True)
class CrdKind:
    """One custom resource kind the manifests use, and the platform component defining it."""

    component: str
    group: str
    version: str
    kind: str

    @property
    def relpath(self) -> str:
        """kubeconform's layout: {{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json."""
        return f"{self.group}/{self.kind.lower()}_{self.version}.json"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def _kinds(component: str, group: str, version: str, *kinds: str) -> tuple[CrdKind, ...]:
    return tuple(CrdKind(component, group, version, kind) for kind in kinds)


KINDS: tuple[CrdKind, ...] = (
    *_kinds(
        "argo-rollouts",
        "argoproj.io",
        "v1alpha1",
        "Rollout",
        "AnalysisTemplate",
        "ClusterAnalysisTemplate",
    ),
    *_kinds("argo-cd", "argoproj.io", "v1alpha1", "Application", "ApplicationSet", "AppProject"),
    *_kinds("argo-workflows", "argoproj.io", "v1alpha1", "WorkflowTemplate", "CronWorkflow"),
    *_kinds(
        "prometheus-operator",
        "monitoring.coreos.com",
        "v1",
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
    ),
    *_kinds("istio", "networking.istio.io", "v1beta1", "VirtualService", "DestinationRule"),
    *_kinds("istio", "networking.istio.io", "v1", "VirtualService", "DestinationRule"),
)
"""Every custom resource kind a manifest here may use; another needs a line here."""


def kind_of(kind: str, api_version: str) -> CrdKind | None:
    """The entry for `kind` in `api_version`, if the repository has a schema for it."""
    for item in KINDS:
        if item.kind == kind and item.api_version == api_version:
            return item
    return None


class SchemaGenError(RuntimeError):
    """A CRD is missing or has a shape the converter does not understand."""


# ---- Kubernetes' ObjectMeta, from the core schemas of the pinned Kubernetes version ------------


def kubernetes_schema_dir(version: str) -> Path:
    """kubernetes-validate's strict schemas of one Kubernetes version (its `$defs` and kinds)."""
    base = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return Path(str(base / f"v{version}-local-strict"))


@lru_cache(maxsize=None)
def _core_definitions(version: str) -> dict[str, Schema]:
    text = (kubernetes_schema_dir(version) / "_definitions.json").read_text(encoding="utf-8")
    definitions: dict[str, Schema] = json.loads(text)["$defs"]
    return definitions


def _inline(node: Any, definitions: dict[str, Schema], seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `$ref` into the definitions replaced by the definition (draft-4 safe)."""
    if isinstance(node, list):
        return [_inline(item, definitions, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise SchemaGenError(f"recursive definition {name} cannot be inlined")
        return _inline(definitions[name], definitions, seen + (name,))
    return {
        key: _inline(value, definitions, seen)
        for key, value in node.items()
        if key != "description" and key != "format" and not key.startswith("x-kubernetes-")
    }


def object_meta(kubernetes_version: str) -> Schema:
    """ObjectMeta of `kubernetes_version`, strict and self-contained."""
    definitions = _core_definitions(kubernetes_version)
    meta: Schema = _inline(
        definitions["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"], definitions
    )
    return meta


# ---- the converter --------------------------------------------------------------------------

# Keywords that mean the same in OpenAPI v3 (CRDs) and JSON Schema draft 4, copied as they are.
_SAME = (
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "uniqueItems",
    "required",
)
# Keywords that only document or drive server-side behaviour; nothing for a validator.
_DROPPED = {
    "description",
    "default",
    "example",
    "externalDocs",
    "format",
    "title",
    "x-kubernetes-map-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-validations",
}
_HANDLED = {
    *_SAME,
    "type",
    "nullable",
    "properties",
    "items",
    "additionalProperties",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
}


@dataclass(frozen=True)
class _Converter:
    meta: Schema
    where: str

    def convert(self, node: Any, path: str, structural: bool = True) -> Schema:
        """One OpenAPI v3 node as JSON Schema. `structural` is false inside anyOf/allOf/oneOf/not,
        where Kubernetes allows only value checks: those branches must not close the object."""
        if not isinstance(node, dict):
            raise SchemaGenError(f"{self.where}: {path} is not a schema object")
        unknown = set(node) - _HANDLED - _DROPPED
        if unknown:
            raise SchemaGenError(f"{self.where}: {path} uses {sorted(unknown)}")
        out: Schema = {key: node[key] for key in _SAME if key in node}
        if node.get("x-kubernetes-list-type") == "set":
            out["uniqueItems"] = True
        if node.get("x-kubernetes-int-or-string"):
            # the CRD usually spells the two types out too; either way: integer or string
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        elif "type" in node:
            out["type"] = node["type"]
        for key in ("anyOf", "allOf", "oneOf"):
            if key in node and not (key == "anyOf" and node.get("x-kubernetes-int-or-string")):
                out[key] = [
                    self.convert(item, f"{path}.{key}[{i}]", structural=False)
                    for i, item in enumerate(node[key])
                ]
        if "not" in node:
            out["not"] = self.convert(node["not"], f"{path}.not", structural=False)
        if "items" in node:
            out["items"] = self.convert(node["items"], f"{path}[]", structural)
        properties = dict(node.get("properties") or {})
        if node.get("x-kubernetes-embedded-resource"):
            properties.setdefault("apiVersion", {"type": "string"})
            properties.setdefault("kind", {"type": "string"})
        if properties or "properties" in node:
            required = set(node.get("required") or ())
            converted = {}
            for name, child in sorted(properties.items()):
                if name == "metadata" and node.get("x-kubernetes-embedded-resource"):
                    converted[name] = self.meta
                    continue
                schema = self.convert(child, f"{path}.{name}", structural)
                converted[name] = schema if name in required else _nullable(schema)
            out["properties"] = converted
        if node.get("x-kubernetes-embedded-resource") and "metadata" not in properties:
            out.setdefault("properties", {})["metadata"] = self.meta
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = self.convert(extra, f"{path}.*", structural)
        elif isinstance(extra, bool):
            out["additionalProperties"] = extra
        elif (
            structural
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and (node.get("type") == "object" or "properties" in out)
        ):
            # the API server's strict field validation rejects what its pruning would drop
            out["additionalProperties"] = False
        if node.get("nullable"):
            out = _nullable(out)
        return out


def _nullable(schema: Schema) -> Schema:
    """`schema`, also accepting null."""
    out = dict(schema)
    kind = out.get("type")
    if isinstance(kind, str):
        out["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        out["type"] = [*kind, "null"]
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if "anyOf" in out and "type" not in out and {"type": "null"} not in out["anyOf"]:
        out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def crd_schema(crd: platform.Component, document: dict[str, Any], version: str) -> Schema:
    """The JSON Schema of one served version of a CRD document."""
    names = document["spec"]["names"]
    where = f"{crd.name} {crd.version} CRD {document['metadata']['name']}"
    for entry in document["spec"].get("versions") or []:
        if entry.get("name") != version:
            continue
        if not entry.get("served", False):
            raise SchemaGenError(f"{where}: version {version} is not served")
        root = ((entry.get("schema") or {}).get("openAPIV3Schema")) or None
        if root is None:
            raise SchemaGenError(f"{where}: version {version} has no openAPIV3Schema")
        converter = _Converter(object_meta(_kubernetes_version()), where)
        schema = converter.convert(root, names["kind"])
        # every object has these, whether the CRD spells them out or not
        properties = schema.setdefault("properties", {})
        properties["apiVersion"] = {"type": "string"}
        properties["kind"] = {"type": "string"}
        properties["metadata"] = converter.meta
        schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind"})
        schema["type"] = "object"
        schema["additionalProperties"] = False
        return schema
    raise SchemaGenError(f"{where}: no version {version}")


def _kubernetes_version() -> str:
    # imported here: scripts.manifests imports this module for KINDS
    from scripts.manifests.schema import KUBERNETES_VERSION

    return KUBERNETES_VERSION


def render_schema(item: CrdKind, schema: Schema, source: str) -> str:
    """The committed text of one schema file: provenance, sorted keys, stable format."""
    doc = {
        "$schema": DRAFT,
        "$comment": f"{item.kind} {item.api_version} generated by scripts/gen_schemas.py from "
        f"{source}; do not edit",
        **schema,
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


CACHE_DIR = ROOT / ".cache" / "schemas"


def inputs_key(kinds: Iterable[CrdKind]) -> str:
    """Digest of everything the output depends on: this converter, the table of scripts/platform.py
    (module versions: a module version's content is fixed, go.sum-verified), the kinds, and the
    Kubernetes core schemas (ObjectMeta) by version."""
    digest = hashlib.sha256()
    for source in (Path(__file__), Path(platform.__file__)):
        digest.update(source.read_bytes())
    digest.update(repr(sorted(kinds, key=lambda k: k.relpath)).encode())
    digest.update(_kubernetes_version().encode())
    digest.update(metadata.version("kubernetes-validate").encode())
    return digest.hexdigest()[:24]


def generate(kinds: Iterable[CrdKind] = KINDS, cache: bool = True) -> dict[str, str]:
    """{relative path: file text} for every kind, from the CRDs of the pinned modules.

    The result is kept in the git-ignored .cache/schemas/ under the digest of its inputs
    (`inputs_key`), so `make manifests` checks schemas/ in a fraction of a second; parsing the
    CRDs (Argo Workflows' full ones are 7 MB of YAML) takes 5-15 s on the build machine.
    """
    wanted = list(kinds)
    cached = CACHE_DIR / f"{inputs_key(wanted)}.json"
    if cache and cached.is_file():
        stored: dict[str, str] = json.loads(cached.read_text(encoding="utf-8"))
        return stored
    out = _generate(wanted)
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".schemas.")
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(out, file)
        os.replace(tmp, cached)
    return out


def _generate(wanted: list[CrdKind]) -> dict[str, str]:
    out: dict[str, str] = {}
    for component in platform.PLATFORM:
        mine = [k for k in wanted if k.component == component.name]
        if not mine:
            continue
        documents = {
            (d["spec"]["group"], d["spec"]["names"]["kind"]): d
            for d in platform.crd_documents(component)
        }
        for item in mine:
            document = documents.get((item.group, item.kind))
            if document is None:
                raise SchemaGenError(
                    f"{component.module}@{component.version} has no CRD for {item.kind} "
                    f"({item.group}) in {', '.join(component.crd_files)}"
                )
            source = (
                f"the CRD {document['metadata']['name']} of {component.name} {component.version}"
                f" ({component.module}) and ObjectMeta of Kubernetes {_kubernetes_version()}"
            )
            out[item.relpath] = render_schema(
                item, crd_schema(component, document, item.version), source
            )
    missing = sorted({k.component for k in wanted} - {c.name for c in platform.PLATFORM})
    if missing:
        raise SchemaGenError(f"no platform component {missing} in scripts/platform.py")
    return out


def stale_files(generated: dict[str, str], schema_dir: Path) -> list[str]:
    """Paths whose committed text differs from the generated one, plus strays nobody generates."""
    stale = [
        rel
        for rel, text in sorted(generated.items())
        if not (schema_dir / rel).is_file() or (schema_dir / rel).read_text() != text
    ]
    committed = {p.relative_to(schema_dir).as_posix() for p in schema_dir.rglob("*.json")}
    stale += sorted(committed - set(generated))
    return stale


def write(generated: dict[str, str], schema_dir: Path) -> None:
    """Write every file and remove the strays (a kind dropped from KINDS)."""
    for rel in stale_files(generated, schema_dir):
        if rel not in generated:
            (schema_dir / rel).unlink()
    for rel, text in generated.items():
        path = schema_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if schemas/ is out of date")
    parser.add_argument("--schema-dir", type=Path, default=SCHEMA_DIR)
    parser.add_argument(
        "--no-cache", action="store_true", help="convert the CRDs even when the inputs are cached"
    )
    args = parser.parse_args(argv)
    try:
        generated = generate(cache=False) if args.no_cache else generate()
    except (SchemaGenError, platform.PlatformError) as exc:
        print(f"gen_schemas: {exc}", file=sys.stderr)
        return 1
    if args.check:
        stale = stale_files(generated, args.schema_dir)
        for rel in stale:
            print(f"gen_schemas: out of date: {args.schema_dir / rel}", file=sys.stderr)
        if stale:
            print("gen_schemas: run `make schemas` and commit", file=sys.stderr)
            return 1
        print(f"gen_schemas: {len(generated)} schema files up to date")
        return 0
    write(generated, args.schema_dir)
    print(f"gen_schemas: wrote {len(generated)} schema files under {args.schema_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
