"""`make cluster-up` / `cluster-down` / `cluster-status`: the local single-node cluster.

python -m scripts.cluster up        # control plane, platform CRDs, node agent; then returns
python -m scripts.cluster status    # what runs, and the kubeconfig to use
python -m scripts.cluster down      # stop everything it started
python -m scripts.cluster image --dockerfile ml/serving/Dockerfile --tag REF [--build-arg K=V]
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.cluster.control_plane import (
    NODE,
    NODE_NAME,
    REPO_ROOT,
    ClusterError,
    ControlPlane,
    Layout,
    admin_http,
    State,
    down,
    kubeconfig_for,
    service_account,
)
from scripts.cluster.images import ImageError, build_image
from scripts.engines import EngineError, program_path
from scripts.platform import PLATFORM, PlatformError, component, crd_documents, module_dir
from scripts.processes import ManagedProcess, ProcessError, free_port, wait_until

LOCAL_RANGE = "198.18.0.0/16"
"""Routed to the loopback interface by `up` (`ip route replace local ... dev lo`): pods need
addresses EndpointSlices accept (they refuse 127.0.0.0/8), and traffic to these never leaves
the machine. 198.18.0.0/15 is reserved for benchmarking networks (RFC 2544), so it collides with
no real network."""


def pod_cidr(layout: Layout) -> str:
    """This cluster's /24 of the local range (POD_CIDR overrides): one per cluster folder, so
    clusters of several clones on one machine never hand out the same address."""
    if os.environ.get("POD_CIDR"):
        return os.environ["POD_CIDR"]
    digest = hashlib.sha256(str(layout.root).encode()).digest()
    return f"198.18.{digest[0]}.0/24"


SCRAPE_INTERVAL = os.environ.get("SCRAPE_INTERVAL", "1s")
"""Every PodMonitor's scrape interval in the local cluster (time-scaled canaries need data fast)."""

ROLLOUTS = service_account("argo-rollouts", "argo-rollouts")
# the chart's ServiceAccount is kube-prometheus-stack-prometheus; its user name would exceed the
# 64 characters a certificate's CN may hold, so the stand-in uses a shorter one
PROMETHEUS = service_account("monitoring", "prometheus")

# What the kube-prometheus-stack chart grants its Prometheus, for service discovery and scraping.
PROMETHEUS_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kube-prometheus-stack-prometheus}
rules:
  - apiGroups: [""]
    resources: [nodes, nodes/metrics, services, endpoints, pods]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - nonResourceURLs: [/metrics, /metrics/cadvisor]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kube-prometheus-stack-prometheus}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kube-prometheus-stack-prometheus
subjects:
  - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
"""


def platform_address(layout: Layout, index: int) -> str:
    """Addresses of the platform stand-ins: the top of the pod range (pods take the bottom)."""
    network = ipaddress.ip_network(pod_cidr(layout))
    return str(network.broadcast_address - 1 - index)


def images_dir(layout: Layout) -> Path:
    return layout.root / "images"


def kubectl(
    layout: Layout, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The control plane's own kubectl (same version), as the cluster admin."""
    return subprocess.run(
        [str(program_path("kubectl")), f"--kubeconfig={layout.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
    )


def _listening_in(cidr: str) -> bool:
    """Whether any socket listens on an address of `cidr` (another cluster still uses it)."""
    network = ipaddress.ip_network(cidr)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address = ipaddress.ip_address(bytes(reversed(bytes.fromhex(local.split(":")[0]))))
        if state == "0A" and address in network:
            return True
    return False


def route_pod_range(cidr: str, present: bool) -> None:
    """Make every address of `cidr` local (AnyIP on lo), or drop that route once nothing listens
    there any more; needs CAP_NET_ADMIN (root, or sudo without a password)."""
    if not present and _listening_in(cidr):
        return
    action = "replace" if present else "del"
    command = ["ip", "route", action, "local", cidr, "dev", "lo"]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 and present:
        raise ClusterError(
            f"cannot route the pod range {cidr} to loopback (`{' '.join(command)}`:"
            f" {result.stderr.strip()}); run as root or allow that command with sudo, or set"
            " POD_CIDR to a /24 this machine already treats as local"
        )


# The kinds the local cluster serves: every kind of ours that a CRD defines (a test keeps this in
# step with what `make manifests` renders) and what the controllers themselves create. The other
# CRDs of the same modules (Prometheus, Alertmanager, ThanosRuler, Istio's Gateway...) are left
# out: each costs the API server ~0.5-1 s to establish here, and nothing local uses them.
CLUSTER_KINDS = frozenset(
    {
        # Argo Rollouts: ours, and the runs and experiments the controller creates
        "Rollout",
        "AnalysisTemplate",
        "ClusterAnalysisTemplate",
        "AnalysisRun",
        "Experiment",
        # prometheus-operator
        "PodMonitor",
        "ServiceMonitor",
        "PrometheusRule",
        # Istio (production's weighted canary)
        "VirtualService",
        "DestinationRule",
        # Argo Workflows: ours, and what a workflow run creates
        "WorkflowTemplate",
        "ClusterWorkflowTemplate",
        "CronWorkflow",
        "Workflow",
        "WorkflowTaskResult",
        # Argo CD
        "Application",
        "ApplicationSet",
        "AppProject",
    }
)


def cluster_crds() -> list[dict[str, Any]]:
    """The CRDs of CLUSTER_KINDS at the pinned platform versions."""
    return [
        document
        for item in PLATFORM
        for document in crd_documents(item)
        if document["spec"]["names"]["kind"] in CLUSTER_KINDS
    ]


def install_crds(layout: Layout, server: str, say: "Say") -> int:
    """The CRDs of CLUSTER_KINDS at their pinned versions, created (the store is new on every
    up), four at a time, then waited on until Established."""
    from concurrent.futures import ThreadPoolExecutor

    documents = cluster_crds()
    say(
        f"CRDs: {len(documents)} of "
        + ", ".join(f"{item.name} {item.version}" for item in PLATFORM if item.crd_files)
    )
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    with admin_http(layout, server) as http:

        def create(document: dict[str, object]) -> None:
            answer = http.post(path, json=document, timeout=120)
            if answer.status_code not in (201, 409):
                raise ClusterError(f"CRD {document['metadata']}: {answer.text[:500]}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, documents))
        names = {d["metadata"]["name"] for d in documents}

        def established() -> bool:
            items = http.get(path, timeout=30).json()["items"]
            done = {
                item["metadata"]["name"]
                for item in items
                if any(
                    c["type"] == "Established" and c["status"] == "True"
                    for c in (item.get("status") or {}).get("conditions") or []
                )
            }
            return names <= done

        wait_until(established, 120, "the platform CRDs to be Established", poll=0.3)
    say(f"{len(documents)} CRDs established")
    return len(documents)


class Say:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"cluster [{time.monotonic() - self.started:5.1f} s]: {text}", flush=True)


def up(layout: Layout) -> int:
    say = Say()
    existing = State.read(layout)
    if existing is not None and existing.running():
        say(f"already up at {existing.server}; kubeconfig {layout.kubeconfig}")
        return 0
    if existing is not None:
        down(layout, say)
    route_pod_range(LOCAL_RANGE, True)
    plane = ControlPlane(layout, say)
    state = plane.up()
    say(f"control plane up: {state.server} (etcd, kube-apiserver, controller-manager, scheduler)")
    try:
        install_crds(layout, state.server, say)
        say("starting the node agent")
        agent = ManagedProcess(
            "node-agent",
            [
                sys.executable,
                "-m",
                "scripts.cluster.node_agent",
                f"--kubeconfig={kubeconfig_for(layout, NODE, state.server)}",
                f"--node-name={NODE_NAME}",
                f"--pod-cidr={pod_cidr(layout)}",
                f"--images={images_dir(layout)}",
                f"--work-dir={layout.root / 'node'}",
            ],
            layout.log("node-agent"),
            cwd=REPO_ROOT,
        )
        agent.start()
        wait_until(
            lambda: "True"
            in kubectl(
                layout,
                "get",
                "node",
                NODE_NAME,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ).stdout,
            60,
            f"node {NODE_NAME} to be Ready",
            agent,
        )
        state = State(state.server, state.daemons + (agent.record(),))
        layout.state.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        addons, proxy = start_addons(layout, state.server, say)
        state = State(state.server, state.daemons + (addons.record(),))
        layout.state.write_text(json.dumps(state.to_json(), indent=2) + "\n")
        controller = start_rollouts(layout, state.server, proxy, say)
        state = State(state.server, state.daemons + (controller.record(),))
        layout.state.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    except BaseException:
        down(layout, say)
        raise
    say(
        f"node {NODE_NAME} Ready: pods run as local processes on {pod_cidr(layout)}"
        " (no container engine)"
    )
    say(f"up; export KUBECONFIG={layout.kubeconfig}")
    return 0


def start_addons(layout: Layout, server: str, say: Say) -> tuple[ManagedProcess, int]:
    """Prometheus (kube-prometheus-stack stand-in) and the service proxy, in one process."""
    result = kubectl(layout, "apply", "--server-side", "-f", "-", stdin=PROMETHEUS_RBAC)
    if result.returncode != 0:
        raise ClusterError(f"Prometheus RBAC: {result.stderr}")
    pki = layout.pki
    pair = pki.client(PROMETHEUS)
    proxy = free_port()
    address = platform_address(layout, 0)
    addons = ManagedProcess(
        "addons",
        [
            sys.executable,
            "-m",
            "scripts.cluster.addons",
            f"--kubeconfig={layout.kubeconfig}",
            f"--prometheus-kubeconfig-ca={pki.ca.cert}",
            f"--prometheus-cert={pair.cert}",
            f"--prometheus-key={pair.key}",
            f"--api-server={server}",
            f"--address={address}",
            f"--proxy-port={proxy}",
            f"--scrape-interval={SCRAPE_INTERVAL}",
            f"--work-dir={layout.root / 'addons'}",
        ],
        layout.log("addons"),
        cwd=REPO_ROOT,
    )
    addons.start()
    wait_until(
        lambda: (
            "stand-in: ready" in addons.log_path.read_text(errors="replace")
            if addons.log_path.exists()
            else False
        ),
        60,
        "the Prometheus stand-in",
        addons,
    )
    say(
        f"kube-prometheus-stack substituted: a real Prometheus on {address}:9090 (scrapes from"
        f" PodMonitors every {SCRAPE_INTERVAL}),"
        " Service monitoring/kube-prometheus-stack-prometheus"
    )
    return addons, proxy


def start_rollouts(layout: Layout, server: str, proxy: int, say: Say) -> ManagedProcess:
    """The real Argo Rollouts controller, with upstream's RBAC and config, run as a process."""
    item = component("argo-rollouts")
    install = module_dir(item.module, item.version) / "manifests" / "install.yaml"
    import yaml

    documents = [
        d
        for d in yaml.safe_load_all(install.read_text())
        if isinstance(d, dict) and d.get("kind") not in ("CustomResourceDefinition", "Deployment")
    ]
    for document in documents:
        if document["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            document["metadata"]["namespace"] = "argo-rollouts"
    kubectl(layout, "create", "namespace", "argo-rollouts")
    text = "\n---\n".join(json.dumps(d) for d in documents)
    result = kubectl(layout, "apply", "--server-side", "-f", "-", stdin=text)
    if result.returncode != 0:
        raise ClusterError(f"Argo Rollouts install manifests: {result.stderr}")
    healthz = free_port()
    controller = ManagedProcess(
        "rollouts-controller",
        [
            str(program_path("rollouts-controller")),
            f"--kubeconfig={kubeconfig_for(layout, ROLLOUTS, server)}",
            "--leader-elect=false",
            f"--metricsport={free_port()}",
            f"--healthzPort={healthz}",
            "--loglevel=info",
        ],
        layout.log("rollouts-controller"),
        env={
            **os.environ,
            "POD_NAMESPACE": "argo-rollouts",
            # cluster DNS + kube-proxy for the analysis' Prometheus queries (*.svc names)
            "HTTP_PROXY": f"http://127.0.0.1:{proxy}",
            "NO_PROXY": "127.0.0.1,localhost",
        },
        cwd=layout.root,
    )
    controller.start()
    wait_until(
        lambda: _ok(f"http://127.0.0.1:{healthz}/healthz"),
        60,
        "the Rollouts controller",
        controller,
    )
    say(
        f"argo-rollouts {item.version}: the real controller (upstream RBAC, ServiceAccount"
        " argo-rollouts/argo-rollouts), run as a process instead of the chart's Deployment"
    )
    return controller


def _ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def status(layout: Layout) -> int:
    state = State.read(layout)
    if state is None:
        print("cluster: not up (make cluster-up)")
        return 1
    for record in state.daemons:
        print(f"{record.name:<24} pid {record.pid:<8} {'running' if record.alive() else 'GONE'}")
    print(f"server {state.server}; KUBECONFIG={layout.kubeconfig}")
    return 0 if state.running() else 1


def stop(layout: Layout) -> int:
    say = Say()
    stopped = down(layout, say)
    leftovers = layout.root / "node" / "processes.json"
    if leftovers.is_file():  # pods of an agent that died without stopping them
        from scripts.processes import DaemonRecord, stop_daemon

        for item in json.loads(leftovers.read_text() or "[]"):
            if stop_daemon(DaemonRecord.from_json(item), grace_seconds=5):
                say(f"stopped leftover pod process {item['name']} (pid {item['pid']})")
        leftovers.unlink()
    route_pod_range(LOCAL_RANGE, False)
    say(f"down ({stopped} processes stopped)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the cluster (idempotent)")
    sub.add_parser("down", help="stop the cluster")
    sub.add_parser("status", help="what runs")
    image = sub.add_parser("image", help="build a process image from a Dockerfile")
    image.add_argument("--dockerfile", required=True, type=Path)
    image.add_argument("--tag", required=True, help="the image reference pods name")
    image.add_argument("--context", type=Path, default=REPO_ROOT)
    image.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    layout = Layout.default()
    try:
        if args.command == "up":
            return up(layout)
        if args.command == "down":
            return stop(layout)
        if args.command == "status":
            return status(layout)
        built = build_image(
            args.dockerfile,
            args.context,
            args.tag,
            images_dir(layout),
            dict(item.split("=", 1) for item in args.build_arg),
        )
        print(f"cluster: process image {built.ref} from {built.dockerfile}")
        for note in built.notes:
            print(f"  not reproduced: {note}")
        return 0
    except (ClusterError, EngineError, PlatformError, ProcessError, ImageError) as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
