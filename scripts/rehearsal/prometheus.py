"""Prometheus as Argo Rollouts' provider sees it: the `result` shapes, and instant queries sent the
way Argo's client (prometheus/client_golang) sends them.

`result_from_data` is pure (the analysis tests feed it canned answers); `PrometheusClient` is the
HTTP side, used by the orchestrator against a real Prometheus.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping

import httpx

from scripts.rehearsal.expr import Value


class ProviderError(Exception):
    """The provider could not produce a result (HTTP, PromQL, timeout, shape): measurement Error."""


@dataclass(frozen=True)
class PrometheusQuery:
    """One resolved `provider.prometheus` block, as the run hands it to the query function."""

    address: str
    query: str
    timeout_seconds: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    insecure: bool = False


# The query function returns Prometheus' `data` object ({"resultType": ..., "result": ...}) and
# raises ProviderError on any failure. Tests inject canned answers; the orchestrator injects HTTP.
QueryFunction = Callable[[PrometheusQuery], Mapping[str, Any]]


def go_float(value: float) -> str:
    """Format like Go's strconv.FormatFloat(v, 'f', -1, 64), which Argo uses for `value`."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _sample_value(raw: Any) -> float:
    # The HTTP API encodes sample values as strings ("NaN", "+Inf", "0.5").
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ProviderError(f"sample value {raw!r} is not a number") from None


def _list_text(values: list[Value]) -> str:
    return "[" + ",".join(go_float(v) for v in values if isinstance(v, float)) + "]"


def result_from_data(data: Mapping[str, Any]) -> tuple[Value, str]:
    """Map a query answer to (`result` for the conditions, the measurement's `value` text).

    scalar -> float; vector -> list of floats in response order (empty vector -> [], so
    `result[0]` raises and the measurement is Error, not Failed); matrix -> all samples flattened;
    string or anything else -> ProviderError (Argo: "metric type not supported").
    """
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        if not isinstance(result, list) or len(result) != 2:
            raise ProviderError(f"malformed scalar result: {result!r}")
        value = _sample_value(result[1])
        return value, go_float(value)
    if result_type == "vector":
        if not isinstance(result, list):
            raise ProviderError(f"malformed vector result: {result!r}")
        values: list[Value] = []
        for series in result:
            sample = series.get("value") if isinstance(series, dict) else None
            if not isinstance(sample, list) or len(sample) != 2:
                raise ProviderError(f"malformed vector sample: {series!r}")
            values.append(_sample_value(sample[1]))
        return values, _list_text(values)
    if result_type == "matrix":
        if not isinstance(result, list):
            raise ProviderError(f"malformed matrix result: {result!r}")
        flat: list[Value] = []
        for series in result:
            samples = series.get("values") if isinstance(series, dict) else None
            if not isinstance(samples, list):
                raise ProviderError(f"malformed matrix series: {series!r}")
            flat.extend(_sample_value(sample[1]) for sample in samples)
        return flat, _list_text(flat)
    raise ProviderError(f"Prometheus metric type not supported: {result_type!r}")


@dataclass
class PrometheusClient:
    """Instant queries as client_golang sends them: POST /api/v1/query with a form body (`query`,
    `time`), retried as GET when the server answers 405 or 501 (DoGetFallback).

    `address_override` points every query at the local Prometheus while the template keeps its
    in-cluster address (recorded in the measurement, so the report shows what production queries).
    """

    address_override: str | None = None
    clock: Callable[[], float] | None = None
    transport: httpx.BaseTransport | None = None
    sent: list[tuple[str, str]] = field(default_factory=list)  # (method, url) for the record

    def __call__(self, request: PrometheusQuery) -> Mapping[str, Any]:
        return self.query(request)

    def query(self, request: PrometheusQuery) -> Mapping[str, Any]:
        base = (self.address_override or request.address).rstrip("/")
        url = f"{base}/api/v1/query"
        now = self.clock() if self.clock else time.time()
        form = {"query": request.query, "time": go_float(round(now, 3))}
        headers = dict(request.headers)
        if request.timeout_seconds < 0:
            raise ProviderError("prometheus timeout should not be negative")
        # Argo's context timeout bounds the whole request; httpx takes it per phase, which is the
        # closest equivalent without threads.
        try:
            with httpx.Client(
                timeout=request.timeout_seconds,
                verify=not request.insecure,
                transport=self.transport,
            ) as client:
                self.sent.append(("POST", url))
                response = client.post(url, data=form, headers=headers)
                if response.status_code in (405, 501):
                    self.sent.append(("GET", url))
                    response = client.get(url, params=form, headers=headers)
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"prometheus query timed out after {request.timeout_seconds}s: {exc}"
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"prometheus query failed: {type(exc).__name__}: {exc}") from None
        return _decode(response)


def _decode(response: httpx.Response) -> Mapping[str, Any]:
    # client_golang: 2xx, 400, 422 and 503 carry the API's JSON envelope; others are HTTP errors.
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("status") == "error":
        raise ProviderError(
            f"{body.get('errorType', 'error')}: {body.get('error', 'unknown error')} "
            f"(HTTP {response.status_code})"
        )
    if response.status_code // 100 != 2:
        text = response.text.strip()[:200]
        raise ProviderError(f"server error: HTTP {response.status_code}: {text}")
    if not isinstance(body, dict) or body.get("status") != "success":
        raise ProviderError(f"malformed Prometheus response: {response.text[:200]!r}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError("Prometheus response has no data object")
    return data
