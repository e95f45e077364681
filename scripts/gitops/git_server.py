"""The GitLab of the local cluster, and the only road to it.

Argo CD reads this repository under the name every Application in clusters/ uses,
`https://gitlab.example.com/mlops/gitops.git`; nothing is rewritten. Two small servers make that
name real on loopback, run together as one process by `make gitops-up`:

- **git over HTTPS**: git's own smart-HTTP server (`git http-backend`, CGI) answering for the
  bare repositories under `--root`, with a certificate for the served names issued by the local
  cluster's CA (Argo CD trusts it through `argocd-tls-certs-cm`, as it would a GitLab behind a
  private CA). Anonymous fetches; pushes too, so a clone can publish a commit as CI does.
- **the network**: a forward proxy (`HTTPS_PROXY` of the repo server) that resolves each served
  name to the git server and refuses every other destination with a 403 saying why, since this
  machine reaches no other host (Helm chart repositories included).

Every line it prints starts with `git-server:`.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CGI_HEADERS = ("Content-Type", "Content-Encoding", "Git-Protocol")


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with a length or chunked (git sends big packs chunked)."""
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        parts: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def split_cgi(output: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """A CGI program's output -> (HTTP status, headers, body)."""
    head, _, body = output.partition(b"\r\n\r\n")
    if not _:
        head, _, body = output.partition(b"\n\n")
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            headers.append((key.strip(), value.strip()))
    return status, headers, body


def backend_handler(root: Path, say: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
            pass

        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            body = read_body(self)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_ADDR": self.client_address[0],
                "CONTENT_LENGTH": str(len(body)),
            }
            for header in CGI_HEADERS:
                if header in self.headers:
                    name = header.upper().replace("-", "_")
                    env[name if header == "Content-Type" else f"HTTP_{name}"] = self.headers[header]
            if "Git-Protocol" in self.headers:  # protocol v2, as a web server hands it on
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            result = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True
            )
            status, headers, payload = split_cgi(result.stdout)
            if result.returncode != 0 and status == 200:
                status = 500
            detail = " " + result.stderr.decode()[:200] if result.stderr else ""
            say(f"{self.command} {path} {status}{detail}")
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

    return Handler


def proxy_handler(
    routes: dict[str, tuple[str, int]], say: Callable[[str], None]
) -> type[BaseHTTPRequestHandler]:
    """CONNECT `name:443` -> the git server; anything else -> 403 with the reason."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
            pass

        def _refuse(self, target: str) -> None:
            reason = (
                f"{target}: no route from this machine (the local proxy reaches only"
                f" {', '.join(sorted(routes))}; there is no other network here)\n"
            ).encode()
            say(f"proxy: refused {self.command} {target}")
            self.send_response(403, "Forbidden: no network here")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reason)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reason)
            self.close_connection = True

        def do_CONNECT(self) -> None:
            target = self.path.lower()
            if target not in routes:
                self._refuse(target)
                return
            try:
                upstream = socket.create_connection(routes[target], timeout=30)
            except OSError as exc:
                self.send_error(502, f"{target}: {exc}")
                return
            self.send_response(200, "Connection Established")
            self.end_headers()
            self.close_connection = True
            _pump(self.connection, upstream)

        def _plain(self) -> None:
            self._refuse(self.path)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = do_PATCH = _plain

    return Handler


def _pump(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [client, upstream]
    try:
        while True:
            readable, _, broken = select.select(sockets, [], sockets, 300)
            if broken or not readable:
                return
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                (upstream if source is client else client).sendall(data)
    except OSError:
        return
    finally:
        upstream.close()


def serve_git(
    root: Path, address: str, port: int, cert: Path, key: Path, say: Callable[[str], None]
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), backend_handler(root, say))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True, name="git-https").start()
    return server


def serve_proxy(
    routes: dict[str, tuple[str, int]], address: str, port: int, say: Callable[[str], None]
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, port), proxy_handler(routes, say))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="git-proxy").start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.gitops.git_server", description=__doc__
    )
    parser.add_argument("--root", type=Path, required=True, help="folder of bare repositories")
    parser.add_argument("--name", action="append", required=True, help="host name served")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="HTTPS port of the git server")
    parser.add_argument("--proxy-port", type=int, required=True)
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(f"git-server: {text}", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    git = serve_git(args.root, args.address, args.port, args.cert, args.key, say)
    routes = {f"{name.lower()}:443": (args.address, args.port) for name in args.name}
    proxy = serve_proxy(routes, args.address, args.proxy_port, say)
    say(
        f"ready: https://{{{','.join(args.name)}}} served from {args.root} on"
        f" {args.address}:{args.port}; proxy http://{args.address}:{args.proxy_port}"
    )
    stop.wait()
    proxy.shutdown()
    git.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
