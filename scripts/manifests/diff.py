"""Rendered-manifest differences per target between two git refs: what a merge request changes
in what Argo CD would apply (for the merge-request report)."""

from __future__ import annotations

import difflib
import io
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from scripts.manifests.vocabulary import REPO_ROOT, Obj
from scripts.manifests.render import RenderError, discover_targets, render_overlay

DESIRED_STATE = ("apps", "rollouts", "clusters")
_HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


@dataclass
class TargetDiff:
    target: str
    status: str  # added | removed | changed | unchanged | error
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    patch: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "status": self.status,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "patch": self.patch,
        }


def export_tree(ref: str, dest: Path, root: Path = REPO_ROOT) -> None:
    """Write the desired-state folders of a git ref into dest (no checkout, no worktree)."""
    listed = subprocess.run(
        ["git", "ls-tree", "--name-only", ref],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    paths = [p for p in DESIRED_STATE if p in listed]
    if not paths:
        return
    data = subprocess.run(
        ["git", "archive", "--format=tar", ref, *paths], cwd=root, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


def object_key(obj: Obj) -> str:
    """Kind/namespace/name, with generated-name hash suffixes dropped so a changed ConfigMap
    shows as changed rather than as removed + added."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    if obj.get("kind") in ("ConfigMap", "Secret"):
        name = _HASH_SUFFIX.sub("", name)
    return f"{obj.get('kind')}/{meta.get('namespace') or '-'}/{name}"


def render_tree(tree: Path) -> dict[str, list[Obj] | str]:
    """Every target of a tree: its objects, or kustomize's error text."""
    out: dict[str, list[Obj] | str] = {}
    for target in discover_targets(tree):
        rel = target.relative_to(tree).as_posix()
        try:
            out[rel] = render_overlay(target)
        except RenderError as exc:
            out[rel] = f"render error: {exc}"
    return out


def _text(objects: list[Obj] | str) -> list[str]:
    if isinstance(objects, str):
        return [objects + "\n"]
    docs = sorted(objects, key=object_key)
    return yaml.safe_dump_all(docs, sort_keys=True).splitlines(keepends=True)


def diff_renders(
    before: dict[str, list[Obj] | str], after: dict[str, list[Obj] | str]
) -> list[TargetDiff]:
    diffs = []
    for target in sorted(set(before) | set(after)):
        a, b = before.get(target), after.get(target)
        patch = "".join(
            difflib.unified_diff(
                _text(a) if a is not None else [],
                _text(b) if b is not None else [],
                f"a/{target}",
                f"b/{target}",
            )
        )
        if a is None or b is None:
            status = "added" if a is None else "removed"
        elif isinstance(a, str) or isinstance(b, str):
            status = "error" if isinstance(b, str) else "changed"
        else:
            status = "changed" if patch else "unchanged"
        d = TargetDiff(target, status, patch=patch)
        if isinstance(a, list) or isinstance(b, list):
            ka = {object_key(o): o for o in a} if isinstance(a, list) else {}
            kb = {object_key(o): o for o in b} if isinstance(b, list) else {}
            d.added = sorted(set(kb) - set(ka))
            d.removed = sorted(set(ka) - set(kb))
            d.changed = sorted(k for k in set(ka) & set(kb) if ka[k] != kb[k])
        diffs.append(d)
    return diffs


def diff_refs(ref_a: str, ref_b: str, root: Path = REPO_ROOT) -> list[TargetDiff]:
    with tempfile.TemporaryDirectory(prefix="manifests-diff-") as tmp:
        trees = []
        for i, ref in enumerate((ref_a, ref_b)):
            tree = Path(tmp) / str(i)
            tree.mkdir()
            export_tree(ref, tree, root)
            trees.append(render_tree(tree))
    return diff_renders(trees[0], trees[1])


def diff_table(diffs: list[TargetDiff]) -> str:
    rows = [("target", "status", "+obj", "-obj", "~obj")]
    rows += [
        (d.target, d.status, str(len(d.added)), str(len(d.removed)), str(len(d.changed)))
        for d in diffs
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for d in diffs:
        for label, keys in (("+", d.added), ("-", d.removed), ("~", d.changed)):
            lines += [f"  {label} {d.target}: {k}" for k in keys]
    return "\n".join(lines)
