"""Render, validate and diff the desired state (apps/, rollouts/, clusters/).

Commands (`python -m scripts.manifests ...`, `make manifests` runs validate):
  render [TARGET...] [-o DIR]      rendered YAML of overlays/clusters (pykustomize)
  validate [TARGET...]             strict schemas, pod policy, cross-references, analysis specs,
                                   metric names vs the live service, promtool, network and
                                   platform rules (docs/PLATFORM.md), then the real kubeconform
                                   (docs/SCHEMAS.md); a table, plus --json/--junit files
  kubeconform [TARGET...]          only the real kubeconform (make kubeconform)
  diff REF_A REF_B                 rendered differences per target between two git refs
  bench                            per-target render+validate times (make bench-manifests)

Library use (the canary rehearsal reads what Argo CD would apply, not the source files):
  render_overlay(path) -> list[dict]           every object of one kustomization, rendered
  analysis_refs(rollout) -> list[AnalysisRef]  the Rollout's analysis steps (templates, args)
  resolve_static_args(rollout, args)           arg values known before a run (thresholds,
                                               namespace); pod-template hashes stay None
"""

from scripts.manifests.analysis import AnalysisRef, analysis_refs, resolve_static_args
from scripts.manifests.render import (
    RenderError,
    discover_targets,
    render_overlay,
    render_with_kubectl,
)

__all__ = [
    "AnalysisRef",
    "RenderError",
    "analysis_refs",
    "discover_targets",
    "render_overlay",
    "render_with_kubectl",
    "resolve_static_args",
]
