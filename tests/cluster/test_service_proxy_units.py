"""The service proxy (cluster DNS + kube-proxy for controllers outside the cluster), in process:
Service names resolved from EndpointSlices round-robin over ready endpoints only, requests
forwarded, and every failure a clear status instead of a hang."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scripts.cluster.service_proxy import NoEndpoint, ServiceResolver, serve


def _service(ports: list[tuple[str, int]]) -> client.V1Service:
    return client.V1Service(
        spec=client.V1ServiceSpec(
            ports=[client.V1ServicePort(name=name, port=port) for name, port in ports]
        )
    )


def _slice(port_name: str, target: int, endpoints: list[tuple[str, bool | None]]) -> Any:
    return client.V1EndpointSlice(
        address_type="IPv4",
        ports=[client.DiscoveryV1EndpointPort(name=port_name, port=target)],
        endpoints=[
            client.V1Endpoint(
                addresses=[address],
                conditions=None if ready is None else client.V1EndpointConditions(ready=ready),
            )
            for address, ready in endpoints
        ],
    )


def resolver_of(service: client.V1Service | ApiException, slices: list[Any]) -> ServiceResolver:
    resolver = ServiceResolver(client.ApiClient())
    resolver.core = mock.Mock()
    resolver.discovery = mock.Mock()
    if isinstance(service, ApiException):
        resolver.core.read_namespaced_service.side_effect = service
    else:
        resolver.core.read_namespaced_service.return_value = service
    resolver.discovery.list_namespaced_endpoint_slice.return_value = mock.Mock(items=slices)
    return resolver


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("prom.monitoring.svc", ("monitoring", "prom")),
        ("Prom.Monitoring.svc.cluster.local.", ("monitoring", "prom")),
        ("prom.monitoring", None),
        ("prom.monitoring.svc.example.com", None),
        ("127.0.0.1", None),
    ],
)
def test_only_cluster_service_names_are_split(host: str, expected: tuple[str, str] | None) -> None:
    assert ServiceResolver.split(host) == expected


def test_ready_endpoints_take_turns_and_the_port_is_mapped_by_name() -> None:
    resolver = resolver_of(
        _service([("metrics", 9090), ("web", 80)]),
        [
            _slice("web", 8080, [("198.18.0.3", True), ("198.18.0.9", False)]),
            _slice("web", 8080, [("198.18.0.2", None)]),  # no conditions: ready
            _slice("metrics", 9999, [("198.18.0.7", True)]),
        ],
    )
    picks = [resolver.resolve("server.apps.svc", 80) for _ in range(4)]
    assert picks == [("198.18.0.2", 8080), ("198.18.0.3", 8080)] * 2
    resolver.discovery.list_namespaced_endpoint_slice.assert_called_with(
        "apps", label_selector="kubernetes.io/service-name=server"
    )


@pytest.mark.parametrize(
    ("service", "slices", "host", "port", "message"),
    [
        (_service([("web", 80)]), [], "example.com", 80, "not a cluster Service name"),
        (ApiException(404, "Not Found"), [], "gone.apps.svc", 80, "gone.apps.svc: 404 Not Found"),
        (_service([("web", 80)]), [], "server.apps.svc", 81, "has no port 81"),
        (
            _service([("web", 80)]),
            [_slice("web", 8080, [("198.18.0.3", False)])],
            "server.apps.svc",
            80,
            "has no ready endpoint",
        ),
    ],
)
def test_what_cannot_be_resolved_says_why(
    service: Any, slices: list[Any], host: str, port: int, message: str
) -> None:
    with pytest.raises(NoEndpoint, match=message):
        resolver_of(service, slices).resolve(host, port)


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps(
            {
                "path": self.path,
                "body": body.decode(),
                "proxy": self.headers.get("Proxy-Connection"),
            }
        ).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def upstream() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _through(proxy_port: int, method: str, url: str, body: bytes | None = None) -> Any:
    connection = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
    headers = {"Proxy-Connection": "keep-alive"}
    connection.request(method, url, body=body, headers=headers)
    answer = connection.getresponse()
    return answer.status, dict(answer.getheaders()), answer.read()


def test_requests_are_forwarded_to_the_endpoint_and_failures_are_statuses(
    upstream: ThreadingHTTPServer,
) -> None:
    port = upstream.server_address[1]
    resolver = resolver_of(_service([("web", 80)]), [_slice("web", port, [("127.0.0.1", True)])])
    said: list[str] = []
    proxy = serve(resolver, "127.0.0.1", 0, said.append)
    try:
        proxy_port = proxy.server_address[1]
        status, headers, body = _through(
            proxy_port, "POST", "http://server.apps.svc/api/v1/query?q=up", b"x=1"
        )
        assert status == 201 and headers["X-Upstream"] == "yes"
        # hop-by-hop headers stay with the proxy
        assert json.loads(body) == {"path": "/api/v1/query?q=up", "body": "x=1", "proxy": None}

        status, _, body = _through(proxy_port, "GET", "http://other.example.com/")
        assert status == 503 and b"not a cluster Service name" in body
        assert said == [
            "service-proxy: 503 other.example.com: not a cluster Service name"
            " (<svc>.<namespace>.svc)"
        ]

        status, _, body = _through(proxy_port, "GET", "/relative")
        assert status == 400 and b"absolute http:// URL" in body

        status, _, body = _through(proxy_port, "CONNECT", "server.apps.svc:443")
        assert status == 405 and b"CONNECT" in body

        upstream.shutdown()
        upstream.server_close()  # the endpoint goes away: 502, not a hang
        status, _, body = _through(proxy_port, "POST", "http://server.apps.svc/", b"")
        assert status == 502 and f"127.0.0.1:{port}".encode() in body
    finally:
        proxy.shutdown()
        proxy.server_close()
