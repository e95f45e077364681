"""The Prometheus client sends queries the way Argo's client_golang does, and maps every failure to
ProviderError (so the measurement is Error, never Failed)."""

from __future__ import annotations

import json
import math
import urllib.parse
from typing import Any, Callable

import httpx
import pytest

from scripts.rehearsal.prometheus import (
    PrometheusClient,
    PrometheusQuery,
    ProviderError,
    go_float,
    result_from_data,
)

QUERY = PrometheusQuery(
    address="http://prometheus.monitoring.svc:9090",
    query='sum(rate(inference_successes_total{pod="a"}[5m]))',
    timeout_seconds=3,
    headers=(("X-Scope-OrgID", "team-a"),),
)
SUCCESS_BODY = {"status": "success", "data": {"resultType": "vector", "result": []}}


def client_with(handler: Callable[[httpx.Request], httpx.Response]) -> PrometheusClient:
    return PrometheusClient(
        address_override="http://127.0.0.1:9999/",
        clock=lambda: 1700000000.25,
        transport=httpx.MockTransport(handler),
    )


def test_instant_query_is_a_form_post_with_query_and_time() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SUCCESS_BODY)

    client = client_with(handler)
    assert client(QUERY) == SUCCESS_BODY["data"]
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://127.0.0.1:9999/api/v1/query"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["x-scope-orgid"] == "team-a"
    form = urllib.parse.parse_qs(request.content.decode())
    assert form == {"query": [QUERY.query], "time": ["1700000000.25"]}


@pytest.mark.parametrize("status", [405, 501])
def test_falls_back_to_get_on_405_and_501(status: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(status, text="method not allowed")
        return httpx.Response(200, json=SUCCESS_BODY)

    client = client_with(handler)
    assert client(QUERY) == SUCCESS_BODY["data"]
    assert [r.method for r in seen] == ["POST", "GET"]
    assert dict(seen[1].url.params) == {"query": QUERY.query, "time": "1700000000.25"}
    assert [method for method, _ in client.sent] == ["POST", "GET"]


def test_without_override_the_template_address_is_used() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=SUCCESS_BODY)

    client = PrometheusClient(transport=httpx.MockTransport(handler))
    client(QUERY)
    assert seen == ["http://prometheus.monitoring.svc:9090/api/v1/query"]


def _error(status: int, body: Any) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=str(body))

    return handler


ERROR_ROWS: list[tuple[str, Callable[[httpx.Request], httpx.Response], str]] = [
    (
        "PromQL error (400 bad_data)",
        _error(400, {"status": "error", "errorType": "bad_data", "error": "parse error"}),
        "bad_data: parse error (HTTP 400)",
    ),
    (
        "execution error (422)",
        _error(422, {"status": "error", "errorType": "execution", "error": "boom"}),
        "execution: boom (HTTP 422)",
    ),
    ("HTTP 500 without envelope", _error(500, "internal"), "server error: HTTP 500: internal"),
    ("HTTP 404", _error(404, "not found"), "HTTP 404"),
    ("not JSON", _error(200, "<html>"), "malformed Prometheus response"),
    ("no data", _error(200, {"status": "success"}), "no data object"),
]


@pytest.mark.parametrize(
    ("rule", "handler", "message"), ERROR_ROWS, ids=[row[0] for row in ERROR_ROWS]
)
def test_http_and_promql_errors_are_provider_errors(
    rule: str, handler: Callable[[httpx.Request], httpx.Response], message: str
) -> None:
    with pytest.raises(ProviderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        client_with(handler)(QUERY)


def test_timeout_is_a_provider_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ProviderError, match="timed out after 3"):
        client_with(handler)(QUERY)


def test_connection_refused_is_a_provider_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ProviderError, match="ConnectError: connection refused"):
        client_with(handler)(QUERY)


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(ProviderError, match="should not be negative"):
        client_with(_error(200, SUCCESS_BODY))(
            PrometheusQuery(address="http://p", query="q", timeout_seconds=-1)
        )


def test_real_socket_timeout() -> None:
    """A server that accepts but never answers: the query gives up after `timeout`."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        client = PrometheusClient(address_override=f"http://127.0.0.1:{port}")
        request = PrometheusQuery(address="http://unused", query="up", timeout_seconds=0.2)
        with pytest.raises(ProviderError, match="timed out"):
            client(request)
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"),
        (1.0, "1"),
        (1e-05, "0.00001"),
        (123456789.0, "123456789"),
        (-0.0, "0"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
    ],
)
def test_go_float_formatting(value: float, text: str) -> None:
    assert go_float(value) == text


MALFORMED: list[dict[str, Any]] = [
    {"resultType": "scalar", "result": "x"},
    {"resultType": "scalar", "result": [0, "abc"]},
    {"resultType": "vector", "result": {}},
    {"resultType": "vector", "result": [{"metric": {}}]},
    {"resultType": "matrix", "result": {}},
    {"resultType": "matrix", "result": [{"metric": {}}]},
    {"resultType": "string", "result": [0, "s"]},
    {},
]


@pytest.mark.parametrize("data", MALFORMED, ids=[json.dumps(d) for d in MALFORMED])
def test_malformed_or_unsupported_answers(data: dict[str, Any]) -> None:
    with pytest.raises(ProviderError):
        result_from_data(data)
