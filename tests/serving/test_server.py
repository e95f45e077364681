"""The process: the image's exact entrypoint, exit codes, JSON logs, graceful shutdown."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from ml.serving.config import ServingConfig
from ml.serving.server import main

from .conftest import (
    REPO,
    digits_rows,
    free_port,
    metric_value,
    service_env,
    subprocess_server,
    threaded_server,
    wait_until,
)

DOCKERFILES = [REPO / "ml" / "serving" / "Dockerfile", REPO / "ml" / "training.Dockerfile"]


def final_stage(dockerfile: Path) -> dict[str, object]:
    """ENV, ENTRYPOINT and HEALTHCHECK of the last stage (exec form, as the image runs them)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stage = text[text.rindex("\nFROM ") :]
    env: dict[str, str] = {}
    found: dict[str, object] = {"env": env}
    for line in stage.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif instruction == "ENTRYPOINT":
            found["entrypoint"] = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            found["healthcheck"] = json.loads(rest[rest.index("CMD ") + 4 :])
    return found


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serving_image_is_lean_non_root_and_production_by_default() -> None:
    text = DOCKERFILES[0].read_text()
    assert "USER 10001:10001" in text and "torch" not in text.split("FROM")[-1]
    requirements = (REPO / "ml" / "serving" / "requirements.txt").read_text()
    assert "torch" not in requirements and "onnxruntime" in requirements
    stage = final_stage(DOCKERFILES[0])
    assert stage["env"]["DEPLOY_ENV"] == "production"  # type: ignore[index]
    assert stage["entrypoint"] == ["python", "-m", "ml.serving"]


def test_image_entrypoint_serves_the_exported_model(model_dir: Path, tmp_path: Path) -> None:
    """The image's ENTRYPOINT and ENV, run outside a container (only paths and host remapped)."""
    stage = final_stage(DOCKERFILES[0])
    image_env: dict[str, str] = dict(stage["env"])  # type: ignore[call-overload]
    image_env.pop("PATH")
    port = free_port()
    image_env.update(MODEL_URI=str(model_dir / "model.onnx"), HOST="127.0.0.1", PORT=str(port))
    argv: list[str] = stage["entrypoint"]  # type: ignore[assignment]
    env = service_env(**image_env)
    with subprocess_server(argv, env, cwd=tmp_path) as (base, process):
        body = {"instances": digits_rows(2).tolist()}
        response = httpx.post(f"{base}/predict", json=body)
        assert response.status_code == 200 and response.json()["model_version"] == "7"
        health = subprocess.run(stage["healthcheck"], env=env, timeout=10)  # type: ignore[arg-type]
        assert health.returncode == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_faults_in_production_stop_the_process_with_a_reason(model_dir: Path) -> None:
    env = service_env(
        MODEL_URI=str(model_dir / "model.onnx"),
        PORT=str(free_port()),
        DEPLOY_ENV="production",
        FAULT_ERROR_RATE="0.1",
    )
    result = subprocess.run(
        [sys.executable, "-m", "ml.serving"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["level"] == "error" and line["msg"] == "invalid configuration"
    assert "fault injection is refused when DEPLOY_ENV=production" in line["reason"]


@pytest.mark.parametrize(
    "env, code, message",
    [
        ({"PORT": "x"}, 2, "invalid configuration"),
        ({"LOG_LEVEL": "shout"}, 2, "invalid configuration"),
        ({"MODEL_URI": "/nonexistent/model.onnx"}, 3, "model cannot be served"),
    ],
)
def test_main_exit_codes_and_json_logs(
    env: dict[str, str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(env) == code
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == message and line["reason"] and line["logger"] == "ml.serving"


@pytest.mark.parametrize("http_server", ["builtin", "uvicorn"])
def test_graceful_shutdown_drains_requests_in_flight(model_dir: Path, http_server: str) -> None:
    env = service_env(
        MODEL_URI=str(model_dir / "model.onnx"),
        PORT=str(free_port()),
        FAULT_LATENCY_MS="5000",  # long enough that all 20 are in flight together on a busy machine
        HTTP_SERVER=http_server,
    )
    with subprocess_server([sys.executable, "-m", "ml.serving"], env) as (base, process):
        results: list[int] = []
        body = {"instances": digits_rows(1).tolist()}

        def call() -> None:
            results.append(httpx.post(f"{base}/predict", json=body, timeout=30).status_code)

        threads = [threading.Thread(target=call) for _ in range(20)]
        for thread in threads:
            thread.start()

        def all_in_flight() -> bool:
            text = httpx.get(f"{base}/metrics").text
            return metric_value(text, "inference_requests_in_flight") == 20

        wait_until(all_in_flight, what="20 requests in flight")
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=30)
        assert process.wait(timeout=30) == 0
        assert results == [200] * 20
        logs = process.stderr.read().decode() if process.stderr else ""
        assert "stopped: in-flight requests drained" in logs
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/v2/health/live", timeout=2)


@pytest.mark.parametrize("http_server", ["builtin", "uvicorn"])
def test_both_http_servers_answer_alike(model_dir: Path, http_server: str) -> None:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), http_server=http_server)
    with threaded_server(config) as (base, _server):
        assert httpx.get(f"{base}/v2/health/ready").json() == {"ready": True}
        response = httpx.post(f"{base}/predict", content=b"{oops")
        assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
        assert "server" not in response.headers  # no server banner


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("WRK_BODY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,'
    .. '"status":%d}\\n', summary.requests, e.connect, e.read, e.write, e.timeout, e.status))
end
"""


def test_sigterm_under_load_loses_no_request(model_dir: Path, tmp_path: Path) -> None:
    """wrk keeps 64 keep-alive connections busy; SIGTERM lands mid-load. wrk honours Connection:
    close by reconnecting, which fails once the listener is closed: it counts each refused
    connect as a write error (its non-blocking connect fails on the first write), never a lost
    request. A request written and not answered is a read error (the old drain: 64 of 64); a
    non-2xx is a status error. Both must be zero."""
    port = free_port()
    env = service_env(MODEL_URI=str(model_dir / "model.onnx"), PORT=str(port))
    script = tmp_path / "drain.lua"
    script.write_text(_WRK_SCRIPT)
    body = json.dumps({"instances": digits_rows(1).tolist()})
    with subprocess_server([sys.executable, "-m", "ml.serving"], env) as (base, process):
        wrk = subprocess.Popen(
            [
                "wrk",
                "-t1",
                "-c64",
                "-d4s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                f"{base}/predict",
            ],
            env={**os.environ, "WRK_BODY": body},
            stdout=subprocess.PIPE,
            text=True,
        )

        def under_load() -> bool:
            text = httpx.get(f"{base}/metrics").text
            served = metric_value(text, "inference_requests_total", endpoint="predict", code="200")
            return served > 5000

        wait_until(under_load, what="wrk's load to be under way")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        output, _ = wrk.communicate(timeout=60)
    line = next(x for x in output.splitlines() if x.startswith("WRK "))
    result = json.loads(line[4:])
    assert result["requests"] > 5000
    lost = {k: result[k] for k in ("read", "timeout", "status")}
    assert lost == {"read": 0, "timeout": 0, "status": 0}, result


def test_the_rollout_drains_pods_within_their_grace_period() -> None:
    """preStop sleeps until the endpoints are gone, then the drain runs; both must fit inside
    terminationGracePeriodSeconds, or the kubelet kills the pod mid-drain."""
    import yaml

    rollout = yaml.safe_load((REPO / "apps/_shared/model-service/rollout.yaml").read_text())
    pod = rollout["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "model-server")
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 0 < int(command[1]) <= 10
    drain = ServingConfig().graceful_timeout_s
    assert int(command[1]) + drain <= pod["terminationGracePeriodSeconds"]
