"""The drift job's report: one JSON document (machines, the trigger) and one self-contained HTML
page (people: no scripts, no external assets, so it opens from a CI artifact or a PVC as is)."""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ml.io import write_json, write_text

REPORT_VERSION = 1


def build_report(
    drift: dict[str, Any],
    live: dict[str, Any],
    reference: dict[str, Any],
    decision: dict[str, Any] | None,
    generated_at: float,
) -> dict[str, Any]:
    return {
        "version": REPORT_VERSION,
        "generated_at": datetime.fromtimestamp(generated_at, timezone.utc).isoformat(
            timespec="seconds"
        ),
        "drift": drift,
        "live": live,
        "reference": reference,
        "retrain": decision,
    }


def write_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path, html_path = out_dir / "drift.json", out_dir / "drift.html"
    write_json(json_path, report)
    write_text(html_path, render_html(report))
    return json_path, html_path


def _color(score: float, threshold: float) -> str:
    """White at 0, amber at the threshold, red at twice the threshold and beyond."""
    t = max(0.0, min(1.0, score / (2 * threshold))) if threshold > 0 else 1.0
    red, green = (255, int(255 - 100 * t * 2)) if t <= 0.5 else (255, int(155 * (2 - 2 * t)))
    blue = int(255 * (1 - min(1.0, 2 * t)))
    return f"rgb({red},{green},{blue})"


def _heatmap(features: list[dict[str, Any]], statistic: str, threshold: float) -> str:
    side = math.isqrt(len(features))
    columns = side if side * side == len(features) and side > 0 else min(16, len(features) or 1)
    cells = []
    for feature in features:
        score = float(feature[statistic])
        mark = " drifted" if feature["drifted"] else ""
        cells.append(
            f'<td class="cell{mark}" style="background:{_color(score, threshold)}" '
            f'title="feature {feature["index"]}: {statistic} {score:.3f}">{score:.2f}</td>'
        )
    rows = [
        "<tr>" + "".join(cells[i : i + columns]) + "</tr>" for i in range(0, len(cells), columns)
    ]
    return '<table class="heat">' + "".join(rows) + "</table>"


def _classes(drift: dict[str, Any]) -> str:
    reference = drift["classes"]["reference"]
    live = drift["classes"]["live"]
    if not reference or not live:
        return "<p>No predicted classes in the live sample: prediction shift not measured.</p>"
    rows = []
    for label, (ref, cur) in enumerate(zip(reference, live)):
        rows.append(
            f"<tr><td>{label}</td>"
            f'<td><span class="bar ref" style="width:{300 * ref:.0f}px"></span> {ref:.3f}</td>'
            f'<td><span class="bar live" style="width:{300 * cur:.0f}px"></span> {cur:.3f}</td>'
            "</tr>"
        )
    return (
        "<table><tr><th>class</th><th>training labels</th><th>live predictions</th></tr>"
        + "".join(rows)
        + "</table>"
    )


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.verdict{padding:.6em 1em;border-radius:4px;font-weight:600}
.yes{background:#fdd;border:1px solid #c33}.no{background:#dfd;border:1px solid #393}
.unknown{background:#eee;border:1px solid #999}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .6em;border:1px solid #ccc}
.heat td{width:3.2em;text-align:center;font-size:.8em}.heat td.drifted{font-weight:700}
.bar{display:inline-block;height:.8em}.ref{background:#79a}.live{background:#d84}
"""


def render_html(report: dict[str, Any]) -> str:
    drift = report["drift"]
    params = drift["params"]
    statistic, threshold = params["statistic"], float(params["threshold"])
    if not drift["sufficient_data"]:
        verdict, css = (
            f"No verdict: {drift['live_rows']} live rows < {params['min_live_rows']}",
            "unknown",
        )
    elif drift["detected"]:
        fired = ", ".join(k for k, v in drift["signals"].items() if v)
        verdict, css = f"Drift detected ({fired})", "yes"
    else:
        verdict, css = "No drift", "no"
    shift = drift["prediction_shift"]
    summary = [
        ("live rows compared", drift["live_rows"]),
        ("rows the live sample represents", report["live"].get("seen")),
        ("reference rows", report["reference"].get("rows")),
        (
            f"features with {statistic} > {threshold}",
            f"{drift['drifted_share']:.1%} (drift at >= {params['drifted_share']:.0%})",
        ),
        (
            "prediction shift (Jensen-Shannon)",
            (
                "n/a"
                if shift is None
                else f"{shift:.3f} (drift above {params['prediction_threshold']})"
            ),
        ),
        ("rows outside the valid range", f"{drift['out_of_range_share']:.1%}"),
        ("rows with NaN/inf (dropped)", drift["non_finite_rows"]),
        ("model versions serving", ", ".join(report["live"].get("model_versions") or []) or "-"),
    ]
    groups = "".join(
        f"<tr><td>{html.escape(g['name'])}</td><td>{g['wasserstein']:.3f}</td>"
        f"<td>{g['psi']:.3f}</td><td>{g['drifted_share']:.0%}</td></tr>"
        for g in drift["groups"]
    )
    decision = report.get("retrain")
    retrain = (
        "<p>Trigger not evaluated.</p>"
        if decision is None
        else f"<p><b>{html.escape(decision['action'])}</b>: {html.escape(decision['why'])}</p>"
    )
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report {report['generated_at']}</title>
<style>{_STYLE}</style></head><body>
<h1>Input drift report</h1>
<p>Generated {html.escape(report['generated_at'])}; reference: {html.escape(
        str(report['reference'].get('source', '')))}.</p>
<p class="verdict {css}">{html.escape(verdict)}</p>
<table>{rows}</table>
<h2>Per-feature {html.escape(statistic)} (threshold {threshold})</h2>
{_heatmap(drift['features'], statistic, threshold)}
<h2>Feature groups</h2>
<table><tr><th>group</th><th>wasserstein (normed)</th><th>PSI</th><th>drifted</th></tr>{groups}
</table>
<h2>Predicted classes</h2>
{_classes(drift)}
<h2>Retraining</h2>
{retrain}
</body></html>
"""
