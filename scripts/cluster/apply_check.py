"""Every rendered target applied to the real API server: server-side dry-run, then for real.

`make manifests` validates against schemas; this asks the API server itself, with its
admission chain, defaulting, CRD structural schemas and CEL rules at the pinned versions.
Each object is applied on its own (server-side apply, Argo CD's field manager), so one refusal
does not hide the next, and a refusal names the target, the object, the source file a person
edits (scripts/manifests/sources) and the API server's own words, which name the field.
Namespaces the targets use are created first, as Argo CD's CreateNamespace=true does; objects
applied for real are deleted again unless --keep, the namespaces are not: both clusters/ targets
use `argocd`, whose Applications carry finalizers that nothing here removes (a deleted namespace
would stay Terminating and refuse the next target), so a checked cluster keeps empty namespaces.

    python -m scripts.cluster.apply_check [TARGET ...] [--dry-run-only] [--keep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.cluster.control_plane import REPO_ROOT, Layout, State
from scripts.engines import program_path
from scripts.manifests.render import RenderError, discover_targets, render_overlay
from scripts.manifests.sources import locate, source_documents

FIELD_MANAGER = "argocd-controller"


@dataclass(frozen=True)
class Refusal:
    target: str
    obj: str
    source: str
    mode: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.obj} ({self.target}, {self.mode}): {self.message}"


def _kubectl(
    layout: Layout, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(program_path("kubectl")), f"--kubeconfig={layout.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )


def _apply(
    layout: Layout, objects: list[dict[str, Any]], mode: str
) -> subprocess.CompletedProcess[str]:
    return _kubectl(
        layout,
        "apply",
        "--server-side",
        "--force-conflicts",  # as Argo CD's server-side sync does
        f"--field-manager={FIELD_MANAGER}",
        f"--dry-run={mode}",
        "-f",
        "-",
        stdin="\n---\n".join(json.dumps(o) for o in objects),
    )


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


def _message(stderr: str) -> str:
    text = stderr.strip().replace("\n", " ")
    return text.split("Error from server", 1)[-1].lstrip(" :(")[:600] if text else "refused"


def check_target(layout: Layout, target: Path, dry_run_only: bool, keep: bool) -> list[Refusal]:
    relative = (
        str(target.relative_to(REPO_ROOT)) if target.is_relative_to(REPO_ROOT) else str(target)
    )
    try:
        objects = render_overlay(target)
    except RenderError as exc:
        return [Refusal(relative, "(render)", relative, "render", str(exc))]
    docs = source_documents(target)
    namespaces = sorted(
        {o["metadata"]["namespace"] for o in objects if o.get("metadata", {}).get("namespace")}
    )
    for namespace in namespaces:
        _kubectl(layout, "create", "namespace", namespace)
    refusals: list[Refusal] = []
    # CRDs and Namespaces first, as Argo CD orders its sync (kinds a later object may need)
    ordered = sorted(
        objects, key=lambda o: o.get("kind") not in ("CustomResourceDefinition", "Namespace")
    )
    modes = ["server"] if dry_run_only else ["server", "none"]
    for mode in modes:
        # the whole target in one call; only a refusal is worth one call per object, which
        # names every refused object instead of the first
        if _apply(layout, ordered, mode).returncode == 0:
            continue
        for obj in ordered:
            result = _apply(layout, [obj], mode)
            if result.returncode != 0:
                message = _message(result.stderr)
                field = message.split(":", 1)[0] if ":" in message else ""
                refusals.append(
                    Refusal(
                        relative,
                        _name(obj),
                        locate(obj, field, docs, target),
                        f"dry-run={mode}",
                        message,
                    )
                )
        if refusals:
            break  # no real apply of a target the dry run refused
    if not dry_run_only and not keep:
        text = "\n---\n".join(json.dumps(o) for o in objects)
        _kubectl(layout, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=text)
    return refusals


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster.apply_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("targets", nargs="*", type=Path)
    parser.add_argument("--dry-run-only", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave what was applied")
    args = parser.parse_args(argv)
    layout = Layout.default()
    state = State.read(layout)
    if state is None or not state.running():
        print(
            "apply-check: the local cluster is not up: run `make cluster-up` first", file=sys.stderr
        )
        return 2
    targets = [t.resolve() for t in args.targets] or discover_targets()
    failed = 0
    for target in targets:
        refusals = check_target(layout, target, args.dry_run_only, args.keep)
        label = target.relative_to(REPO_ROOT) if target.is_relative_to(REPO_ROOT) else target
        print(f"{'ok ' if not refusals else 'REFUSED'} {label}")
        for refusal in refusals:
            print(f"  {refusal}")
        failed += bool(refusals)
    print(f"apply-check: {len(targets) - failed}/{len(targets)} targets accepted by the API server")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
