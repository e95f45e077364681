"""Results as a readable table, JSON (for the merge-request report) and JUnit (for CI)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

from scripts import engines
from scripts.manifests.vocabulary import TargetResult


def kubeconform_version() -> str:
    return engines.engine_of("kubeconform").version()


def table(
    results: list[TargetResult], metrics_source: str, kubeconform_seconds: float | None = None
) -> str:
    rows = [("target", "objects", "render s", "validate s", "problems")]
    for r in results:
        rows.append(
            (
                r.target,
                str(len(r.objects)),
                f"{r.render_seconds:.2f}",
                f"{r.validate_seconds:.2f}",
                str(len(r.problems)) if r.problems else "ok",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    problems = [p for r in results for p in r.problems]
    if problems:
        lines.append("")
        lines.append(f"{len(problems)} problem(s):")
        lines += [f"  [{p.check}] {p}" for p in problems]
    lines.append("")
    lines.append(f"metrics checked against: {metrics_source}")
    if kubeconform_seconds is not None:
        objects = sum(len(r.objects) for r in results)
        lines.append(
            f"kubeconform {kubeconform_version()} -strict, pinned schemas: {objects} objects "
            f"in {kubeconform_seconds:.2f} s"
        )
    total = sum(r.render_seconds + r.validate_seconds for r in results)
    verdict = "FAILED" if problems else "OK"
    lines.append(f"{verdict}: {len(results)} target(s), {total:.2f} s render+validate")
    return "\n".join(lines)


def as_json(results: list[TargetResult], metrics_source: str) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in results),
        "metrics_source": metrics_source,
        "targets": [
            {
                "target": r.target,
                "objects": len(r.objects),
                "render_seconds": round(r.render_seconds, 4),
                "validate_seconds": round(r.validate_seconds, 4),
                "problems": [p.as_dict() for p in r.problems],
            }
            for r in results
        ],
    }


CHECKS = (
    "render",
    "schema",
    "kubeconform",
    "schema-agreement",
    "policy",
    "reference",
    "image",
    "argocd",
    "platform",
    "network",
    "istio",
    "analysis",
    "metrics",
    "alerts",
)


def junit(results: list[TargetResult], checks: tuple[str, ...] = CHECKS) -> str:
    """One testsuite per target, one testcase per check kind, a failure listing its problems."""
    suites = ET.Element("testsuites", name="manifests")
    for r in results:
        by_check: dict[str, list[str]] = defaultdict(list)
        for p in r.problems:
            by_check[p.check].append(str(p))
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=r.target,
            tests=str(len(checks)),
            failures=str(len(by_check)),
            time=f"{r.render_seconds + r.validate_seconds:.3f}",
        )
        for check in checks:
            case = ET.SubElement(suite, "testcase", classname=r.target, name=check)
            if by_check.get(check):
                failure = ET.SubElement(
                    case, "failure", message=f"{len(by_check[check])} problem(s)"
                )
                failure.text = "\n".join(by_check[check])
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
