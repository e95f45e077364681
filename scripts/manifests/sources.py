"""Map a problem in rendered output back to the source file a person has to edit.

kustomize output carries no file names, so this walks the kustomization tree (resources,
components, patches) and picks the document of the same kind whose name the rendered name
contains, preferring files that mention the offending field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.manifests.vocabulary import REPO_ROOT, FastLoader, Obj, path_str

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class SourceDoc:
    path: Path
    kind: str | None
    name: str | None
    text: str


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def _load(path: Path) -> list[Any]:
    try:
        return [d for d in yaml.load_all(path.read_text(), Loader=FastLoader) if d is not None]
    except (OSError, yaml.YAMLError):
        return []


def source_documents(directory: Path, _seen: set[Path] | None = None) -> list[SourceDoc]:
    """Every document a kustomization reads, with the kind/name it describes."""
    seen = _seen if _seen is not None else set()
    directory = directory.resolve()
    if directory in seen:
        return []
    seen.add(directory)
    kfile = kustomization_file(directory)
    if kfile is None:
        return []
    docs: list[SourceDoc] = [SourceDoc(kfile, "Kustomization", None, kfile.read_text())]
    loaded = _load(kfile)
    kust = loaded[0] if loaded and isinstance(loaded[0], dict) else {}
    for key in ("resources", "components", "bases"):
        for entry in kust.get(key) or []:
            if not isinstance(entry, str):
                continue
            child = (directory / entry).resolve()
            if child.is_dir():
                docs += source_documents(child, seen)
            elif child.is_file():
                docs += _documents_of(child, None)
    for patch in kust.get("patches") or []:
        if isinstance(patch, dict) and isinstance(patch.get("path"), str):
            target = patch.get("target") or {}
            docs += _documents_of((directory / patch["path"]).resolve(), target.get("kind"))
    for entry in kust.get("patchesStrategicMerge") or []:
        if isinstance(entry, str):
            docs += _documents_of((directory / entry).resolve(), None)
    return docs


def _documents_of(path: Path, target_kind: str | None) -> list[SourceDoc]:
    if not path.is_file():
        return []
    text = path.read_text()
    out = [SourceDoc(path, None, None, text)]  # the file itself, even when it does not parse
    for doc in _load(path):
        if isinstance(doc, dict):
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            out.append(SourceDoc(path, doc.get("kind"), (meta or {}).get("name"), text))
        else:  # a JSON6902 patch: a list of operations on the patch's target kind
            out.append(SourceDoc(path, target_kind, None, text))
    return out


def locate(
    obj: Obj | None, field: str, docs: list[SourceDoc], target_dir: Path, root: Path = REPO_ROOT
) -> str:
    """Best source file for a finding, relative to the repository root."""
    fallback = kustomization_file(target_dir) or target_dir
    if obj is None or not docs:
        return _rel(fallback, root)
    kind = obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    rendered = str((meta or {}).get("name", ""))
    leaf = re.sub(r"\[\d+\]", "", field.rsplit(".", 1)[-1]) if field else ""
    best: tuple[int, int] = (0, 0)
    best_path: Path = fallback
    for index, doc in enumerate(docs):
        if doc.kind != kind:
            continue
        if doc.name is None:
            score = 1
        elif doc.name == rendered:
            score = 4
        elif doc.name in rendered:
            score = 3
        else:
            continue
        if leaf and re.search(rf"(^|[\s{{,\"']){re.escape(leaf)}\s*:", doc.text, re.M):
            score += 2
        if (score, index) > best:
            best, best_path = (score, index), doc.path
    return _rel(best_path, root)


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (as kubeconform -strict does)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (lines {seen[key]} and {line})",
                key_node.start_mark,
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates  # type: ignore[arg-type]
)


def _key_path(node: yaml.Node, line: int, path: list[str | int]) -> list[str | int] | None:
    """Path to the mapping key written on a 0-based line, searched in a composed node tree."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            here = path + [str(key_node.value)]
            if key_node.start_mark.line == line:
                return here
            found = _key_path(value, line, here)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _key_path(item, line, path + [i])
            if found is not None:
                return found
    return None


def _object_at(text: str, line: int) -> tuple[str, str]:
    """(`Kind/name`, key path) at a 0-based line, parsed leniently; empty strings if unknown."""
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is not None and node.start_mark.line <= line <= node.end_mark.line:
                doc = yaml.safe_load(yaml.serialize(node))
                key = _key_path(node, line, [])
                obj = ""
                if isinstance(doc, dict) and isinstance(doc.get("metadata"), dict):
                    obj = f"{doc.get('kind')}/{doc['metadata'].get('name')}"
                return obj, path_str(key) if key else ""
    except yaml.YAMLError:
        pass
    return "", ""


def yaml_errors(docs: list[SourceDoc]) -> list[tuple[Path, str, str, str]]:
    """(file, object, field, message) for source files that do not parse strictly: syntax errors
    and duplicate keys, which kustomize reports without naming the file."""
    out = []
    for path in sorted({d.path for d in docs}):
        text = path.read_text()
        try:
            list(yaml.load_all(text, Loader=_StrictLoader))  # noqa: S506 (safe loader)
        except yaml.MarkedYAMLError as exc:
            problem = str(exc.problem or exc)
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}" if mark is not None else ""
            obj, field = _object_at(text, mark.line) if mark is not None else ("", "")
            out.append((path, obj, field, f"invalid YAML: {problem}{where}"))
    return out
