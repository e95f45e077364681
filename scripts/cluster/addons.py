"""Stand-ins for the cluster add-ons whose Helm charts cannot be fetched here, run by
`make cluster-up` as one process next to the control plane:

- **kube-prometheus-stack** (Prometheus Operator + Prometheus): a real Prometheus server whose
  scrape configuration is generated from the cluster's PodMonitors the way the operator
  generates it (kubernetes_sd `role: pod` through the API server, the selector and port kept,
  `namespace`/`pod`/`container`/`endpoint`/`job` labels, then the PodMonitor's own
  relabelings), rewritten and reloaded whenever a PodMonitor changes. It is reachable as the
  chart's Service `kube-prometheus-stack-prometheus.monitoring.svc:9090`, the address the
  AnalysisTemplates use. PrometheusRules are not loaded (no Alertmanager here).
- **cluster DNS + kube-proxy** for processes outside the cluster: scripts/cluster/service_proxy.
Every line it prints starts with what it stands in for.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from scripts.cluster.service_proxy import ServiceResolver, serve
from scripts.engines import program_path
from scripts.processes import ManagedProcess, wait_until

PROMETHEUS_SERVICE = ("monitoring", "kube-prometheus-stack-prometheus")
PROMETHEUS_PORT = 9090
MANAGED_BY = "mlops-gitops-local-addons"


def _label_name(label: str) -> str:
    """Prometheus' sanitised meta-label name of a Kubernetes label (`a.b/c-d` -> `a_b_c_d`)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _relabel(rule: dict[str, Any]) -> dict[str, Any]:
    """A PodMonitor relabeling (camelCase) as a Prometheus relabel_config (snake_case)."""
    names = {
        "sourceLabels": "source_labels",
        "targetLabel": "target_label",
        "replacement": "replacement",
        "regex": "regex",
        "separator": "separator",
        "modulus": "modulus",
        "action": "action",
    }
    out = {names[k]: v for k, v in rule.items() if k in names}
    if "action" in out:
        out["action"] = str(out["action"]).lower()
    return out


def scrape_jobs(
    monitors: list[dict[str, Any]], api_server: str, tls: dict[str, str], interval: str | None
) -> list[dict[str, Any]]:
    """Scrape jobs for `monitors`, shaped like the Prometheus Operator's for PodMonitors."""
    jobs = []
    for monitor in monitors:
        meta, spec = monitor["metadata"], monitor["spec"]
        namespaces = (spec.get("namespaceSelector") or {}).get("matchNames") or [meta["namespace"]]
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        for index, endpoint in enumerate(spec.get("podMetricsEndpoints") or []):
            relabel: list[dict[str, Any]] = [
                {
                    "source_labels": ["__meta_kubernetes_pod_phase"],
                    "regex": "(Failed|Succeeded)",
                    "action": "drop",
                },
            ]
            for key, value in sorted(selector.items()):
                name = _label_name(key)
                relabel.append(
                    {
                        "source_labels": [
                            f"__meta_kubernetes_pod_label_{name}",
                            f"__meta_kubernetes_pod_labelpresent_{name}",
                        ],
                        "regex": f"({value});true",
                        "action": "keep",
                    }
                )
            if endpoint.get("port"):
                relabel.append(
                    {
                        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                        "regex": endpoint["port"],
                        "action": "keep",
                    }
                )
            relabel += [
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {
                    "source_labels": ["__meta_kubernetes_pod_container_name"],
                    "target_label": "container",
                },
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
                {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
                {"target_label": "endpoint", "replacement": str(endpoint.get("port", ""))},
            ]
            relabel += [_relabel(rule) for rule in endpoint.get("relabelings") or []]
            job: dict[str, Any] = {
                "job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/{index}",
                "honor_labels": bool(endpoint.get("honorLabels", False)),
                "metrics_path": endpoint.get("path", "/metrics"),
                "scheme": endpoint.get("scheme", "http"),
                "kubernetes_sd_configs": [
                    {
                        "role": "pod",
                        "api_server": api_server,
                        "tls_config": tls,
                        "namespaces": {"names": namespaces},
                    }
                ],
                "relabel_configs": relabel,
            }
            scrape = interval or endpoint.get("interval")
            if scrape:
                job["scrape_interval"] = scrape
                job["scrape_timeout"] = scrape
            jobs.append(job)
    return jobs


class Monitoring:
    """The Prometheus stand-in: the server process plus the PodMonitor -> config reconciler."""

    def __init__(
        self,
        api: client.ApiClient,
        work_dir: Path,
        address: str,
        api_server: str,
        tls: dict[str, str],
        scrape_interval: str | None,
        say: Callable[[str], None],
    ) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.work_dir = work_dir
        self.address = address
        self.api_server = api_server
        self.tls = tls
        self.scrape_interval = scrape_interval
        self.say = say
        self.config_path = work_dir / "prometheus.yml"
        self.process: ManagedProcess | None = None
        self._written = ""

    def write_config(self, monitors: list[dict[str, Any]]) -> bool:
        interval = self.scrape_interval or "15s"
        document = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": scrape_jobs(
                monitors, self.api_server, self.tls, self.scrape_interval
            ),
        }
        text = json.dumps(document, indent=2)  # JSON is YAML
        if text == self._written:
            return False
        self.config_path.write_text(text)
        self._written = text
        return True

    def start(self) -> None:
        # built from its Go module (tools/engines/prometheus): Debian's build lacks kubernetes_sd
        binary = str(program_path("prometheus"))
        self.write_config(self._monitors())
        self.process = ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.work_dir / 'data'}",
                f"--web.listen-address={self.address}:{PROMETHEUS_PORT}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            self.work_dir / "prometheus.log",
            own_session=False,  # stopped with this process's group by `make cluster-down`
        )
        with socket.socket() as probe:  # another server on the address would answer our checks
            try:
                probe.bind((self.address, PROMETHEUS_PORT))
            except OSError as exc:
                raise RuntimeError(f"{self.address}:{PROMETHEUS_PORT} is taken: {exc}") from None
        self.process.start()
        url = f"http://{self.address}:{PROMETHEUS_PORT}/-/ready"
        wait_until(lambda: _ok(url), 60, "Prometheus to be ready", self.process)
        self.say(f"kube-prometheus-stack stand-in: Prometheus on {self.address}:{PROMETHEUS_PORT}")

    def _monitors(self) -> list[dict[str, Any]]:
        listing = self.custom.list_cluster_custom_object(
            "monitoring.coreos.com", "v1", "podmonitors"
        )
        return sorted(
            listing.get("items", []),
            key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]),
        )

    def reconcile_forever(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                if self.write_config(self._monitors()):
                    httpx.post(f"http://{self.address}:{PROMETHEUS_PORT}/-/reload", timeout=10)
                    self.say(
                        f"kube-prometheus-stack stand-in: config reloaded ({self.config_path})"
                    )
                stream = watch.Watch()
                for _ in stream.stream(
                    self.custom.list_cluster_custom_object,
                    "monitoring.coreos.com",
                    "v1",
                    "podmonitors",
                    timeout_seconds=60,
                ):
                    if self.write_config(self._monitors()):
                        httpx.post(f"http://{self.address}:{PROMETHEUS_PORT}/-/reload", timeout=10)
                        self.say(
                            "kube-prometheus-stack stand-in: PodMonitors changed, config reloaded"
                        )
                    if stopping.is_set():
                        stream.stop()
            except (ApiException, httpx.HTTPError, OSError) as exc:
                self.say(f"kube-prometheus-stack stand-in: {exc}; retrying")
                stopping.wait(1)

    def publish(self) -> None:
        """The chart's Service, pointing at this Prometheus (selector-less + EndpointSlice)."""
        core, discovery = client.CoreV1Api(self.api), client.DiscoveryV1Api(self.api)
        namespace, name = PROMETHEUS_SERVICE
        labels = {"app.kubernetes.io/managed-by": MANAGED_BY}
        _ensure(lambda: core.create_namespace({"metadata": {"name": namespace, "labels": labels}}))
        _ensure(
            lambda: core.create_namespaced_service(
                namespace,
                {
                    "metadata": {"name": name, "labels": labels},
                    "spec": {
                        "ports": [
                            {
                                "name": "http-web",
                                "port": PROMETHEUS_PORT,
                                "targetPort": PROMETHEUS_PORT,
                            }
                        ]
                    },
                },
            )
        )
        _ensure(
            lambda: discovery.create_namespaced_endpoint_slice(
                namespace,
                {
                    "metadata": {
                        "name": f"{name}-local",
                        "labels": {
                            "kubernetes.io/service-name": name,
                            "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                        },
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http-web", "port": PROMETHEUS_PORT, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
                },
            )
        )


def _ensure(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as exc:
        if exc.status != 409:
            raise


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.cluster.addons", description=__doc__)
    parser.add_argument(
        "--kubeconfig", required=True, help="admin kubeconfig (creates the Service)"
    )
    parser.add_argument("--prometheus-kubeconfig-ca", required=True)
    parser.add_argument("--prometheus-cert", required=True)
    parser.add_argument("--prometheus-key", required=True)
    parser.add_argument("--api-server", required=True)
    parser.add_argument("--address", required=True, help="Prometheus' address (in the pod range)")
    parser.add_argument("--proxy-port", required=True, type=int)
    parser.add_argument("--scrape-interval", default=None, help="override every PodMonitor's")
    parser.add_argument("--work-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    api = config.new_client_from_config(config_file=args.kubeconfig)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    serve(ServiceResolver(api), "127.0.0.1", args.proxy_port, say)
    say(f"cluster DNS + kube-proxy stand-in: HTTP proxy on 127.0.0.1:{args.proxy_port}")
    tls = {
        "ca_file": args.prometheus_kubeconfig_ca,
        "cert_file": args.prometheus_cert,
        "key_file": args.prometheus_key,
    }
    monitoring = Monitoring(
        api, args.work_dir, args.address, args.api_server, tls, args.scrape_interval, say
    )
    try:
        monitoring.start()
        monitoring.publish()
        say(
            "kube-prometheus-stack stand-in: ready"
            " (Service monitoring/kube-prometheus-stack-prometheus)"
        )
        threading.Thread(target=monitoring.reconcile_forever, args=(stopping,), daemon=True).start()
        while not stopping.wait(0.5):
            if monitoring.process is not None and not monitoring.process.alive():
                say(
                    "kube-prometheus-stack stand-in: Prometheus exited:\n"
                    + monitoring.process.log_tail()
                )
                return 1
    finally:
        if monitoring.process is not None:
            monitoring.process.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
