"""`make bench-serving`: the exported model served by this service and by peer servers, same load.

One server at a time on loopback, one worker each, the same wrk load (one thread) for all:
single-row requests at several concurrencies and 64-row batches (JSON, and Triton's binary
tensors on v2), for ``--passes`` passes interleaved across servers (a noisy machine hits every
server alike), reporting medians with the spread of the passes. Beside the model servers: the
same application under uvicorn and granian, and three HTTP ceilings answering a constant (this
service's own HTTP layer, nginx, and a bare ASGI app under uvicorn). Peers (``mlflow models
serve``, MLServer + its MLflow runtime, KServe's ModelServer) run from their own venv
(.bench/peers-venv, tools/serving-peers/requirements.txt); nginx is Debian's binary unpacked into
.bench/nginx (not installed: no daemon is started). A server that cannot be installed or
started is reported as such in the table, never silently dropped. Each server's answers are
checked against onnxruntime before it is timed, so a fast wrong server cannot win.

After the loads: the attack corpus (scripts/serving_attacks.py) against this service under each
of its HTTP servers, with the health endpoint probed from another process and the resident
memory sampled; and a drain measurement (SIGTERM under wrk load: requests lost).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scripts.processes import ManagedProcess, ProcessError, free_port, wait_until
from scripts.serving_attacks import (
    ATTACK_ENV,
    CASES,
    Case,
    HealthProbe,
    Limits,
    Outcome,
    RssSampler,
    Target,
    run_cases,
)

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO / "tools" / "serving-peers"
PEER_REQUIREMENTS = PEERS_DIR / "requirements.txt"
MODEL_NAME = "digits-classifier"
PEERS = ("mlflow", "mlserver", "kserve")
CEILINGS = ("own-constant", "nginx-constant", "bare-asgi")
OURS = (
    "ml-serving",
    "ml-serving-v2",
    "ml-serving-v2-binary",
    "ml-serving-uvicorn",
    "ml-serving-granian",
)
ALL_SERVERS = (*OURS, *CEILINGS, *PEERS)
TARGET_SCENARIO = "c64"
CONSTANT_ANSWER = b'{"predictions":[0]}'
NGINX_DIR = REPO / ".bench" / "nginx"

_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
    .. '"errors":%d,"status_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status, e.status))
end
"""


# -- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    rows: int


@dataclass
class LoadResult:
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class ServerResult:
    name: str
    description: str
    available: bool = True
    reason: str = ""
    cold_start_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    loads: dict[str, list[LoadResult]] = field(default_factory=dict)

    def median(self, scenario: str, metric: str) -> float:
        values = [getattr(r, metric) for r in self.loads.get(scenario, [])]
        return float(statistics.median(values)) if values else float("nan")

    def spread(self, scenario: str, metric: str) -> tuple[float, float]:
        """(lowest, highest) over the passes."""
        values = [getattr(r, metric) for r in self.loads.get(scenario, [])]
        return (min(values), max(values)) if values else (float("nan"), float("nan"))

    def total_errors(self) -> int:
        return sum(r.errors for runs in self.loads.values() for r in runs)


# -- the servers ------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    """How to start one server and talk to it."""

    name: str
    description: str
    argv: list[str]
    path: str  # inference path, e.g. /predict
    encode: Callable[[np.ndarray], bytes]
    labels: Callable[[bytes], list[int]] | None  # from the answer; None: a constant answer
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    headers: Callable[[np.ndarray], dict[str, str]] = lambda rows: {}
    # which loads it takes: the ceilings and alternative servers skip the secondary ones
    takes: Callable[[Scenario], bool] = lambda scenario: True


def instances(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": rows.tolist()}).encode()


def v2_body(rows: np.ndarray, parameters: dict[str, Any] | None = None) -> bytes:
    tensor: dict[str, Any] = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "data": rows.reshape(-1).tolist(),
    }
    body: dict[str, Any] = {"inputs": [tensor]}
    if parameters is not None:  # MLServer's MLflow runtime: decode to {"input": ndarray}
        tensor["parameters"] = {"content_type": "np"}
        body["parameters"] = parameters
    return json.dumps(body).encode()


def v2_labels(payload: bytes) -> list[int]:
    label = next(o for o in json.loads(payload)["outputs"] if o["name"] == "label")
    return [int(v) for v in np.asarray(label["data"]).reshape(-1)]


def predict_labels(payload: bytes) -> list[int]:
    return [int(v) for v in json.loads(payload)["predictions"]]


def binary_body(rows: np.ndarray) -> bytes:
    """Triton's binary tensor extension, as tritonclient sends it with its defaults."""
    return _binary_header(rows) + rows.astype("<f4").tobytes()


def _binary_header(rows: np.ndarray) -> bytes:
    tensor = {
        "name": "input",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": rows.size * 4},
    }
    return json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()


def binary_headers(rows: np.ndarray) -> dict[str, str]:
    return {"Inference-Header-Content-Length": str(len(_binary_header(rows)))}


def binary_labels(payload: bytes) -> list[int]:
    """The raw INT64 labels after the answer's JSON part."""
    text = payload.decode("latin-1")
    document, end = json.JSONDecoder().raw_decode(text)
    offset = end
    for output in document["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "label":
            return [int(v) for v in np.frombuffer(payload[offset : offset + size], dtype="<i8")]
        offset += size
    raise ValueError("no label output")


def _main_loads(scenario: Scenario) -> bool:
    return scenario.name == TARGET_SCENARIO or scenario.rows > 1


def _ceiling_loads(scenario: Scenario) -> bool:
    return scenario.name == TARGET_SCENARIO


def specs(
    model: Path,
    port: int,
    peers_python: Path,
    mlflow_model: Path | None,
    server_env: dict[str, str] | None = None,
) -> list[ServerSpec]:
    python = sys.executable
    # --server-env settings apply to this service only (e.g. INFERENCE_THREADS=1)
    ours_env = {
        **(server_env or {}),
        "MODEL_URI": str(model),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    peers_bin = str(peers_python.parent)
    peer_env = {"PATH": f"{peers_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_dir = str(mlflow_model) if mlflow_model else ""
    return [
        ServerSpec(
            "ml-serving",
            "this service, POST /predict (metrics, validation, every limit on, JSON logs)",
            [python, "-m", "ml.serving"],
            "/predict",
            instances,
            predict_labels,
            ours_env,
        ),
        ServerSpec(
            "ml-serving-v2",
            "this service, POST /v2/models/<name>/infer (Open Inference Protocol, JSON)",
            [python, "-m", "ml.serving"],
            f"/v2/models/{MODEL_NAME}/infer",
            v2_body,
            v2_labels,
            ours_env,
        ),
        ServerSpec(
            "ml-serving-v2-binary",
            "this service, v2 infer with Triton's binary tensors in and out",
            [python, "-m", "ml.serving"],
            f"/v2/models/{MODEL_NAME}/infer",
            binary_body,
            binary_labels,
            ours_env,
            headers=binary_headers,
            takes=_main_loads,
        ),
        ServerSpec(
            "ml-serving-uvicorn",
            "this service, POST /predict, under uvicorn instead of its own HTTP layer",
            [python, "-m", "ml.serving"],
            "/predict",
            instances,
            predict_labels,
            {**ours_env, "HTTP_SERVER": "uvicorn"},
            takes=_main_loads,
        ),
        ServerSpec(
            "ml-serving-granian",
            "this service, POST /predict, under granian (embedded, one process)",
            [python, "-m", "ml.serving"],
            "/predict",
            instances,
            predict_labels,
            {**ours_env, "HTTP_SERVER": "granian"},
            takes=_main_loads,
        ),
        ServerSpec(
            "own-constant",
            "a constant answer from this service's own HTTP layer (its ceiling)",
            [
                python,
                "-c",
                f"from scripts.bench_serving import serve_constant; serve_constant({port})",
            ],
            "/predict",
            instances,
            None,
            takes=_ceiling_loads,
        ),
        ServerSpec(
            "nginx-constant",
            "nginx 1.22 answering a constant, one worker (the limit of HTTP/1.1 on this loopback)",
            [str(NGINX_DIR / "usr" / "sbin" / "nginx"), "-c", "nginx.conf", "-p", "."],
            "/predict",
            instances,
            None,
            takes=_ceiling_loads,
        ),
        ServerSpec(
            "bare-asgi",
            "a constant answer from a bare ASGI app under uvicorn (uvicorn's ceiling)",
            [
                python,
                "-m",
                "uvicorn",
                "scripts.bench_serving:bare_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            "/predict",
            instances,
            None,
            takes=_ceiling_loads,
        ),
        ServerSpec(
            "mlflow",
            "mlflow models serve -w 1 --env-manager local (the registered model)",
            [
                str(peers_python.parent / "mlflow"),
                "models",
                "serve",
                "-m",
                mlflow_dir,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
                "--env-manager",
                "local",
            ],
            "/invocations",
            lambda rows: json.dumps({"inputs": rows.tolist()}).encode(),
            lambda payload: [int(v) for v in json.loads(payload)["predictions"]["label"]],
            peer_env,
        ),
        ServerSpec(
            "mlserver",
            "MLServer + MLflow runtime, parallel_workers=0 (its fastest setting)",
            [str(peers_python.parent / "mlserver"), "start", "."],
            f"/v2/models/{MODEL_NAME}/infer",
            lambda rows: v2_body(rows, {"content_type": "dict"}),
            v2_labels,
            peer_env,
        ),
        ServerSpec(
            "kserve",
            "KServe ModelServer, v1 protocol, 1 worker, onnxruntime predictor",
            [str(peers_python), str(PEERS_DIR / "kserve_server.py"), str(model), str(port)],
            f"/v1/models/{MODEL_NAME}:predict",
            instances,
            predict_labels,
            peer_env,
        ),
    ]


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The HTTP ceiling: read the body, answer a constant."""
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    body = b'{"predictions":[0]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"19")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ConstantService:
    """The own-layer ceiling: http.py with every limit on, answering a constant."""

    def __init__(self, config: Any) -> None:
        from ml.serving.app import BodyLimit

        self.config = config
        self.body_limit = BodyLimit(config.max_body_bytes)
        self._reply: Any = None

    def dispatch(self, method: str, path: str, headers: Any, body: bytes) -> Any:
        return self._reply

    def log_startup(self) -> None:
        pass

    def log_shutdown(self) -> None:
        pass


def serve_constant(port: int) -> None:
    from ml.serving.app import Reply
    from ml.serving.config import ServingConfig
    from ml.serving.http import HttpServer

    config = ServingConfig(host="127.0.0.1", port=port)
    service = _ConstantService(config)
    service._reply = Reply(200, CONSTANT_ANSWER)
    HttpServer(service, config).run()


def ensure_nginx(install: bool) -> tuple[Path | None, str]:
    """Debian's nginx binary unpacked into .bench/nginx (apt-get download + dpkg-deb -x: nothing
    installed, no maintainer script run, no daemon started). -> (binary, "") or (None, why)."""
    binary = NGINX_DIR / "usr" / "sbin" / "nginx"
    if not binary.exists():
        if not install:
            return None, f"not unpacked ({NGINX_DIR} missing; run without --no-install)"
        download = NGINX_DIR.parent / "nginx-deb"
        download.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run(
            ["apt-get", "download", "nginx"], cwd=download, capture_output=True, text=True
        )
        debs = sorted(download.glob("nginx_*.deb"))
        if fetched.returncode != 0 or not debs:
            return None, f"apt-get download nginx failed: {fetched.stderr.strip()[-200:]}"
        unpacked = subprocess.run(
            ["dpkg-deb", "-x", str(debs[-1]), str(NGINX_DIR)], capture_output=True, text=True
        )
        if unpacked.returncode != 0:
            return None, f"dpkg-deb -x failed: {unpacked.stderr.strip()[-200:]}"
    version = subprocess.run([str(binary), "-v"], capture_output=True, text=True)
    if version.returncode != 0:
        return None, f"nginx does not run here: {version.stderr.strip()[-200:]}"
    return binary, ""


def write_nginx_config(directory: Path, port: int) -> None:
    """One worker, no master, no access log, a constant answer; every path inside ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = "\n".join(
        f"  {kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (directory / "nginx.conf").write_text(f"""worker_processes 1;
daemon off;
master_process off;
error_log stderr warn;
pid {directory / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
{temp}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{CONSTANT_ANSWER.decode()}';
    }}
  }}
}}
""")


def write_mlserver_config(directory: Path, port: int, mlflow_model: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "parallel_workers": 0,
        "debug": False,
    }
    model_settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": str(mlflow_model)},
    }
    (directory / "settings.json").write_text(json.dumps(settings))
    (directory / "model-settings.json").write_text(json.dumps(model_settings))


# -- process and load plumbing ----------------------------------------------------------------


def post(
    url: str, body: bytes, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def start_server(
    spec: ServerSpec,
    url: str,
    body: bytes,
    timeout: float,
    log: Path,
    headers: dict[str, str] | None = None,
) -> tuple[ManagedProcess, float]:
    """Start the server in its own session; -> (process, seconds to first 2xx inference)."""

    def answers() -> bool:
        try:
            status, _ = post(url, body, timeout=2.0, headers=headers)
        except OSError:
            return False
        return 200 <= status < 300

    log.unlink(missing_ok=True)
    process = ManagedProcess(spec.name, spec.argv, log, {**os.environ, **spec.env}, spec.cwd)
    started = time.perf_counter()
    process.start()
    try:
        wait_until(answers, timeout, "a successful inference", process, poll=0.005)
    except ProcessError:
        stop_server(process)
        raise
    return process, time.perf_counter() - started


def stop_server(process: ManagedProcess) -> None:
    """The server's whole session (it may have spawned workers): SIGTERM, then SIGKILL."""
    process.stop(grace_seconds=15.0, group=True)


def resident_mb(pid: int) -> float:
    """Resident memory of the process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in processes)) / 2**20
    except psutil.Error:
        return float("nan")


def run_wrk(
    url: str,
    body: bytes,
    concurrency: int,
    seconds: float,
    workdir: Path,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    body_file = workdir / f"body-{hashlib.sha256(body).hexdigest()[:16]}.json"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        + extra
        + f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        + _WRK_DONE
    )
    argv = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in result.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    per_s = data["requests"] / (data["duration_us"] / 1e6)
    return LoadResult(
        requests_per_s=per_s,
        rows_per_s=0.0,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=int(data["errors"]),
    )


# -- peers' venv ------------------------------------------------------------------------------


def ensure_peers_venv(venv: Path, install: bool) -> tuple[Path | None, str]:
    """-> (python of the peers' venv, "") or (None, why it is unavailable)."""
    python = venv / "bin" / "python"
    stamp = venv / ".requirements-sha256"
    want = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python, ""
    if not install:
        return None, f"not installed ({venv} missing or stale; run without --no-install)"
    print(f"bench: installing peer servers into {venv} (once; a few minutes)", flush=True)
    log = venv.parent / "peers-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as sink:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                "-r",
                str(PEER_REQUIREMENTS),
            ],
        ]
        for step in steps:
            if subprocess.run(step, stdout=sink, stderr=subprocess.STDOUT).returncode != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                return None, f"cannot be installed here: {' | '.join(tail)}"
    stamp.write_text(want)
    return python, ""


def prepare_mlflow_model(python: Path, model: Path, registration: Path | None, dest: Path) -> Path:
    """The registered model's MLflow directory (or the ONNX file saved as one) for the peers."""
    argv = [str(python), str(PEERS_DIR / "prepare_mlflow_model.py"), str(model), str(dest)]
    env = dict(os.environ)
    if registration is not None and registration.is_file():
        record = json.loads(registration.read_text())
        if record.get("model_uri"):
            argv.append(str(record["model_uri"]))
            env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlflow.db'}")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"preparing the MLflow model failed: {result.stderr[-500:]}")
    return Path(json.loads(result.stdout.strip().splitlines()[-1])["path"])


# -- the run ----------------------------------------------------------------------------------


def scenarios(
    concurrency: Sequence[int], batch_concurrency: int, batch_rows: int
) -> list[Scenario]:
    found = [Scenario(f"c{c}", c, 1) for c in concurrency]
    if batch_concurrency > 0:
        found.append(
            Scenario(f"batch{batch_rows}-c{batch_concurrency}", batch_concurrency, batch_rows)
        )
    return found


def load_rows(test_split: Path, count: int) -> np.ndarray:
    if test_split.is_file():
        with np.load(test_split) as data:
            rows = np.asarray(data["X"], dtype=np.float32)
    else:  # synthetic digits-like pixels when the pipeline has not run
        rows = np.random.default_rng(0).integers(0, 17, size=(count, 64)).astype(np.float32)
    return np.resize(rows, (count, rows.shape[1])).astype(np.float32)


def expected_labels(model: Path, rows: np.ndarray) -> list[int]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _, labels = session.run(["probabilities", "label"], {"input": rows})
    return [int(v) for v in labels]


def request_costs(model: Path, rows: np.ndarray, repeats: int = 300) -> dict[str, float]:
    """Where one /predict request of `rows` spends its time inside this service, in process
    (median microseconds of `repeats`): decoding the JSON body, onnxruntime, encoding the answer.
    The onnxruntime share is what no HTTP layer can save: every peer runs the same model in the
    same runtime, so it bounds the batch ratio against them."""
    from ml.serving.codec import decode_predict, encode_predict
    from ml.serving.model import load_model

    loaded = load_model(str(model))
    body = instances(rows)
    decoded = decode_predict(body, loaded, len(rows))
    probabilities, labels = loaded.predict(decoded)

    def median_us(step: Callable[[], object]) -> float:
        for _ in range(repeats // 10):  # warm caches and onnxruntime's arena first
            step()
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1e6

    costs = {
        "decode_us": median_us(lambda: decode_predict(body, loaded, len(rows))),
        "onnxruntime_us": median_us(lambda: loaded.predict(decoded)),
        "encode_us": median_us(lambda: encode_predict(loaded, probabilities, labels)),
    }
    costs["onnxruntime_share"] = costs["onnxruntime_us"] / sum(costs.values())
    costs["decode_two_threads_speedup"] = two_thread_speedup(
        lambda: decode_predict(body, loaded, len(rows)), repeats
    )
    return costs


def two_thread_speedup(step: Callable[[], object], calls: int) -> float:
    """How much faster `2 * calls` steps finish on two threads than on one: ~2 when the step
    releases the GIL (the native decoder of large bodies), ~1 or less when it holds it."""
    import threading

    def run(count: int) -> None:
        for _ in range(count):
            step()

    started = time.perf_counter()
    run(2 * calls)
    alone = time.perf_counter() - started
    threads = [threading.Thread(target=run, args=(calls,)) for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return alone / (time.perf_counter() - started)


def render_costs(rows: int, costs: dict[str, float]) -> str:
    return (
        f"One {rows}-row /predict request in process (medians): decode "
        f"{costs['decode_us']:.0f} us, onnxruntime {costs['onnxruntime_us']:.0f} us, encode "
        f"{costs['encode_us']:.0f} us; onnxruntime {costs['onnxruntime_share']:.0%} of it."
        f" Decoding from two threads at once: {costs['decode_two_threads_speedup']:.2f}x one."
    )


def check_answers(spec: ServerSpec, url: str, rows: np.ndarray, expected: list[int]) -> None:
    status, payload = post(url, spec.encode(rows), headers=spec.headers(rows))
    if not 200 <= status < 300:
        raise RuntimeError(f"answered {status}: {payload[:300]!r}")
    if spec.labels is not None:
        got = spec.labels(payload)
        if got != expected:
            raise RuntimeError(f"wrong labels: {got[:8]} vs onnxruntime's {expected[:8]}")
    elif payload != CONSTANT_ANSWER:
        raise RuntimeError(f"not the constant answer: {payload[:100]!r}")


def start_one(
    spec: ServerSpec, port: int, rows: np.ndarray, expected: list[int], workdir: Path
) -> tuple[ManagedProcess, float]:
    """Start a server, check its single-row answer: -> (process, cold start in seconds)."""
    url = f"http://127.0.0.1:{port}{spec.path}"
    one = rows[:1]
    process, cold_start = start_server(
        spec, url, spec.encode(one), 120.0, workdir / f"{spec.name}.log", spec.headers(one)
    )
    try:
        check_answers(spec, url, one, expected[:1])
    except RuntimeError:
        stop_server(process)
        raise
    return process, cold_start


def measure_load(
    spec: ServerSpec,
    port: int,
    scenario: Scenario,
    rows: np.ndarray,
    expected: list[int],
    seconds: float,
    workdir: Path,
) -> LoadResult:
    url = f"http://127.0.0.1:{port}{spec.path}"
    batch = rows[: scenario.rows]
    check_answers(spec, url, batch, expected[: scenario.rows])
    measured = run_wrk(
        url, spec.encode(batch), scenario.concurrency, seconds, workdir, spec.headers(batch)
    )
    measured.rows_per_s = measured.requests_per_s * scenario.rows
    print(
        f"bench: {spec.name:20s} {scenario.name:12s} {measured.requests_per_s:9.0f} req/s"
        f"  p99 {measured.p99_ms:8.2f} ms  errors {measured.errors}",
        flush=True,
    )
    return measured


def run_pass(
    number: int,
    chosen: list[str],
    all_specs: dict[str, ServerSpec],
    ports: dict[str, int],
    results: dict[str, ServerResult],
    plan: list[Scenario],
    rows: np.ndarray,
    expected: list[int],
    seconds: float,
    workdir: Path,
) -> None:
    """Every server up at once on its own port, then each load on each server in turn (the
    order reversed every other pass): a server's numbers and its peers' are taken minutes apart
    at most, so a machine whose load drifts skews the ratios of one pass, not of the run."""
    processes: dict[str, ManagedProcess] = {}
    peaks: dict[str, float] = {}

    def fail(name: str, exc: Exception) -> None:
        reason = " ".join(f"failed: {exc}".split())[:300].replace("|", "/")
        results[name].available, results[name].reason = False, reason
        print(f"bench: {name} {reason}", flush=True)

    try:
        for name in chosen:
            if not results[name].available:
                continue
            try:
                process, cold = start_one(all_specs[name], ports[name], rows, expected, workdir)
            except RuntimeError as exc:
                fail(name, exc)
                continue
            processes[name] = process
            results[name].cold_start_s.append(cold)
            peaks[name] = resident_mb(process.popen.pid)
        order = list(processes) if number % 2 else list(reversed(processes))
        for scenario in plan:
            for name in order:
                spec = all_specs[name]
                if not results[name].available or not spec.takes(scenario):
                    continue
                try:
                    measured = measure_load(
                        spec, ports[name], scenario, rows, expected, seconds, workdir
                    )
                except RuntimeError as exc:
                    fail(name, exc)
                    continue
                results[name].loads.setdefault(scenario.name, []).append(measured)
                peaks[name] = max(peaks[name], resident_mb(processes[name].popen.pid))
        for name in processes:
            results[name].rss_mb.append(peaks[name])
    finally:
        for process in processes.values():
            stop_server(process)


def evaluate_targets(
    results: dict[str, ServerResult],
    batch: str | None,
    attacks: dict[str, AttackRun] | None = None,
) -> list[dict[str, Any]]:
    """The issue's targets, for this service's endpoints against the fastest peer. Ratios are
    paired by pass (each pass's numbers were taken together) and reported as the median of the
    passes' ratios with their range."""
    ours = results.get("ml-serving")
    peers = [results[p] for p in PEERS if p in results and results[p].loads.get(TARGET_SCENARIO)]
    checks: list[dict[str, Any]] = []
    if ours is None or not ours.loads.get(TARGET_SCENARIO):
        return checks
    if peers:
        best = max(peers, key=lambda r: r.median(TARGET_SCENARIO, "requests_per_s"))
        fastest = _fastest_per_pass(peers, TARGET_SCENARIO, "requests_per_s")
        for name, endpoint in (("ml-serving", "/predict"), ("ml-serving-v2", "v2 infer")):
            server = results.get(name)
            if server is not None and server.loads.get(TARGET_SCENARIO):
                checks.append(
                    _ratio_check(
                        f"c=64 {endpoint} req/s vs fastest peer ({best.name})",
                        _per_pass(server, TARGET_SCENARIO, "requests_per_s"),
                        fastest,
                        8.0,
                    )
                )
        p99 = ours.median(TARGET_SCENARIO, "p99_ms")
        checks.append(
            _check(
                f"c=64 p99 vs {best.name}'s",
                p99 / best.median(TARGET_SCENARIO, "p99_ms"),
                "<=",
                0.2,
            )
        )
        batch_peers = [r for r in peers if r.loads.get(batch or "")]
        if batch is not None and ours.loads.get(batch) and batch_peers:
            best_batch = max(batch_peers, key=lambda r: r.median(batch, "rows_per_s"))
            checks.append(
                _ratio_check(
                    f"64-row batches rows/s, JSON, vs fastest peer ({best_batch.name})",
                    _per_pass(ours, batch, "rows_per_s"),
                    _fastest_per_pass(batch_peers, batch, "rows_per_s"),
                    4.0,
                )
            )
    binary, json_v2 = results.get("ml-serving-v2-binary"), results.get("ml-serving-v2")
    if batch is not None and binary is not None and json_v2 is not None:
        if binary.loads.get(batch) and json_v2.loads.get(batch):
            checks.append(
                _ratio_check(
                    "64-row batches rows/s, binary tensors vs JSON (v2)",
                    _per_pass(binary, batch, "rows_per_s"),
                    _per_pass(json_v2, batch, "rows_per_s"),
                    1.5,
                )
            )
    own = results.get("own-constant")
    if own is not None and own.loads.get(TARGET_SCENARIO):
        checks.append(
            _ratio_check(
                "c=64 /predict share of the own-layer constant ceiling",
                _per_pass(ours, TARGET_SCENARIO, "requests_per_s"),
                _per_pass(own, TARGET_SCENARIO, "requests_per_s"),
                0.5,
            )
        )
    checks.append(_check("errors at every level", float(ours.total_errors()), "<=", 0.0))
    checks.append(_check("cold start (s)", statistics.median(ours.cold_start_s), "<=", 1.0))
    checks.append(_check("resident memory under load (MB)", max(ours.rss_mb), "<=", 200.0))
    attacked = (attacks or {}).get("builtin")
    if attacked is not None:
        checks += attack_checks(attacked)
    return checks


def _per_pass(result: ServerResult, scenario: str, metric: str) -> list[float]:
    return [float(getattr(r, metric)) for r in result.loads.get(scenario, [])]


def _fastest_per_pass(peers: list[ServerResult], scenario: str, metric: str) -> list[float]:
    series = [_per_pass(p, scenario, metric) for p in peers if p.loads.get(scenario)]
    passes = min(len(values) for values in series)
    return [max(values[i] for values in series) for i in range(passes)]


def attack_checks(run: AttackRun) -> list[dict[str, Any]]:
    held = [o for o in run.outcomes if o.case in TIMING_CASES]
    refused = [o for o in run.outcomes if o.case not in TIMING_CASES]
    return [
        _check("under attack: peak resident memory (MB)", run.rss_peak_mb, "<=", 150.0),
        _check(
            "under attack: connections held past their timeout + 1 s",
            float(sum(not o.strict for o in held)),
            "<=",
            0.0,
        ),
        _check(
            "under attack: cases without their 4xx + JSON reason (or limit)",
            float(sum(not o.strict for o in refused)),
            "<=",
            0.0,
        ),
        _check("under attack: slowest health answer (ms)", run.health_max_ms, "<=", 50.0),
        _check("under attack: failed health checks", float(run.health_failures), "<=", 0.0),
    ]


def _ratio_check(
    name: str, values: list[float], references: list[float], limit: float
) -> dict[str, Any]:
    ratios = [value / reference for value, reference in zip(values, references)]
    check = _check(name, float(statistics.median(ratios)), ">=", limit)
    check["spread"] = f"{min(ratios):.2f}-{max(ratios):.2f}"
    return check


def _check(name: str, measured: float, op: str, limit: float) -> dict[str, Any]:
    passed = measured >= limit if op == ">=" else measured <= limit
    return {
        "target": name,
        "measured": round(measured, 3),
        "op": op,
        "limit": limit,
        "passed": passed,
    }


def render_table(results: dict[str, ServerResult], plan: list[Scenario]) -> str:
    lines = [
        "| server | load | req/s | (passes) | rows/s | p50 ms | p99 ms | errors | RSS MB "
        "| cold start s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results.values():
        if not result.available:
            lines.append(f"| {result.name} | - | {result.reason} | | | | | | | |")
            continue
        rss = f"{max(result.rss_mb):.0f}" if result.rss_mb else "-"
        cold = f"{statistics.median(result.cold_start_s):.2f}" if result.cold_start_s else "-"
        for scenario in plan:
            if not result.loads.get(scenario.name):
                continue
            m = result.median
            low, high = result.spread(scenario.name, "requests_per_s")
            lines.append(
                f"| {result.name} | {scenario.name} | {m(scenario.name, 'requests_per_s'):.0f} | "
                f"{low:.0f}-{high:.0f} | {m(scenario.name, 'rows_per_s'):.0f} | "
                f"{m(scenario.name, 'p50_ms'):.2f} | {m(scenario.name, 'p99_ms'):.2f} | "
                f"{sum(r.errors for r in result.loads[scenario.name])} | {rss} | {cold} |"
            )
    return "\n".join(lines)


def render_targets(checks: list[dict[str, Any]]) -> str:
    lines = [
        "| target | measured | passes | limit | verdict |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for c in checks:
        verdict = "pass" if c["passed"] else "MISS"
        spread = c.get("spread", "")
        lines.append(
            f"| {c['target']} | {c['measured']} | {spread} | {c['op']} {c['limit']} | {verdict} |"
        )
    return "\n".join(lines)


# -- under attack, and at SIGTERM -----------------------------------------------------------------

HTTP_SERVERS = ("builtin", "uvicorn", "granian")
TIMING_CASES = frozenset(c.name for c in CASES if c.concurrent) | {"unread-answers"}


@dataclass
class AttackRun:
    server: str
    outcomes: list[Outcome]
    rss_start_mb: float
    rss_peak_mb: float
    health_max_ms: float
    health_p50_ms: float
    health_probes: int
    health_failures: int


def _service(
    model: Path, http_server: str, port: int, extra: dict[str, str], log: Path
) -> ManagedProcess:
    env = {
        **os.environ,
        **extra,
        "MODEL_URI": str(model),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HTTP_SERVER": http_server,
        "LOG_LEVEL": "warning",
    }
    log.unlink(missing_ok=True)
    process = ManagedProcess(http_server, [sys.executable, "-m", "ml.serving"], log, env, REPO)
    process.start()
    ready = f"http://127.0.0.1:{port}/v2/health/ready"

    def is_ready() -> bool:
        try:
            with urllib.request.urlopen(ready, timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    try:
        wait_until(is_ready, 60.0, "the service to be ready", process, poll=0.02)
    except ProcessError:
        stop_server(process)
        raise
    return process


def _probe(port: int, stop: Any, results: Any) -> None:
    """In its own process, so the attackers' CPU use does not colour the health latencies."""
    probe = HealthProbe("127.0.0.1", port)
    with probe.running():
        stop.wait()
    results.put((probe.latencies_ms, probe.failures))


def run_attacks(
    model: Path,
    features: int,
    http_server: str,
    workdir: Path,
    cases: list[Case] | None = None,
) -> AttackRun:
    """The attack corpus against this service under ``http_server``, with ATTACK_ENV's limits,
    the health endpoint probed every 100 ms from another process, resident memory sampled."""
    import multiprocessing

    port = free_port()
    token = "bench-admin-token-" + os.urandom(8).hex()
    extra = {**ATTACK_ENV, "ADMIN_TOKEN": token}
    process = _service(model, http_server, port, extra, workdir / f"attack-{http_server}.log")
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    prober = context.Process(target=_probe, args=(port, stop, results), daemon=True)
    try:
        target = Target(
            host="127.0.0.1",
            port=port,
            pid=process.popen.pid,
            limits=Limits.from_env(ATTACK_ENV),
            admin_token=token,
            model_name=MODEL_NAME,
            features=features,
            reload_body=json.dumps({"model_uri": str(model)}).encode(),
        )
        prober.start()
        with RssSampler(process.popen.pid) as rss:
            outcomes = asyncio.run(run_cases(target, cases))
        stop.set()
        latencies, failures = results.get(timeout=30)
        prober.join(timeout=30)
    finally:
        stop.set()
        stop_server(process)
    return AttackRun(
        server=http_server,
        outcomes=outcomes,
        rss_start_mb=rss.first_mb,
        rss_peak_mb=rss.peak_mb,
        health_max_ms=max(latencies, default=float("nan")),
        health_p50_ms=float(statistics.median(latencies)) if latencies else float("nan"),
        health_probes=len(latencies),
        health_failures=len(failures),
    )


_WRK_DRAIN = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_DRAIN {"requests":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"timeout":%d,"status":%d}\\n', summary.requests, e.connect, e.read, e.write, e.timeout,
    e.status))
end
"""


def measure_drain(model: Path, http_server: str, body: bytes, workdir: Path) -> dict[str, int]:
    """SIGTERM while wrk keeps 64 keep-alive connections busy: requests lost (wrk's read errors:
    a request written and never answered; refused reconnects count as write errors instead)."""
    port = free_port()
    process = _service(model, http_server, port, {}, workdir / f"drain-{http_server}.log")
    body_file = workdir / "drain-body.json"
    body_file.write_bytes(body)
    script = workdir / "drain.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n' + _WRK_DRAIN
    )
    argv = ["wrk", "-t1", "-c64", "-d6s", "--timeout", "10s", "-s", str(script)]
    wrk = subprocess.Popen(
        [*argv, f"http://127.0.0.1:{port}/predict"], stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while _served(port) < 3000:  # the load is under way on every connection
            if time.monotonic() > deadline:
                raise RuntimeError("wrk's load never got under way")
            time.sleep(0.05)
        process.popen.send_signal(signal.SIGTERM)
        process.popen.wait(timeout=60)
        output, _ = wrk.communicate(timeout=60)
    finally:
        stop_server(process)
        if wrk.poll() is None:
            wrk.kill()
    line = next(x for x in output.splitlines() if x.startswith("BENCH_DRAIN "))
    result: dict[str, int] = json.loads(line.removeprefix("BENCH_DRAIN "))
    result["exit_code"] = int(process.popen.returncode)
    return result


def _served(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("inference_requests_total{")
    )


def render_attacks(attacks: dict[str, AttackRun], drains: dict[str, dict[str, int]]) -> str:
    lines = [
        "| HTTP server | strict cases | misses | peak RSS MB (start) | health p50 / max ms "
        "| failed health checks | lost at SIGTERM (c=64) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for server in HTTP_SERVERS:
        run = attacks.get(server)
        drain = drains.get(server)
        lost = str(drain["read"] + drain["timeout"]) if drain else "-"
        if run is None:
            lines.append(f"| {server} | - | - | - | - | - | {lost} |")
            continue
        strict = sum(o.strict for o in run.outcomes)
        misses = ", ".join(o.case for o in run.outcomes if not o.strict) or "none"
        lines.append(
            f"| {server} | {strict}/{len(run.outcomes)} | {misses} | {run.rss_peak_mb:.0f} "
            f"({run.rss_start_mb:.0f}) | {run.health_p50_ms:.1f} / {run.health_max_ms:.1f} | "
            f"{run.health_failures} | {lost} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "digits" / "model.onnx")
    parser.add_argument(
        "--registration", type=Path, default=REPO / "models" / "digits" / "registration.json"
    )
    parser.add_argument(
        "--test-split", type=Path, default=REPO / "models" / "digits" / "data/prepared/test.npz"
    )
    parser.add_argument("--servers", default=",".join(ALL_SERVERS))
    parser.add_argument("--concurrency", default="1,16,64,256")
    parser.add_argument("--batch-concurrency", type=int, default=16, help="0 skips batches")
    parser.add_argument("--batch-rows", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--peers-venv", type=Path, default=REPO / ".bench" / "peers-venv")
    parser.add_argument("--no-install", action="store_true", help="never create the peers' venv")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "serving.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--attack-servers",
        default=",".join(HTTP_SERVERS),
        help="HTTP_SERVER values to run the attack corpus and the drain against ('' skips)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for this service's servers (repeatable), e.g. "
        "INFERENCE_THREADS=1 to compare a setting within one run of the harness",
    )
    args = parser.parse_args(argv)
    unknown = set(args.servers.split(",")) - set(ALL_SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; known: {', '.join(ALL_SERVERS)}")
    unknown = {s for s in args.attack_servers.split(",") if s} - set(HTTP_SERVERS)
    if unknown:
        parser.error(f"unknown attack servers {sorted(unknown)}; known: {', '.join(HTTP_SERVERS)}")
    args.server_env = dict(_assignment(parser, item) for item in args.server_env)
    return args


def _assignment(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.strip() or name != name.strip():
        parser.error(f"--server-env {item!r}: expected NAME=VALUE")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"bench: {args.model} not found; run `make pipeline` first", file=sys.stderr)
        return 2
    chosen = [s for s in ALL_SERVERS if s in args.servers.split(",")]
    plan = scenarios(
        [int(c) for c in args.concurrency.split(",")], args.batch_concurrency, args.batch_rows
    )
    rows = load_rows(args.test_split, max(s.rows for s in plan))
    expected = expected_labels(args.model, rows)
    workdir = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    peers_python: Path | None = None
    peers_reason = ""
    mlflow_model: Path | None = None
    if any(s in PEERS for s in chosen):
        peers_python, peers_reason = ensure_peers_venv(args.peers_venv, not args.no_install)
        if peers_python is not None and ({"mlflow", "mlserver"} & set(chosen)):
            try:
                mlflow_model = prepare_mlflow_model(
                    peers_python, args.model, args.registration, workdir / "mlflow-model"
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                peers_reason = f"MLflow model unavailable: {exc}"
    ports = {name: free_port() for name in chosen}
    all_specs = {
        name: next(
            spec
            for spec in specs(
                args.model,
                ports[name],
                peers_python or Path("python"),
                mlflow_model,
                args.server_env,
            )
            if spec.name == name
        )
        for name in chosen
    }
    results = {name: ServerResult(name, all_specs[name].description) for name in chosen}
    for name in chosen:
        if name in PEERS and (peers_python is None or (name != "kserve" and mlflow_model is None)):
            results[name].available, results[name].reason = False, peers_reason
    if "mlserver" in chosen and results["mlserver"].available and mlflow_model is not None:
        all_specs["mlserver"].cwd = workdir / "mlserver"
        write_mlserver_config(all_specs["mlserver"].cwd, ports["mlserver"], mlflow_model)
    if "nginx-constant" in chosen:
        nginx, why = ensure_nginx(not args.no_install)
        if nginx is None:
            results["nginx-constant"].available, results["nginx-constant"].reason = False, why
        else:
            all_specs["nginx-constant"].cwd = workdir / "nginx"
            write_nginx_config(all_specs["nginx-constant"].cwd, ports["nginx-constant"])
    for number in range(1, args.passes + 1):
        print(f"bench: pass {number}/{args.passes}", flush=True)
        run_pass(
            number,
            chosen,
            all_specs,
            ports,
            results,
            plan,
            rows,
            expected,
            args.duration,
            workdir,
        )
    attacks: dict[str, AttackRun] = {}
    drains: dict[str, dict[str, int]] = {}
    for http_server in [s for s in args.attack_servers.split(",") if s]:
        print(f"bench: attack corpus and drain against HTTP_SERVER={http_server}", flush=True)
        try:
            attacks[http_server] = run_attacks(args.model, rows.shape[1], http_server, workdir)
            drains[http_server] = measure_drain(
                args.model, http_server, instances(rows[:1]), workdir
            )
        except (RuntimeError, subprocess.TimeoutExpired, StopIteration) as exc:
            print(f"bench: {http_server} under attack failed: {exc}", flush=True)
    batch = next((s for s in plan if s.rows > 1), None)
    costs = request_costs(args.model, rows[: batch.rows]) if batch else {}
    checks = evaluate_targets(results, batch.name if batch else None, attacks)
    table, targets = render_table(results, plan), render_targets(checks)
    if batch:
        table += "\n\n" + render_costs(batch.rows, costs)
    attack_table = render_attacks(attacks, drains) if attacks or drains else ""
    settings = "".join(f", {k}={v}" for k, v in args.server_env.items())
    print(f"\nMedians of {args.passes} passes, {args.duration:.0f} s per load, wrk -t1", end="")
    print(f"{settings}:\n")
    print(table)
    if attack_table:
        print("\nUnder the attack corpus (scripts/serving_attacks.py) and at SIGTERM:\n")
        print(attack_table)
    print("\n" + targets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": {
            "passes": args.passes,
            "duration_s": args.duration,
            "scenarios": [asdict(s) for s in plan],
            "cpus": os.cpu_count(),
            "model": str(args.model),
            "server_env": args.server_env,
        },
        "servers": {
            name: {**asdict(r), "medians": _medians(r, plan)} for name, r in results.items()
        },
        "attacks": {name: asdict(run) for name, run in attacks.items()},
        "drains": drains,
        "request_costs": costs,
        "targets": checks,
    }
    args.out.write_text(json.dumps(document, indent=2))
    sections = [table, attack_table, targets]
    args.out.with_suffix(".md").write_text("\n\n".join(x for x in sections if x) + "\n")
    print(f"\nbench: wrote {args.out} and {args.out.with_suffix('.md')}")
    return 1 if args.check and not all(c["passed"] for c in checks) else 0


def _medians(result: ServerResult, plan: list[Scenario]) -> dict[str, dict[str, float]]:
    metrics = ("requests_per_s", "rows_per_s", "p50_ms", "p99_ms")
    return {
        s.name: {m: result.median(s.name, m) for m in metrics}
        for s in plan
        if result.loads.get(s.name)
    }


if __name__ == "__main__":
    raise SystemExit(main())
