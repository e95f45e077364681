"""Shared vocabulary of the manifests tool: what a problem is and where it was found."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
"""One Kubernetes object as parsed from YAML."""

REPO_ROOT = Path(__file__).resolve().parents[2]

FastLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader when PyYAML has it (the same documents, several times faster: the
sources of one overlay are ~100 files, a rendered overlay ~40 objects)."""


@dataclass(frozen=True)
class Finding:
    """A problem inside one rendered object (or in the target as a whole when obj is None)."""

    check: str
    obj: Obj | None
    field: str
    message: str


@dataclass(frozen=True)
class Problem:
    """A finding placed in the repository: the file to edit, the object and the field."""

    check: str
    target: str
    file: str
    obj: str
    field: str
    message: str

    def __str__(self) -> str:
        parts = [self.file or self.target, self.obj or "-", self.field or "-", self.message]
        return ": ".join(parts)

    def as_dict(self) -> dict[str, str]:
        return {
            "check": self.check,
            "target": self.target,
            "file": self.file,
            "object": self.obj,
            "field": self.field,
            "message": self.message,
        }


@dataclass
class TargetResult:
    """One render target (a kustomization directory) after rendering and validation."""

    target: str
    objects: list[Obj] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    render_seconds: float = 0.0
    validate_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def object_id(obj: Obj | None) -> str:
    """`Kind/name` (with the namespace when set): how messages name an object."""
    if obj is None:
        return ""
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?") if isinstance(meta, dict) else "?"
    ns = meta.get("namespace") if isinstance(meta, dict) else None
    kind = obj.get("kind", "?")
    return f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}"


def path_str(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """JSON path parts as `spec.containers[0].image`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
