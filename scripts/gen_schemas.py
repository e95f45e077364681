"""Generate schemas/<group>/<kind>_<version>.json for the CRDs the manifests use.

The schemas come from the TypeScript models of pinned npm packages (@kubernetes-models/*, pinned in
tools/schemas/package-lock.json), turned into JSON Schema by ts-json-schema-generator with
`additionalProperties: false` on every object, so an unknown field is an error both for
`scripts.manifests validate` and for kubeconform in CI (same folder, kubeconform's layout).

`--check` regenerates into memory and fails when a committed file differs: "run the generator,
fail on diff". Run: python -m scripts.gen_schemas [--check].
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TOOL_DIR = ROOT / "tools" / "schemas"
SCHEMA_DIR = ROOT / "schemas"


@dataclass(frozen=True)
class CrdKind:
    """One CRD kind: where its schema goes and which TypeScript interface describes it."""

    group: str
    version: str
    kind: str
    package: str
    module: str
    interface: str
    # "export": shared types become named definitions; "none": inlined, for packages that give
    # different types one name (Argo Workflows' own HTTPHeader next to Kubernetes' HTTPHeader)
    expose: str = "export"

    @property
    def relpath(self) -> str:
        """kubeconform's layout: {{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json."""
        return f"{self.group}/{self.kind.lower()}_{self.version}.json"

    @property
    def alias(self) -> str:
        return "".join(p.capitalize() for p in self.group.split(".")) + self.version + self.kind


def _kind(group: str, version: str, kind: str, package: str, expose: str = "export") -> CrdKind:
    module = f"@kubernetes-models/{package}/{group}/{version}/{kind}"
    return CrdKind(group, version, kind, package, module, f"I{kind}", expose)


KINDS: tuple[CrdKind, ...] = (
    _kind("argoproj.io", "v1alpha1", "Rollout", "argo-rollouts"),
    _kind("argoproj.io", "v1alpha1", "AnalysisTemplate", "argo-rollouts"),
    _kind("argoproj.io", "v1alpha1", "ClusterAnalysisTemplate", "argo-rollouts"),
    _kind("argoproj.io", "v1alpha1", "Application", "argo-cd"),
    _kind("argoproj.io", "v1alpha1", "ApplicationSet", "argo-cd"),
    _kind("argoproj.io", "v1alpha1", "AppProject", "argo-cd"),
    _kind("argoproj.io", "v1alpha1", "WorkflowTemplate", "argo-workflows", expose="none"),
    _kind("argoproj.io", "v1alpha1", "CronWorkflow", "argo-workflows", expose="none"),
    _kind("monitoring.coreos.com", "v1", "PodMonitor", "prometheus-operator"),
    _kind("monitoring.coreos.com", "v1", "ServiceMonitor", "prometheus-operator"),
    _kind("monitoring.coreos.com", "v1", "PrometheusRule", "prometheus-operator"),
    _kind("networking.istio.io", "v1beta1", "VirtualService", "istio"),
    _kind("networking.istio.io", "v1beta1", "DestinationRule", "istio"),
    _kind("networking.istio.io", "v1", "VirtualService", "istio"),
    _kind("networking.istio.io", "v1", "DestinationRule", "istio"),
)


def package_versions(tool_dir: Path) -> dict[str, str]:
    """Exact versions of the @kubernetes-models packages, read from the lock file."""
    lock = json.loads((tool_dir / "package-lock.json").read_text())
    prefix = "node_modules/@kubernetes-models/"
    return {
        name[len(prefix) :]: str(meta["version"])
        for name, meta in lock["packages"].items()
        if name.startswith(prefix) and "/node_modules/" not in name[len(prefix) :]
    }


def ensure_node_modules(tool_dir: Path) -> None:
    """`npm ci` when node_modules is missing or older than the lock file (idempotent)."""
    lock_hash = hashlib.sha256((tool_dir / "package-lock.json").read_bytes()).hexdigest()
    stamp = tool_dir / "node_modules" / ".lock-sha256"
    if stamp.is_file() and stamp.read_text().strip() == lock_hash:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to generate schemas (Node 20+ with npm)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=tool_dir,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stamp.write_text(lock_hash + "\n")


def open_free_form(node: Any) -> Any:
    """Let field-less object types hold anything.

    The models declare free-form fields (RawExtension such as Helm `valuesObject`, FieldsV1, JSON;
    `x-kubernetes-preserve-unknown-fields` in the CRDs) as empty interfaces, which the generator
    turns into "an object with no allowed field". Every other object keeps
    `additionalProperties: false`.
    """
    if isinstance(node, list):
        return [open_free_form(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: open_free_form(value) for key, value in node.items()}
    if (
        out.get("type") == "object"
        and out.get("additionalProperties") is False
        and not out.get("properties")
        and not out.get("patternProperties")
    ):
        del out["additionalProperties"]
    return out


def render_schema(crd: CrdKind, schema: dict[str, Any], versions: dict[str, str]) -> str:
    """The committed text of one schema file: a provenance comment, sorted keys, stable format."""
    source = f"@kubernetes-models/{crd.package}@{versions.get(crd.package, '?')}"
    doc = {
        "$comment": f"{crd.kind} {crd.group}/{crd.version} generated by scripts/gen_schemas.py "
        f"from {source} ({crd.interface}); do not edit",
        **open_free_form(schema),
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def generate(tool_dir: Path = TOOL_DIR) -> dict[str, str]:
    """Run the pinned generator and return {relative path: file text} for every kind."""
    ensure_node_modules(tool_dir)
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is required to generate schemas")
    wanted = [
        {"module": k.module, "type": k.interface, "alias": k.alias, "expose": k.expose}
        for k in KINDS
    ]
    proc = subprocess.run(
        [node, str(tool_dir / "generate.mjs")],
        input=json.dumps(wanted),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"schema generator failed:\n{proc.stderr.strip()}")
    schemas: dict[str, dict[str, Any]] = json.loads(proc.stdout)
    versions = package_versions(tool_dir)
    return {k.relpath: render_schema(k, schemas[k.alias], versions) for k in KINDS}


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
    for rel, text in generated.items():
        path = schema_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if schemas/ is out of date")
    parser.add_argument("--schema-dir", type=Path, default=SCHEMA_DIR)
    args = parser.parse_args(argv)
    generated = generate()
    if args.check:
        stale = stale_files(generated, args.schema_dir)
        for rel in stale:
            print(f"gen_schemas: out of date: {args.schema_dir / rel}", file=sys.stderr)
        if stale:
            print("gen_schemas: run `python -m scripts.gen_schemas` and commit", file=sys.stderr)
            return 1
        print(f"gen_schemas: {len(generated)} schema files up to date")
        return 0
    write(generated, args.schema_dir)
    print(f"gen_schemas: wrote {len(generated)} schema files under {args.schema_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
