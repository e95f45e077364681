"""`make bench-serving`: the exported model served by this service and by peer servers, same load.

One server at a time on loopback, one worker each, the same wrk load (one thread) for all:
single-row requests at several concurrencies and 64-row batches, for ``--passes`` passes
interleaved across servers (a noisy machine hits every server alike), reporting medians.
Peers (``mlflow models serve``, MLServer + its MLflow runtime, KServe's ModelServer) run from
their own venv (.bench/peers-venv, bench/peers-requirements.txt); a peer that cannot be installed
or started is reported as such in the table, never silently dropped. Each server's answers are
checked against onnxruntime before it is timed, so a fast wrong server cannot win.
"""

from __future__ import annotations

import argparse
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

from scripts.local_service import free_port

REPO = Path(__file__).resolve().parents[1]
PEERS_DIR = REPO / "bench" / "peers"
PEER_REQUIREMENTS = REPO / "bench" / "peers-requirements.txt"
MODEL_NAME = "digits-classifier"
PEERS = ("mlflow", "mlserver", "kserve")
ALL_SERVERS = ("ml-serving", "ml-serving-v2", "ml-serving-uvicorn", "bare-asgi", *PEERS)
TARGET_SCENARIO = "c64"

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
    labels: Callable[[Any], list[int]] | None  # None: answers are constants (bare ASGI)
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO


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


def v2_labels(response: Any) -> list[int]:
    label = next(o for o in response["outputs"] if o["name"] == "label")
    return [int(v) for v in np.asarray(label["data"]).reshape(-1)]


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
            "this service, POST /predict (metrics, validation, JSON logs on)",
            [python, "-m", "ml.serving"],
            "/predict",
            instances,
            lambda r: [int(v) for v in r["predictions"]],
            ours_env,
        ),
        ServerSpec(
            "ml-serving-v2",
            "this service, POST /v2/models/<name>/infer (Open Inference Protocol)",
            [python, "-m", "ml.serving"],
            f"/v2/models/{MODEL_NAME}/infer",
            v2_body,
            v2_labels,
            ours_env,
        ),
        ServerSpec(
            "ml-serving-uvicorn",
            "this service, POST /predict, under uvicorn instead of its own HTTP layer",
            [python, "-m", "ml.serving"],
            "/predict",
            instances,
            lambda r: [int(v) for v in r["predictions"]],
            {**ours_env, "HTTP_SERVER": "uvicorn"},
        ),
        ServerSpec(
            "bare-asgi",
            "constant response from a bare ASGI app, same uvicorn settings (the HTTP ceiling)",
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
            lambda r: [int(v) for v in r["predictions"]["label"]],
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
            lambda r: [int(v) for v in r["predictions"]],
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


def post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def start_server(
    spec: ServerSpec, url: str, body: bytes, timeout: float, log: Path
) -> tuple[subprocess.Popen[bytes], float]:
    """Start the server in its own process group; -> (process, seconds to first 2xx inference)."""
    env = {**os.environ, **spec.env}
    with log.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = started + timeout
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise RuntimeError(f"exited with {process.returncode} before serving: {tail}")
        try:
            status, _ = post(url, body, timeout=2.0)
            if 200 <= status < 300:
                return process, time.perf_counter() - started
        except OSError:
            pass
        if time.perf_counter() > deadline:
            stop_server(process)
            raise RuntimeError(f"no successful inference within {timeout:.0f} s")
        time.sleep(0.005)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own process group (it may have spawned workers), then SIGKILL."""
    if process.poll() is not None:
        return
    group = os.getpgid(process.pid)
    os.killpg(group, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(group, signal.SIGKILL)
        process.wait()


def resident_mb(pid: int) -> float:
    """Resident memory of the process and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in processes)) / 2**20
    except psutil.Error:
        return float("nan")


def run_wrk(url: str, body: bytes, concurrency: int, seconds: float, workdir: Path) -> LoadResult:
    body_file = workdir / f"body-{hashlib.sha256(body).hexdigest()[:16]}.json"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n' + _WRK_DONE
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


def check_answers(spec: ServerSpec, url: str, body: bytes, expected: list[int]) -> None:
    status, payload = post(url, body)
    if not 200 <= status < 300:
        raise RuntimeError(f"answered {status}: {payload[:300]!r}")
    if spec.labels is not None:
        got = spec.labels(json.loads(payload))
        if got != expected:
            raise RuntimeError(f"wrong labels: {got[:8]} vs onnxruntime's {expected[:8]}")


def bench_server(
    spec: ServerSpec,
    result: ServerResult,
    port: int,
    plan: list[Scenario],
    rows: np.ndarray,
    expected: list[int],
    seconds: float,
    workdir: Path,
) -> None:
    url = f"http://127.0.0.1:{port}{spec.path}"
    single = spec.encode(rows[:1])
    process, cold_start = start_server(spec, url, single, 120.0, workdir / f"{spec.name}.log")
    try:
        result.cold_start_s.append(cold_start)
        check_answers(spec, url, single, expected[:1])
        peak = resident_mb(process.pid)
        for scenario in plan:
            body = spec.encode(rows[: scenario.rows])
            check_answers(spec, url, body, expected[: scenario.rows])
            measured = run_wrk(url, body, scenario.concurrency, seconds, workdir)
            measured.rows_per_s = measured.requests_per_s * scenario.rows
            result.loads.setdefault(scenario.name, []).append(measured)
            peak = max(peak, resident_mb(process.pid))
            print(
                f"bench: {spec.name:14s} {scenario.name:12s} {measured.requests_per_s:9.0f} req/s"
                f"  p99 {measured.p99_ms:8.2f} ms  errors {measured.errors}",
                flush=True,
            )
        result.rss_mb.append(peak)
    finally:
        stop_server(process)


def evaluate_targets(results: dict[str, ServerResult], batch: str | None) -> list[dict[str, Any]]:
    """The issue's targets, for this service's /predict endpoint against the fastest peer."""
    ours = results.get("ml-serving")
    peers = [results[p] for p in PEERS if p in results and results[p].loads.get(TARGET_SCENARIO)]
    checks: list[dict[str, Any]] = []
    if ours is None or not ours.loads.get(TARGET_SCENARIO):
        return checks
    rps = ours.median(TARGET_SCENARIO, "requests_per_s")
    p99 = ours.median(TARGET_SCENARIO, "p99_ms")
    if peers:
        best = max(peers, key=lambda r: r.median(TARGET_SCENARIO, "requests_per_s"))
        best_rps = best.median(TARGET_SCENARIO, "requests_per_s")
        best_p99 = best.median(TARGET_SCENARIO, "p99_ms")
        checks.append(
            _check(f"c=64 req/s vs fastest peer ({best.name})", rps / best_rps, ">=", 8.0)
        )
        checks.append(_check(f"c=64 p99 vs {best.name}'s", p99 / best_p99, "<=", 0.2))
        if batch is not None:
            fastest_rows = max(r.median(batch, "rows_per_s") for r in peers if r.loads.get(batch))
            ratio = ours.median(batch, "rows_per_s") / fastest_rows
            checks.append(_check("64-row batches rows/s vs fastest peer", ratio, ">=", 4.0))
    bare = results.get("bare-asgi")
    if bare is not None and bare.loads.get(TARGET_SCENARIO):
        ceiling = bare.median(TARGET_SCENARIO, "requests_per_s")
        checks.append(_check("c=64 req/s share of bare-ASGI ceiling", rps / ceiling, ">=", 0.5))
    checks.append(_check("errors at every level", float(ours.total_errors()), "<=", 0.0))
    checks.append(_check("cold start (s)", statistics.median(ours.cold_start_s), "<=", 1.0))
    checks.append(_check("resident memory (MB)", max(ours.rss_mb), "<=", 200.0))
    return checks


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
        "| server | load | req/s | rows/s | p50 ms | p99 ms | errors | RSS MB | cold start s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results.values():
        if not result.available:
            lines.append(f"| {result.name} | - | {result.reason} | | | | | | |")
            continue
        rss = f"{max(result.rss_mb):.0f}" if result.rss_mb else "-"
        cold = f"{statistics.median(result.cold_start_s):.2f}" if result.cold_start_s else "-"
        for scenario in plan:
            if not result.loads.get(scenario.name):
                continue
            m = result.median
            lines.append(
                f"| {result.name} | {scenario.name} | {m(scenario.name, 'requests_per_s'):.0f} | "
                f"{m(scenario.name, 'rows_per_s'):.0f} | {m(scenario.name, 'p50_ms'):.2f} | "
                f"{m(scenario.name, 'p99_ms'):.2f} | "
                f"{sum(r.errors for r in result.loads[scenario.name])} | {rss} | {cold} |"
            )
    return "\n".join(lines)


def render_targets(checks: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | verdict |", "| --- | ---: | ---: | --- |"]
    for c in checks:
        verdict = "pass" if c["passed"] else "MISS"
        lines.append(f"| {c['target']} | {c['measured']} | {c['op']} {c['limit']} | {verdict} |")
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
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--peers-venv", type=Path, default=REPO / ".bench" / "peers-venv")
    parser.add_argument("--no-install", action="store_true", help="never create the peers' venv")
    parser.add_argument("--out", type=Path, default=REPO / ".bench" / "serving.json")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
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
    port = free_port()
    all_specs = {
        s.name: s
        for s in specs(
            args.model, port, peers_python or Path("python"), mlflow_model, args.server_env
        )
    }
    results = {name: ServerResult(name, all_specs[name].description) for name in chosen}
    for name in chosen:
        if name in PEERS and (peers_python is None or (name != "kserve" and mlflow_model is None)):
            results[name].available, results[name].reason = False, peers_reason
    if "mlserver" in chosen and results["mlserver"].available and mlflow_model is not None:
        all_specs["mlserver"].cwd = workdir / "mlserver"
        write_mlserver_config(all_specs["mlserver"].cwd, port, mlflow_model)
    for number in range(1, args.passes + 1):
        print(f"bench: pass {number}/{args.passes}", flush=True)
        for name in chosen:
            if not results[name].available:
                continue
            try:
                bench_server(
                    all_specs[name],
                    results[name],
                    port,
                    plan,
                    rows,
                    expected,
                    args.duration,
                    workdir,
                )
            except RuntimeError as exc:
                reason = " ".join(f"failed: {exc}".split())[:300].replace("|", "/")
                results[name].available, results[name].reason = False, reason
                print(f"bench: {name} {results[name].reason}", flush=True)
    batch = next((s.name for s in plan if s.rows > 1), None)
    checks = evaluate_targets(results, batch)
    table, targets = render_table(results, plan), render_targets(checks)
    settings = "".join(f", {k}={v}" for k, v in args.server_env.items())
    print(f"\nMedians of {args.passes} passes, {args.duration:.0f} s per load, wrk -t1", end="")
    print(f"{settings}:\n")
    print(table)
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
        "targets": checks,
    }
    args.out.write_text(json.dumps(document, indent=2))
    args.out.with_suffix(".md").write_text(table + "\n\n" + targets + "\n")
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
