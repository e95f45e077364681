"""Cluster DNS and kube-proxy for the controllers that run outside the cluster here.

In a cluster, the Argo Rollouts controller reaches Prometheus at
`http://kube-prometheus-stack-prometheus.monitoring.svc:9090`: cluster DNS resolves the Service
and kube-proxy sends the connection to one of its ready endpoints. Here the controllers are
local processes, so they get `HTTP_PROXY` pointing at this forward proxy, which does both jobs
from the API server's own data: `<service>.<namespace>.svc[.cluster.local][:port]` is looked up
in the Service's EndpointSlices (ready endpoints only, the port mapped by name), and each
request goes to the next endpoint in turn. Plain HTTP only (`CONNECT` is refused), which is what
in-cluster Prometheus, Argo CD's repo server and Redis clients use here.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client
from kubernetes.client.exceptions import ApiException

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}


class NoEndpoint(LookupError):
    """The name is not a Service here, or it has no ready endpoint for that port."""


class ServiceResolver:
    """Service name and port -> a ready endpoint, round-robin, from EndpointSlices."""

    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)
        self.discovery = client.DiscoveryV1Api(api)
        self._turns: dict[tuple[str, str, int], itertools.count[int]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def split(host: str) -> tuple[str, str] | None:
        """`svc.ns.svc[.cluster.local]` -> (ns, svc); None for any other name."""
        parts = host.lower().rstrip(".").split(".")
        if len(parts) in (3, 5) and parts[2] == "svc" and parts[3:] in ([], ["cluster", "local"]):
            return parts[1], parts[0]
        return None

    def resolve(self, host: str, port: int) -> tuple[str, int]:
        names = self.split(host)
        if names is None:
            raise NoEndpoint(f"{host}: not a cluster Service name (<svc>.<namespace>.svc)")
        namespace, name = names
        try:
            service = self.core.read_namespaced_service(name, namespace)
            slices = self.discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={name}"
            ).items
        except ApiException as exc:
            raise NoEndpoint(f"{host}: {exc.status} {exc.reason}") from None
        port_name = next((p.name or "" for p in service.spec.ports or [] if p.port == port), None)
        if port_name is None:
            raise NoEndpoint(f"{host}: Service {namespace}/{name} has no port {port}")
        candidates: list[tuple[str, int]] = []
        for item in slices:
            target = next((p.port for p in item.ports or [] if (p.name or "") == port_name), None)
            if target is None:
                continue
            for endpoint in item.endpoints or []:
                if endpoint.conditions is None or endpoint.conditions.ready is not False:
                    candidates += [(address, int(target)) for address in endpoint.addresses]
        if not candidates:
            raise NoEndpoint(f"{host}:{port}: Service {namespace}/{name} has no ready endpoint")
        candidates.sort()
        with self._lock:
            turn = next(self._turns.setdefault((namespace, name, port), itertools.count()))
        return candidates[turn % len(candidates)]


def make_handler(
    resolver: ServiceResolver, say: Callable[[str], None]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
            pass

        def _refuse(self, code: int, reason: str) -> None:
            body = (reason + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self) -> None:
            target = urlsplit(self.path)
            if target.scheme != "http" or not target.hostname:
                self._refuse(400, f"expected an absolute http:// URL, got {self.path!r}")
                return
            try:
                address, port = resolver.resolve(target.hostname, target.port or 80)
            except NoEndpoint as exc:
                say(f"service-proxy: 503 {exc}")
                self._refuse(503, str(exc))
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            path = target.path or "/"
            if target.query:
                path += "?" + target.query
            upstream = http.client.HTTPConnection(address, port, timeout=60)
            try:
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
            except OSError as exc:
                self._refuse(502, f"{address}:{port}: {exc}")
                return
            finally:
                upstream.close()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        def do_CONNECT(self) -> None:
            self._refuse(405, "CONNECT (https through the proxy) is not supported here")

    return Handler


def serve(
    resolver: ServiceResolver, host: str, port: int, say: Callable[[str], None]
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, port), make_handler(resolver, say))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="service-proxy").start()
    return server
