"""A single-node Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler (the real ones, from tools/engines/), the platform's
CRDs at their pinned versions, and the node agent that runs pods as local processes.

`make cluster-up` starts it and returns; the processes keep running (detached, each in its own
session) until `make cluster-down`. Everything lives under one git-ignored folder (CLUSTER_DIR,
default .cluster/): certificates, kubeconfigs, etcd's data, logs and `state.json`, which records
the pid and start time of each process so `down` stops exactly those.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from scripts.cluster.pki import Identity, Pki
from scripts.engines import program_path
from scripts.processes import DaemonRecord, ManagedProcess, free_port, stop_daemon, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_NAME = "local-node"
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"

ADMIN = Identity("admin", "kubernetes-admin", ("system:masters",))
CONTROLLER_MANAGER = Identity("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = Identity("kube-scheduler", "system:kube-scheduler")
NODE = Identity("node", f"system:node:{NODE_NAME}", ("system:nodes",))


def service_account(namespace: str, name: str) -> Identity:
    """A client certificate that authenticates as a ServiceAccount, for controllers that run
    outside the cluster here but inside it in production (RBAC then judges them the same)."""
    return Identity(
        f"sa-{namespace}-{name}",
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
    )


class ClusterError(RuntimeError):
    """The local cluster could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class Layout:
    """Where the cluster keeps its files."""

    root: Path

    @classmethod
    def default(cls) -> "Layout":
        return cls(Path(os.environ.get("CLUSTER_DIR") or REPO_ROOT / ".cluster").resolve())

    @property
    def pki(self) -> Pki:
        return Pki(self.root / "pki")

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    def kubeconfig_of(self, identity: Identity) -> Path:
        return self.root / "kubeconfigs" / f"{identity.name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"


@dataclass(frozen=True)
class State:
    """What a running cluster recorded: its API server and the processes to stop."""

    server: str
    daemons: tuple[DaemonRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "daemons": [d.to_json() for d in self.daemons]}

    @classmethod
    def read(cls, layout: Layout) -> "State | None":
        try:
            data = json.loads(layout.state.read_text())
        except (OSError, ValueError):
            return None
        return cls(data["server"], tuple(DaemonRecord.from_json(d) for d in data["daemons"]))

    def running(self) -> bool:
        return bool(self.daemons) and all(d.alive() for d in self.daemons)


def write_kubeconfig(
    path: Path, server: str, ca: Path, cert: Path, key: Path, namespace: str | None = None
) -> None:
    context: dict[str, str] = {"cluster": "local", "user": "local"}
    if namespace:  # a pod's client defaults to its own namespace; so does this kubeconfig's
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": "local", "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "local", "context": context}],
        "current-context": "local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML to every client


def kubeconfig_for(
    layout: Layout, identity: Identity, server: str, namespace: str | None = None
) -> Path:
    """A kubeconfig authenticating as `identity` (its certificate is issued when missing)."""
    pki = layout.pki
    pair = pki.client(identity)
    path = layout.kubeconfig_of(identity)
    write_kubeconfig(path, server, pki.ca.cert, pair.cert, pair.key, namespace)
    return path


@contextmanager
def admin_http(layout: Layout, server: str) -> Iterator[httpx.Client]:
    pki = layout.pki
    pair = pki.client(ADMIN)
    context = ssl.create_default_context(cafile=str(pki.ca.cert))
    context.load_cert_chain(str(pair.cert), str(pair.key))
    with httpx.Client(base_url=server, verify=context, timeout=5) as client:
        yield client


def _ok(get: Callable[[], httpx.Response]) -> bool:
    try:
        return get().status_code == 200
    except httpx.HTTPError:
        return False


class ControlPlane:
    """Starts the processes in order, each one waited on before the next needs it."""

    def __init__(self, layout: Layout, log: Callable[[str], None] = print) -> None:
        self.layout = layout
        self.log = log
        self.started: list[ManagedProcess] = []

    def _start(self, name: str, argv: Sequence[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.layout.log(name), cwd=self.layout.root)
        process.start()
        self.started.append(process)
        return process

    def up(self, timeout: float = 60.0) -> State:
        layout = self.layout
        layout.root.mkdir(parents=True, exist_ok=True)
        pki = layout.pki
        pki.ensure()
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        try:
            etcd = self._start("etcd", self._etcd_argv(etcd_port, peer_port))
            wait_until(
                lambda: _ok(lambda: httpx.get(f"http://127.0.0.1:{etcd_port}/health", timeout=1)),
                timeout,
                "etcd to be healthy",
                etcd,
            )
            apiserver = self._start("kube-apiserver", self._apiserver_argv(etcd_port, api_port))
            with admin_http(layout, server) as http:
                wait_until(
                    lambda: _ok(lambda: http.get("/readyz")),
                    timeout,
                    "kube-apiserver /readyz",
                    apiserver,
                )
            write_kubeconfig(layout.kubeconfig, server, pki.ca.cert, *_pair(pki.client(ADMIN)))
            self._start("kube-controller-manager", self._controller_manager_argv(server))
            self._start("kube-scheduler", self._scheduler_argv(server))
            state = State(server, tuple(p.record() for p in self.started))
            layout.state.write_text(json.dumps(state.to_json(), indent=2) + "\n")
            return state
        except BaseException:
            for process in reversed(self.started):
                process.stop()
            raise

    def _etcd_argv(self, port: int, peer_port: int) -> list[str]:
        data = self.layout.etcd_data
        shutil.rmtree(data, ignore_errors=True)  # every cluster-up starts from an empty store
        client, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
        return [
            str(program_path("etcd")),
            "--name=local",
            f"--data-dir={data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=local={peer}",
            "--log-level=warn",
            # one node, throw-away data: no fsync per write (the store is rebuilt on every up)
            "--unsafe-no-fsync",
        ]

    def _apiserver_argv(self, etcd_port: int, port: int) -> list[str]:
        pki = self.layout.pki
        return [
            str(program_path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.server.cert}",
            f"--tls-private-key-file={pki.server.key}",
            f"--client-ca-file={pki.ca.cert}",
            f"--service-account-key-file={pki.service_account_public}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-account-issuer={ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Node: the node agent may touch only its own node and pods; RBAC: everyone else
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_manager_argv(self, server: str) -> list[str]:
        pki = self.layout.pki
        kubeconfig = kubeconfig_for(self.layout, CONTROLLER_MANAGER, server)
        return [
            str(program_path("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            # each controller acts with its own ServiceAccount, as in a kubeadm cluster
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--v=1",
        ]

    def _scheduler_argv(self, server: str) -> list[str]:
        kubeconfig = kubeconfig_for(self.layout, SCHEDULER, server)
        return [
            str(program_path("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            "--leader-elect=false",
            "--v=1",
        ]


def _pair(pair: Any) -> tuple[Path, Path]:
    return pair.cert, pair.key


def down(layout: Layout, log: Callable[[str], None] = print) -> int:
    """Stop every recorded process, newest first; -> how many were running."""
    state = State.read(layout)
    if state is None:
        return 0
    stopped = 0
    for record in reversed(state.daemons):
        if stop_daemon(record):
            stopped += 1
            log(f"cluster: stopped {record.name} (pid {record.pid})")
    layout.state.unlink(missing_ok=True)
    shutil.rmtree(layout.etcd_data, ignore_errors=True)
    return stopped


def main_error(message: str) -> int:
    print(f"cluster: {message}", file=sys.stderr)
    return 1


def wait_seconds(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"
