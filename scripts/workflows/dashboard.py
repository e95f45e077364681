"""The Grafana dashboard of a served model, as data: serving health, canary vs stable, what the
model predicts, input drift and retraining, resources.

Generated (not hand-edited JSON) so every query sits in one readable list that the tests check
against the metrics the service and the drift job really export; `make workflows` writes it
into a ConfigMap the Grafana sidecar loads.
"""

from __future__ import annotations

import json
import re
from typing import Any

UID_PREFIX = "mlops-"
GRAFANA_UID_MAX = 40  # Grafana refuses longer dashboard uids
SEL = 'namespace="$namespace", app="$app"'
RES = 'namespace="$namespace", container="model-server"'

Target = tuple[str, str]  # (PromQL, legend)


def _rate(metric: str, window: str = "5m", extra: str = "") -> str:
    return f"rate({metric}{{{SEL}{extra}}}[{window}])"


def _quantile(q: float, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    bucket = _rate("inference_request_duration_seconds_bucket")
    return f"histogram_quantile({q}, sum by ({group}) ({bucket}))"


def _mean(metric: str, by: str = "", window: str = "15m") -> str:
    group = f" by ({by})" if by else ""
    total, count = _rate(metric + "_sum", window), _rate(metric + "_count", window)
    return f"sum{group} ({total}) / sum{group} ({count})"


# (title, unit, kind, targets); kind: timeseries | stat | table
ROWS: list[tuple[str, list[tuple[str, str, str, list[Target]]]]] = [
    (
        "Serving",
        [
            (
                "Throughput by endpoint",
                "reqps",
                "timeseries",
                [(f"sum by (endpoint) ({_rate('inference_requests_total')})", "{{endpoint}}")],
            ),
            (
                "Error rate",
                "percentunit",
                "timeseries",
                [
                    (
                        f"1 - sum({_rate('inference_successes_total')})"
                        f" / sum({_rate('inference_requests_total')})",
                        "errors",
                    )
                ],
            ),
            (
                "Latency p50 / p95 / p99",
                "s",
                "timeseries",
                [(_quantile(q), f"p{round(q * 100)}") for q in (0.5, 0.95, 0.99)],
            ),
            (
                "Model version serving",
                "none",
                "table",
                [
                    (
                        "max by (model_name, model_version, git_commit)"
                        f" (inference_model_info{{{SEL}}})",
                        "",
                    )
                ],
            ),
        ],
    ),
    (
        "Canary vs stable (by pod-template hash)",
        [
            (
                "Success rate",
                "percentunit",
                "timeseries",
                [
                    (
                        "sum by (rollouts_pod_template_hash)"
                        f" ({_rate('inference_successes_total')})"
                        " / sum by (rollouts_pod_template_hash)"
                        f" ({_rate('inference_requests_total')})",
                        "{{rollouts_pod_template_hash}}",
                    )
                ],
            ),
            (
                "Latency p99",
                "s",
                "timeseries",
                [(_quantile(0.99, "rollouts_pod_template_hash"), "{{rollouts_pod_template_hash}}")],
            ),
            (
                "Mean confidence",
                "percentunit",
                "timeseries",
                [
                    (
                        _mean("inference_prediction_confidence", "rollouts_pod_template_hash"),
                        "{{rollouts_pod_template_hash}}",
                    )
                ],
            ),
            (
                "Hot reloads (1h)",
                "none",
                "timeseries",
                [
                    (
                        f"sum by (outcome) (increase(inference_model_reloads_total{{{SEL}}}[1h]))",
                        "{{outcome}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Predictions and inputs",
        [
            (
                "Predicted-class distribution",
                "percentunit",
                "timeseries",
                [
                    (
                        f"sum by (predicted_class) ({_rate('inference_predictions_total', '15m')})"
                        f" / scalar(sum({_rate('inference_predictions_total', '15m')}))",
                        "{{predicted_class}}",
                    )
                ],
            ),
            (
                "Confidence (mean, 15m)",
                "percentunit",
                "timeseries",
                [(_mean("inference_prediction_confidence"), "mean top-class probability")],
            ),
            (
                "Input scaled mean (15m)",
                "percentunit",
                "timeseries",
                [(_mean("inference_input_scaled_mean"), "mean of inputs scaled by their ranges")],
            ),
        ],
    ),
    (
        "Drift and retraining (drift-monitor CronJob)",
        [
            (
                "Drift score by feature group",
                "none",
                "timeseries",
                [
                    (
                        "max by (feature_group) (drift_feature_group_score"
                        f'{{{SEL}, statistic="wasserstein"}})',
                        "{{feature_group}}",
                    ),
                    (f'max(drift_threshold{{{SEL}, kind="feature"}})', "threshold"),
                ],
            ),
            (
                "Share of drifted features",
                "percentunit",
                "timeseries",
                [
                    (f"max(drift_drifted_features_share{{{SEL}}})", "drifted share"),
                    (f'max(drift_threshold{{{SEL}, kind="drifted_share"}})', "threshold"),
                ],
            ),
            (
                "Prediction shift (Jensen-Shannon)",
                "none",
                "timeseries",
                [
                    (f"max(drift_prediction_shift{{{SEL}}})", "shift"),
                    (f'max(drift_threshold{{{SEL}, kind="prediction"}})', "threshold"),
                ],
            ),
            (
                "Drift detected",
                "bool_yes_no",
                "stat",
                [(f"max by (signal) (drift_detected{{{SEL}}})", "{{signal}}")],
            ),
            (
                "Live rows compared / out of range",
                "none",
                "stat",
                [
                    (f"max(drift_live_rows{{{SEL}}})", "rows"),
                    (f"max(drift_input_out_of_range_share{{{SEL}}})", "out-of-range share"),
                ],
            ),
            (
                "Since the last drift run",
                "s",
                "stat",
                [(f"time() - max(drift_last_run_timestamp_seconds{{{SEL}}})", "age")],
            ),
            (
                "Retraining",
                "s",
                "stat",
                [
                    (
                        f"time() - max(retrain_last_triggered_timestamp_seconds{{{SEL}}} > 0)",
                        "since the last trigger",
                    ),
                    (f"max(retrain_cooldown_remaining_seconds{{{SEL}}})", "cool-down left"),
                ],
            ),
        ],
    ),
    (
        "Resources",
        [
            (
                "CPU by pod",
                "none",
                "timeseries",
                [
                    (
                        f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{RES}}}[5m]))",
                        "{{pod}}",
                    )
                ],
            ),
            (
                "Memory by pod",
                "bytes",
                "timeseries",
                [
                    (f"sum by (pod) (container_memory_working_set_bytes{{{RES}}})", "{{pod}} ws"),
                    (f"sum by (pod) (process_resident_memory_bytes{{{SEL}}})", "{{pod}} rss"),
                ],
            ),
            (
                "In-flight requests",
                "none",
                "timeseries",
                [(f"sum by (pod) (inference_requests_in_flight{{{SEL}}})", "{{pod}}")],
            ),
        ],
    ),
]

VARIABLES = [
    ("namespace", "label_values(inference_model_info, namespace)"),
    ("app", 'label_values(inference_model_info{namespace="$namespace"}, app)'),
]


def _panel(
    panel_id: int, title: str, unit: str, kind: str, targets: list[Target], x: int, y: int
) -> dict[str, Any]:
    panel: dict[str, Any] = {
        "id": panel_id,
        "title": title,
        "type": kind,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                **({"format": "table", "instant": True} if kind == "table" else {}),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    return panel


def dashboard_uid(app: str) -> str:
    """One uid per app: Grafana keys dashboards by uid, so two apps sharing one would overwrite
    each other wherever one Grafana loads both."""
    uid = f"{UID_PREFIX}{app}"
    if len(uid) > GRAFANA_UID_MAX:
        raise ValueError(
            f"app name {app!r} makes a dashboard uid over {GRAFANA_UID_MAX} characters"
        )
    return uid


def dashboard(app: str) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y, panel_id = 0, 1
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y = panel_id + 1, y + 1
        for i, (title, unit, kind, targets) in enumerate(row_panels):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(_panel(panel_id, title, unit, kind, targets, x, y))
            panel_id += 1
        y += 8
    templating = [
        {
            "name": "datasource",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }
    ] + [
        {
            "name": name,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name},
            "refresh": 2,
            "current": {},
            "hide": 0,
        }
        for name, query in VARIABLES
    ]
    # the app variable opens on this dashboard's own app
    templating[-1]["current"] = {"text": app, "value": app}
    return {
        "uid": dashboard_uid(app),
        "title": f"{app}: serving, canary, drift, retraining",
        "tags": ["mlops", "model-service"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {"list": templating},
        "panels": panels,
    }


def queries(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a dashboard's panels."""
    return [t["expr"] for p in document["panels"] for t in p.get("targets", [])]


def variable_metrics(document: dict[str, Any]) -> set[str]:
    """Metrics the template variables read (Grafana's `label_values(metric{...}, label)`)."""
    names = set()
    for variable in document["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            match = re.match(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", str(query["query"]))
            if match:
                names.add(match.group(1))
    return names


def dashboard_json(app: str) -> str:
    return json.dumps(dashboard(app), indent=1, sort_keys=True) + "\n"
