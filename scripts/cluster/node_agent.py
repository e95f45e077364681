"""The local node agent: a kubelet stand-in that runs every pod bound to its Node as local
processes. No container engine runs here, so containers run as processes, and this agent says
so in the Node it registers and in everything it prints.

What it does as a kubelet would, through the real API server and with a kubelet's identity
(`system:node:<node>`, judged by the Node authorizer and NodeRestriction):
- registers the Node, renews its Lease every 10 s and reports its status;
- for each pod scheduled to the node: gives it its own address in the pod range (routed to the
  loopback interface by `make cluster-up`; EndpointSlices refuse 127.0.0.0/8), materialises its
  volumes (emptyDir, configMap, secret, projected token/downward API) and environment
  (env, envFrom, fieldRef, resourceFieldRef, $(VAR) expansion), and starts each container's
  process image (scripts/cluster/images.py), init containers first;
- runs the startup, readiness and liveness probes (httpGet, tcpSocket, exec) and writes the
  pod's conditions and container statuses, so EndpointSlices follow readiness as in a cluster;
- restarts containers by the pod's restartPolicy with the kubelet's back-off, and ends Job pods
  as Succeeded or Failed;
- on deletion runs preStop hooks, sends SIGTERM, waits the grace period, SIGKILLs, then removes
  the pod.
What it does not do: isolate anything (no namespaces, cgroups or user switching unless it runs as
root, when it takes the pod's runAsUser/runAsGroup), enforce resource limits or NetworkPolicies,
serve logs/exec, or pull images (an image must be a process image built locally).
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from scripts.cluster.images import ProcessImage, load_image
from scripts.processes import start_ticks

RUNTIME = "local-processes://v1 (containers run as local processes; no container engine)"
LEASE_SECONDS = 40
HEARTBEAT_SECONDS = 10
STATUS_SECONDS = 60
RESYNC_SECONDS = 5
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodError(Exception):
    """The pod cannot run here (unknown image, missing ConfigMap...); its status says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AddressPool:
    """Pod addresses from the pod range: the first host address is the node's, the last 16 are
    left to the platform stand-ins (scripts/cluster/__main__.py, platform_address)."""

    def __init__(self, cidr: str) -> None:
        network = ipaddress.ip_network(cidr)
        hosts = list(network.hosts())
        self.node_ip = str(hosts[0])
        self._free = [str(ip) for ip in hosts[1:-16]]
        self._lock = threading.Lock()

    def take(self) -> str:
        with self._lock:
            if not self._free:
                raise PodError("AddressesExhausted", "no free address left in the pod range")
            return self._free.pop(0)

    def give_back(self, ip: str) -> None:
        with self._lock:
            self._free.append(ip)


@dataclass
class Probe:
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    last: float = 0.0


@dataclass
class Container:
    spec: dict[str, Any]
    image: ProcessImage
    init: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: str | None = None
    started_mono: float = 0.0
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    last_terminated: dict[str, Any] | None = None
    waiting: tuple[str, str] | None = None
    terminated: dict[str, Any] | None = None
    next_start: float = 0.0
    failed_starts: int = 0
    probes: dict[str, Probe] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class PodRuntime(threading.Thread):
    """One pod: prepares it, supervises its containers and probes, reports its status."""

    def __init__(self, agent: "Agent", pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}-{meta['name']}", daemon=True)
        self.agent = agent
        self.pod = pod
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.dir = agent.work_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid[:8]}"
        self.ip: str | None = None
        self.containers: list[Container] = []
        self.init_done = False
        self.deleting = threading.Event()
        self.stopped = threading.Event()
        self.env_cache: dict[str, dict[str, str]] = {}
        self.last_status: str = ""
        self.error: PodError | None = None

    # -- life cycle ------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._prepare()
            self.agent.say(f"pod {self.key}: address {self.ip}, containers run as processes")
            while not self.deleting.is_set():
                self._step()
                self._report()
                self.deleting.wait(0.2)
            self._terminate()
        except PodError as exc:
            self.error = exc
            self.agent.say(f"pod {self.key}: cannot run: {exc}")
            self._report()
            self.deleting.wait()
            self._terminate()
        except Exception:  # one pod's bug must not take the node down; report it
            self.agent.say(f"pod {self.key}: agent error:\n{traceback.format_exc()}")
            self.deleting.wait()
            self._terminate()
        finally:
            self.stopped.set()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod_name}"

    def _prepare(self) -> None:
        spec = self.pod["spec"]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ip = self.agent.addresses.take()
        self.volumes = self._volumes(spec.get("volumes") or [])
        for init, key in ((True, "initContainers"), (False, "containers")):
            for item in spec.get(key) or []:
                image = load_image(self.agent.images, item["image"])
                if image is None:
                    raise PodError(
                        "ErrImagePull",
                        f"image {item['image']} is not a local process image (no container"
                        f" engine here; build it with `python -m scripts.cluster image`)",
                    )
                self.containers.append(Container(item, image, init=init))
        self.init_done = not any(c.init for c in self.containers)

    # -- volumes and environment -----------------------------------------------------------

    def _volumes(self, volumes: list[dict[str, Any]]) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for volume in volumes:
            target = self.dir / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in volume:
                target.chmod(0o777)  # emptyDir is world-writable in Kubernetes too
            elif "configMap" in volume:
                self._project_config(target, volume["configMap"], secret=False)
            elif "secret" in volume:
                self._project_config(target, volume["secret"], secret=True)
            elif "projected" in volume:
                for source in volume["projected"].get("sources") or []:
                    if "configMap" in source:
                        self._project_config(target, source["configMap"], secret=False)
                    elif "secret" in source:
                        self._project_config(target, source["secret"], secret=True)
                    elif "serviceAccountToken" in source:
                        token = self.agent.token_for(self.pod, source["serviceAccountToken"])
                        _write(target / source["serviceAccountToken"]["path"], token.encode())
                    elif "downwardAPI" in source:
                        for item in source["downwardAPI"].get("items") or []:
                            value = self._field(item["fieldRef"]["fieldPath"])
                            _write(target / item["path"], value.encode())
            else:
                kinds = sorted(k for k in volume if k != "name")
                raise PodError(
                    "VolumeUnsupported", f"volume {volume['name']}: {kinds} not supported"
                )
            paths[volume["name"]] = target
        return paths

    def _project_config(self, target: Path, ref: dict[str, Any], secret: bool) -> None:
        name = ref.get("secretName") if secret else ref.get("name")
        data = self.agent.config_data(self.namespace, str(name), secret, bool(ref.get("optional")))
        items = ref.get("items")
        chosen = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
        for key, relative in chosen:
            if key not in data:
                raise PodError("CreateContainerConfigError", f"{name}: no key {key!r}")
            _write(target / relative, data[key])

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip or "",
            "status.hostIP": self.agent.addresses.node_ip,
        }
        if path in simple:
            return str(simple[path])
        for prefix, source in (
            ("metadata.labels", "labels"),
            ("metadata.annotations", "annotations"),
        ):
            if path.startswith(prefix + "['") and path.endswith("']"):
                return str((meta.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
        raise PodError("CreateContainerConfigError", f"fieldRef {path} is not supported")

    def _environment(self, container: Container) -> dict[str, str]:
        spec = container.spec
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, secret in (("configMapRef", False), ("secretRef", True)):
                if kind in source:
                    ref = source[kind]
                    data = self.agent.config_data(
                        self.namespace, ref["name"], secret, bool(ref.get("optional"))
                    )
                    env.update({prefix + k: v.decode() for k, v in data.items()})
        for item in spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = _expand(str(item["value"]), env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[item["name"]] = self._field(source["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                secret = "secretKeyRef" in source
                ref = source["secretKeyRef" if secret else "configMapKeyRef"]
                data = self.agent.config_data(
                    self.namespace, ref["name"], secret, bool(ref.get("optional"))
                )
                if ref["key"] in data:
                    env[item["name"]] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    raise PodError(
                        "CreateContainerConfigError", f"{ref['name']}: no key {ref['key']!r}"
                    )
            elif "resourceFieldRef" in source:
                resource = source["resourceFieldRef"]["resource"]
                kind, _, name = resource.partition(".")
                value = ((spec.get("resources") or {}).get(kind) or {}).get(name, "0")
                env[item["name"]] = str(value)
        return env

    def _process_env(self, container: Container) -> tuple[dict[str, str], list[str], Path]:
        """The container's environment, argv and working directory, with image and volume
        paths translated to where they are on this machine."""
        image = container.image
        mounts = {
            m["mountPath"]: str(self.volumes[m["name"]] / m.get("subPath", ""))
            for m in container.spec.get("volumeMounts") or []
            if m["name"] in self.volumes
        }

        def translate(value: str) -> str:
            if value == "0.0.0.0":  # all of a pod's interfaces = its own address
                return self.ip or value
            if not value.startswith("/"):
                return value
            for inside in sorted(mounts, key=len, reverse=True):
                if value == inside or value.startswith(inside.rstrip("/") + "/"):
                    return mounts[inside] + value[len(inside.rstrip("/")) :]
            return image.host_path(value) or value

        env = {k: v for k, v in image.env.items() if k != "PATH"}
        env.update(self._environment(container))
        path = image.env.get("PATH", "$PATH")
        env["PATH"] = (
            ":".join(
                STANDARD_PATH if part == "$PATH" else translate(part)
                for part in path.split(":")
                if part
            )
            or STANDARD_PATH
        )
        env = {k: (translate(v) if k != "PATH" else v) for k, v in env.items()}
        env.setdefault("HOSTNAME", self.pod_name)
        tmp = mounts.get("/tmp")
        env["TMPDIR"] = tmp or str(self.dir / "tmp")
        Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
        spec = container.spec
        if spec.get("command"):
            argv = list(spec["command"]) + list(spec.get("args") or [])
        else:
            argv = list(image.entrypoint) + list(spec.get("args") or image.cmd)
        argv = [translate(_expand(a, env)) for a in argv]
        if argv and "/" not in argv[0]:
            found = shutil.which(argv[0], path=env["PATH"])
            if found is None:
                raise PodError("RunContainerError", f"{argv[0]}: not found on the image's PATH")
            argv[0] = found
        workdir = Path(translate(spec.get("workingDir") or image.workdir))
        if not workdir.is_dir():
            workdir = self.dir
        return env, argv, workdir

    # -- containers ------------------------------------------------------------------------

    def _start(self, container: Container) -> None:
        env, argv, workdir = self._process_env(container)
        log = open(self.dir / f"{container.name}.log", "ab")
        user, group = self._identity(argv[0])
        try:
            container.process = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                user=user,
                group=group,
            )
        except OSError as exc:
            raise PodError("RunContainerError", f"{container.name}: {exc}") from None
        finally:
            log.close()
        container.started_at = now()
        container.started_mono = time.monotonic()
        container.waiting = None
        container.terminated = None
        container.ready = False
        container.started = "startupProbe" not in container.spec
        container.probes = {
            kind: Probe(container.spec[kind])
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if kind in container.spec
        }
        self.agent.record_process(self, container)
        self.agent.say(
            f"pod {self.key}: started {container.name} ({container.image.ref}) as pid"
            f" {container.process.pid}: {' '.join(argv)}"
        )

    def _identity(self, program: str) -> tuple[int | None, int | None]:
        """The pod's runAsUser/runAsGroup when the agent can switch to them (it runs as root)
        and that user can run the program; else the agent's own, said once per pod."""
        context = self.pod["spec"].get("securityContext") or {}
        user, group = context.get("runAsUser"), context.get("runAsGroup")
        if user is None or os.geteuid() != 0:
            return None, None
        if self.agent.can_run(program, int(user), group):
            return int(user), group
        if not getattr(self, "_identity_said", False):
            self._identity_said = True
            self.agent.say(
                f"pod {self.key}: runAsUser {user} cannot run {program} on this machine (its"
                " folders are not readable by that user); running as the agent's user instead"
            )
        return None, None

    def _step(self) -> None:
        if self.error is not None:
            return
        clock = time.monotonic()
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if not self.init_done:
            pending = [c for c in self.containers if c.init and not _succeeded(c)]
            if not pending:
                self.init_done = True
            else:
                current = pending[0]
                self._supervise(current, clock, "OnFailure" if policy == "Always" else policy)
                return
        for container in self.containers:
            if not container.init:
                self._supervise(container, clock, policy)
                self._probe(container, clock)

    def _supervise(self, container: Container, clock: float, policy: str) -> None:
        process = container.process
        if process is None:
            if container.terminated is not None and (
                policy == "Never"
                or (policy == "OnFailure" and container.terminated["exitCode"] == 0)
            ):
                return
            if clock >= container.next_start:
                try:
                    self._start(container)
                except PodError as exc:  # the kubelet retries these with its back-off too
                    # short at first: a Node authorizer that has not yet seen the pod's
                    # ConfigMaps refuses them for a moment after the pod is bound
                    container.failed_starts += 1
                    delay = min(BACKOFF_MAX, 2.0 ** (container.failed_starts - 1))
                    container.next_start = clock + delay
                    container.waiting = (exc.reason, f"{exc} (retry in {delay:.0f}s)")
                    self.agent.say(f"pod {self.key}: {container.name}: {exc}")
            return
        code = process.poll()
        if code is None:
            return
        container.terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": container.started_at,
            "finishedAt": now(),
        }
        container.process, container.ready, container.started = None, False, False
        self.agent.say(f"pod {self.key}: {container.name} exited with {code}")
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        if restart:
            container.last_terminated = container.terminated
            container.restart_count += 1
            delay = min(BACKOFF_MAX, BACKOFF_START * 2 ** (container.restart_count - 1))
            if clock - container.started_mono > 600:  # ran 10 minutes: the back-off resets
                delay = BACKOFF_START
            container.next_start = clock + delay
            container.waiting = (
                "CrashLoopBackOff",
                f"back-off {delay:.0f}s restarting {container.name}",
            )

    def _probe(self, container: Container, clock: float) -> None:
        if container.process is None:
            return
        for kind, probe in container.probes.items():
            if kind != "startupProbe" and not container.started:
                continue
            if kind == "startupProbe" and container.started:
                continue
            spec = probe.spec
            if clock - container.started_mono < spec.get("initialDelaySeconds", 0):
                continue
            if clock - probe.last < spec.get("periodSeconds", 10):
                continue
            probe.last = clock
            ok = self._check(container, spec)
            if ok:
                probe.successes, probe.failures = probe.successes + 1, 0
            else:
                probe.failures, probe.successes = probe.failures + 1, 0
            success = probe.successes >= spec.get("successThreshold", 1)
            failed = probe.failures >= spec.get("failureThreshold", 3)
            if kind == "startupProbe" and success:
                container.started = True
            elif kind == "readinessProbe":
                if success:
                    container.ready = True
                elif failed:
                    container.ready = False
            elif failed:  # liveness, or a startup probe that gave up: restart the container
                self.agent.say(f"pod {self.key}: {container.name} failed its {kind}: restarting")
                self._kill(
                    container, float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
                )
        if "readinessProbe" not in container.probes:
            container.ready = container.started

    def _check(self, container: Container, spec: dict[str, Any]) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        port_of = self._port(container)
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                scheme = str(get.get("scheme", "HTTP")).lower()
                host = get.get("host") or self.ip
                url = f"{scheme}://{host}:{port_of(get['port'])}{get.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                answer = httpx.get(url, timeout=timeout, verify=False, headers=headers)
                return 200 <= answer.status_code < 400
            if "tcpSocket" in spec:
                tcp = spec["tcpSocket"]
                with socket.create_connection(
                    (tcp.get("host") or self.ip, port_of(tcp["port"])), timeout=timeout
                ):
                    return True
            if "exec" in spec:
                env, _, workdir = self._process_env(container)
                result = subprocess.run(
                    spec["exec"]["command"],
                    env=env,
                    cwd=workdir,
                    timeout=timeout,
                    capture_output=True,
                )
                return result.returncode == 0
            if "grpc" in spec:
                return False  # not implemented: a gRPC probe never passes, visibly
        except (httpx.HTTPError, OSError, subprocess.TimeoutExpired):
            return False
        return False

    def _port(self, container: Container) -> Callable[[Any], int]:
        named = {
            p["name"]: int(p["containerPort"])
            for p in container.spec.get("ports") or []
            if "name" in p
        }

        def resolve(port: Any) -> int:
            if isinstance(port, int) or str(port).isdigit():
                return int(port)
            if port not in named:
                raise OSError(f"no container port named {port}")
            return named[port]

        return resolve

    # -- termination -----------------------------------------------------------------------

    def _kill(self, container: Container, grace: float) -> None:
        process = container.process
        if process is None or process.poll() is not None:
            return
        deadline = time.monotonic() + grace
        hook = (container.spec.get("lifecycle") or {}).get("preStop")
        if hook:
            self._pre_stop(container, hook, grace)
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.agent.say(f"pod {self.key}: {container.name} outlived its grace period: SIGKILL")
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()

    def _pre_stop(self, container: Container, hook: dict[str, Any], grace: float) -> None:
        try:
            if "sleep" in hook:
                time.sleep(min(grace, float(hook["sleep"]["seconds"])))
            elif "exec" in hook:
                env, _, workdir = self._process_env(container)
                subprocess.run(hook["exec"]["command"], env=env, cwd=workdir, timeout=grace)
            elif "httpGet" in hook:
                self._check(container, {"httpGet": hook["httpGet"], "timeoutSeconds": grace})
        except (OSError, subprocess.TimeoutExpired, PodError) as exc:
            self.agent.say(f"pod {self.key}: preStop of {container.name} failed: {exc}")

    def _terminate(self) -> None:
        grace = float(
            self.pod["metadata"].get("deletionGracePeriodSeconds")
            or self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        )
        threads = [
            threading.Thread(target=self._kill, args=(c, grace))
            for c in self.containers
            if c.process
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.agent.forget_processes(self)
        if self.ip:
            self.agent.addresses.give_back(self.ip)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- status ----------------------------------------------------------------------------

    def _report(self) -> None:
        status = self._status()
        text = json.dumps(status, sort_keys=True)
        if text == self.last_status:
            return
        if self.agent.patch_status(self.namespace, self.pod_name, self.uid, status):
            self.last_status = text

    def _status(self) -> dict[str, Any]:
        mains = [c for c in self.containers if not c.init]
        policy = self.pod["spec"].get("restartPolicy", "Always")
        phase = "Pending"
        if self.error is None and self.init_done and mains:
            if all(c.terminated and c.process is None for c in mains) and policy != "Always":
                codes = [c.terminated["exitCode"] for c in mains if c.terminated]
                phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
            elif any(c.process is not None or c.restart_count for c in mains):
                phase = "Running"
        ready = self.init_done and bool(mains) and all(c.ready for c in mains)

        def condition(kind: str, ok: bool) -> dict[str, str]:
            return {"type": kind, "status": "True" if ok else "False"}

        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": self.agent.addresses.node_ip,
            "hostIPs": [{"ip": self.agent.addresses.node_ip}],
            "startTime": self.pod["status"].get("startTime") or now(),
            "conditions": [
                condition("PodReadyToStartContainers", self.ip is not None),
                condition("Initialized", self.init_done),
                condition("ContainersReady", ready),
                condition("Ready", ready),
                condition("PodScheduled", True),
            ],
            "containerStatuses": [self._container_status(c) for c in mains],
        }
        if self.ip:
            status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
        inits = [self._container_status(c) for c in self.containers if c.init]
        if inits:
            status["initContainerStatuses"] = inits
        if self.error is not None:
            status["message"] = str(self.error)
        return status

    def _container_status(self, container: Container) -> dict[str, Any]:
        state: dict[str, Any]
        if self.error is not None:
            state = {"waiting": {"reason": self.error.reason, "message": str(self.error)}}
        elif container.process is not None:
            state = {"running": {"startedAt": container.started_at}}
        elif container.waiting is not None:
            state = {"waiting": {"reason": container.waiting[0], "message": container.waiting[1]}}
        elif container.terminated is not None:
            state = {"terminated": container.terminated}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        status: dict[str, Any] = {
            "name": container.name,
            "image": container.spec["image"],
            "imageID": f"local-process://{container.image.ref}",
            "containerID": f"process://{container.process.pid}" if container.process else None,
            "ready": container.ready,
            "started": container.started,
            "restartCount": container.restart_count,
            "state": state,
        }
        if container.last_terminated:
            status["lastState"] = {"terminated": container.last_terminated}
        return {k: v for k, v in status.items() if v is not None}


def _succeeded(container: Container) -> bool:
    return (
        container.terminated is not None
        and container.terminated["exitCode"] == 0
        and container.process is None
    )


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a known name is replaced, $$ escapes, the rest stays."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and ")" in text[i:]:
            end = text.index(")", i)
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


class Agent:
    """Registers the node, keeps its lease, and runs a PodRuntime per pod bound to it."""

    def __init__(
        self,
        api: client.ApiClient,
        node_name: str,
        pod_cidr: str,
        images: Path,
        work_dir: Path,
        say: Callable[[str], None],
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.node_name = node_name
        self.pod_cidr = pod_cidr
        self.addresses = AddressPool(pod_cidr)
        self.images = images
        self.work_dir = work_dir
        self._say = say
        self.pods: dict[str, PodRuntime] = {}
        self.stopping = threading.Event()
        self._records: dict[str, dict[str, Any]] = {}
        self._records_lock = threading.Lock()
        self._handle_lock = threading.Lock()
        self._runnable: dict[tuple[str, int, int | None], bool] = {}

    def say(self, text: str) -> None:
        self._say(f"node-agent: {text}")

    def can_run(self, program: str, user: int, group: int | None) -> bool:
        key = (program, user, group)
        if key not in self._runnable:
            try:
                result = subprocess.run(
                    [program, "--version"], user=user, group=group, capture_output=True, timeout=30
                )
                self._runnable[key] = result.returncode == 0
            except (OSError, subprocess.SubprocessError):
                self._runnable[key] = False
        return self._runnable[key]

    # -- node ------------------------------------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        # The agent enforces no requests or limits, so the node offers the scheduler room for a
        # few apps side by side (NODE_CPU, default 16), as a small cluster would, rather than
        # this machine's 2 cores: four canaries of three 250m pods would not fit in 2.
        cpus = os.environ.get("NODE_CPU", "16")
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki"
        capacity = {"cpu": cpus, "memory": memory, "pods": "110", "ephemeral-storage": "100Gi"}
        stamp = now()

        def ok(kind: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": kind,
                "status": "True" if kind == "Ready" else "False",
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": self._started,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": self.addresses.node_ip},
                {"type": "Hostname", "address": self.node_name},
            ],
            "conditions": [
                ok("MemoryPressure", "KubeletHasSufficientMemory", "no memory pressure"),
                ok("DiskPressure", "KubeletHasNoDiskPressure", "no disk pressure"),
                ok("PIDPressure", "KubeletHasSufficientPID", "no PID pressure"),
                ok("Ready", "KubeletReady", f"node agent ready: {RUNTIME}"),
            ],
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "containerRuntimeVersion": RUNTIME,
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        }

    def register(self) -> None:
        self._started = now()
        self.kubelet_version = client.VersionApi(self.api).get_code().git_version
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "local-processes",
                },
                "annotations": {"mlops.example.com/runtime": RUNTIME},
            },
            "spec": {"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]},
        }
        try:
            self.core.create_node(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.core.patch_node_status(self.node_name, {"status": self.node_status()})
        self.say(f"registered node {self.node_name} ({RUNTIME}), pod range {self.pod_cidr}")

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= STATUS_SECONDS:
                    self.core.patch_node_status(self.node_name, {"status": self.node_status()})
                    last_status = time.monotonic()
            except ApiException as exc:
                self.say(f"heartbeat failed: {exc.status} {exc.reason}")

    def _renew_lease(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": stamp,
            },
        }
        try:
            self.coordination.patch_namespaced_lease(self.node_name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    # -- what pods need from the API ---------------------------------------------------------

    def config_data(
        self, namespace: str, name: str, secret: bool, optional: bool
    ) -> dict[str, bytes]:
        try:
            if secret:
                obj = self.core.read_namespaced_secret(name, namespace)
                return {k: base64.b64decode(v) for k, v in (obj.data or {}).items()}
            cm = self.core.read_namespaced_config_map(name, namespace)
            return {k: v.encode() for k, v in (cm.data or {}).items()}
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            kind = "secret" if secret else "configmap"
            raise PodError("CreateContainerConfigError", f"{kind} {name!r}: {exc.reason}") from None

    def token_for(self, pod: dict[str, Any], source: dict[str, Any]) -> str:
        meta, spec = pod["metadata"], pod["spec"]
        request = {
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else None,
                "expirationSeconds": source.get("expirationSeconds", 3600),
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        answer = self.core.create_namespaced_service_account_token(
            spec.get("serviceAccountName", "default"), meta["namespace"], request
        )
        return str(answer.status.token)

    def patch_status(self, namespace: str, name: str, uid: str, status: dict[str, Any]) -> bool:
        try:
            self.core.patch_namespaced_pod_status(
                name, namespace, {"metadata": {"uid": uid}, "status": status}
            )
            return True
        except ApiException as exc:
            if exc.status not in (404, 409, 422):
                self.say(f"pod {namespace}/{name}: status update failed: {exc.status} {exc.reason}")
            return False

    # -- processes on record (so cluster-down can stop them even if the agent died) -----------

    def record_process(self, pod: PodRuntime, container: Container) -> None:
        assert container.process is not None
        pid = container.process.pid
        with self._records_lock:
            self._records[f"{pod.uid}/{container.name}"] = {
                "name": f"{pod.key}/{container.name}",
                "pid": pid,
                "ticks": start_ticks(pid) or 0,
                "log": str(pod.dir / f"{container.name}.log"),
            }
            self._write_records()

    def forget_processes(self, pod: PodRuntime) -> None:
        with self._records_lock:
            for key in [k for k in self._records if k.startswith(pod.uid + "/")]:
                del self._records[key]
            self._write_records()

    def _write_records(self) -> None:
        path = self.work_dir / "processes.json"
        path.write_text(json.dumps(list(self._records.values()), indent=2) + "\n")

    # -- pods --------------------------------------------------------------------------------

    def handle(self, event: str, pod: dict[str, Any]) -> None:
        with self._handle_lock:  # the watch and the resync both hand pods in
            self._handle(event, pod)

    def _handle(self, event: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        runtime = self.pods.get(uid)
        if event == "DELETED":
            if runtime is not None and not runtime.deleting.is_set():
                runtime.deleting.set()
                threading.Thread(target=self._forget, args=(runtime,), daemon=True).start()
            return
        if runtime is None:
            if pod["metadata"].get("deletionTimestamp") and not pod.get("status", {}).get("podIP"):
                self._remove(pod)  # deleted before it ever ran here
                return
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                return
            runtime = PodRuntime(self, pod)
            self.pods[uid] = runtime
            runtime.start()
            return
        runtime.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            if not runtime.deleting.is_set():
                runtime.deleting.set()
                threading.Thread(target=self._finish, args=(runtime,), daemon=True).start()

    def _forget(self, runtime: PodRuntime) -> None:
        runtime.stopped.wait()
        self.pods.pop(runtime.uid, None)

    def _finish(self, runtime: PodRuntime) -> None:
        runtime.stopped.wait()
        self._remove(runtime.pod)
        self.pods.pop(runtime.uid, None)

    def _remove(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
            self.say(f"pod {meta['namespace']}/{meta['name']}: terminated and removed")
        except ApiException as exc:
            if exc.status not in (404, 409):
                self.say(f"pod {meta['namespace']}/{meta['name']}: removal failed: {exc.reason}")

    def watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for item in listing.items:
                    self.handle("ADDED", self.api.sanitize_for_serialization(item))
                stream = watch.Watch()
                for event in stream.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    allow_watch_bookmarks=True,
                    # the server ends each watch after 30 s and we list again, as the kubelet
                    # resyncs; a stream that stalls without ending (seen here under load) is
                    # given up by the client's read timeout, so no pod waits for it
                    timeout_seconds=30,
                    _request_timeout=(10, 60),
                ):
                    if event["type"] == "BOOKMARK":
                        continue
                    if self.stopping.is_set():
                        stream.stop()
                        break
                    pod = self.api.sanitize_for_serialization(event["object"])
                    self.handle(event["type"], pod)
            except ApiException as exc:
                if exc.status != 410:  # 410: the watch expired; list again
                    self.say(f"pod watch failed: {exc.status} {exc.reason}; retrying")
                    self.stopping.wait(1)
            except Exception as exc:  # connection reset while the API server restarts
                self.say(f"pod watch interrupted: {exc}; retrying")
                self.stopping.wait(1)

    def resync(self) -> None:
        """Every RESYNC_SECONDS, list this node's pods and handle what the watch did not
        deliver: the kubelet resyncs too, and under load a watch here has stayed open while a
        newly bound pod never came through it."""
        selector = f"spec.nodeName={self.node_name}"
        while not self.stopping.wait(RESYNC_SECONDS):
            try:
                listing = self.core.list_pod_for_all_namespaces(
                    field_selector=selector, _request_timeout=(10, 30)
                )
            except Exception as exc:  # the next round tries again
                self.say(f"resync failed: {exc}")
                continue
            for item in listing.items:
                pod = self.api.sanitize_for_serialization(item)
                runtime = self.pods.get(pod["metadata"]["uid"])
                deleting = bool(pod["metadata"].get("deletionTimestamp"))
                if runtime is None or (deleting and not runtime.deleting.is_set()):
                    self.handle("MODIFIED" if runtime else "ADDED", pod)

    def shutdown(self) -> None:
        """Stop every pod's processes (the Node and pods stay in the API, as after a crash)."""
        self.stopping.set()
        for runtime in list(self.pods.values()):
            runtime.deleting.set()
        for runtime in list(self.pods.values()):
            runtime.stopped.wait(60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.cluster.node_agent", description=__doc__
    )
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--pod-cidr", required=True)
    parser.add_argument("--images", required=True, type=Path, help="folder of process images")
    parser.add_argument("--work-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    api = config.new_client_from_config(config_file=args.kubeconfig)

    def say(text: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]} {text}", flush=True)

    agent = Agent(api, args.node_name, args.pod_cidr, args.images, args.work_dir, say)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    agent.register()
    agent._renew_lease()
    threading.Thread(target=agent.heartbeat, daemon=True).start()
    watcher = threading.Thread(target=agent.watch_pods, daemon=True)
    watcher.start()
    threading.Thread(target=agent.resync, daemon=True).start()
    while not agent.stopping.wait(0.5):
        pass
    agent.say("stopping: terminating every pod's processes")
    agent.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
