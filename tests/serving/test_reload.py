"""Hot reload: authenticated, checked before the swap, atomic, unseen by requests in flight."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from ml.serving.config import FaultConfig, ServingConfig
from ml.serving.model import LoadedModel

from .conftest import TOKEN, AsgiClient, digits_rows, make_onnx, metric_value, threaded_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def reload(client: AsgiClient, body: object, headers: dict[str, str] | None = AUTH) -> object:
    return client.post("/admin/reload", body, headers=headers)


def test_reload_swaps_to_the_new_model(client: AsgiClient, other_model_dir: Path) -> None:
    rows = digits_rows(20)
    before = client.post("/predict", {"instances": rows.tolist()}).json()
    response = reload(client, {"model_uri": str(other_model_dir / "model.onnx")})
    assert response.status == 200, response.body
    body = response.json()
    assert body["status"] == "reloaded"
    assert body["previous"]["version"] == "7" and body["current"]["version"] == "8"
    after = client.post("/predict", {"instances": rows.tolist()}).json()
    assert after["model_version"] == "8" and after["probabilities"] != before["probabilities"]
    assert client.get("/metadata").json()["git_commit"] == "commit-8"
    assert client.get("/v2/models/digits-classifier").json()["versions"] == ["8"]
    assert client.get("/v2/models/digits-classifier/versions/7").status == 404
    metrics = client.get("/metrics").body.decode()
    assert metric_value(metrics, "inference_model_reloads_total", outcome="success") == 1
    assert (
        metric_value(
            metrics,
            "inference_model_info",
            model_name="digits-classifier",
            model_version="8",
            git_commit="commit-8",
        )
        == 1
    )


def test_reload_with_an_explicit_registration_record(
    client: AsgiClient, other_model_dir: Path, tmp_path: Path
) -> None:
    record = json.loads((other_model_dir / "registration.json").read_text())
    elsewhere = tmp_path / "records" / "v8.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({**record, "version": "81"}))
    (other_model_dir / "registration.json").unlink()
    body = {"model_uri": str(other_model_dir / "model.onnx"), "registration": str(elsewhere)}
    assert reload(client, body).json()["current"]["version"] == "81"


@pytest.mark.parametrize(
    "make_bad, fragment",
    [
        (lambda d: (d / "model.onnx").write_bytes(b"\x08\x01garbage"), "not a loadable ONNX model"),
        (lambda d: make_onnx(d / "model.onnx", features=32), "[batch, 32]"),
        (lambda d: make_onnx(d / "model.onnx", input_name="pixels"), "named 'input'"),
        (lambda d: make_onnx(d / "model.onnx", label_offset=1), "not the argmax"),
        (lambda d: None, "cannot read model file"),
    ],
    ids=["corrupt", "wrong-input-shape", "wrong-input-name", "label-not-argmax", "missing"],
)
def test_a_bad_model_is_refused_and_the_old_one_keeps_serving(
    client: AsgiClient, tmp_path: Path, make_bad: object, fragment: str
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    make_bad(bad)  # type: ignore[operator]
    rows = {"instances": digits_rows(3).tolist()}
    before = client.post("/predict", rows).json()
    response = reload(client, {"model_uri": str(bad / "model.onnx")})
    assert response.status == 422
    body = response.json()
    assert body["error"].startswith("reload failed: ") and fragment in body["error"]
    assert body["serving"]["version"] == "7"
    assert client.post("/predict", rows).json() == before
    metrics = client.get("/metrics").body.decode()
    assert metric_value(metrics, "inference_model_reloads_total", outcome="failure") == 1
    assert metric_value(metrics, "inference_model_reloads_total", outcome="success") == 0


@pytest.mark.parametrize(
    "headers, status, fragment",
    [
        (None, 401, "missing or wrong bearer token"),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, 401, "missing or wrong"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "missing or wrong"),
        ({"Authorization": TOKEN}, 401, "missing or wrong"),
    ],
)
def test_reload_needs_the_token(
    client: AsgiClient,
    other_model_dir: Path,
    headers: dict[str, str] | None,
    status: int,
    fragment: str,
) -> None:
    response = reload(client, {"model_uri": str(other_model_dir / "model.onnx")}, headers)
    assert response.status == status and fragment in response.json()["error"]
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v2/models/digits-classifier").json()["versions"] == ["7"]


def test_reload_is_disabled_without_a_token(model: LoadedModel, other_model_dir: Path) -> None:
    from .conftest import make_app

    client = AsgiClient(make_app(model))
    response = reload(client, {"model_uri": str(other_model_dir / "model.onnx")})
    assert response.status == 403 and "no ADMIN_TOKEN" in response.json()["error"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({}, "'model_uri' must be"),
        ({"model_uri": ""}, "'model_uri' must be"),
        ({"model_uri": 3}, "'model_uri' must be"),
        ({"model_uri": "m.onnx", "registration": 1}, "'registration' must be"),
        (b"{", "malformed JSON"),
    ],
)
def test_reload_request_errors(client: AsgiClient, body: object, fragment: str) -> None:
    response = reload(client, body)
    assert response.status == 400 and fragment in response.json()["error"]


def test_reload_of_a_bad_registry_uri_is_a_clear_422(client: AsgiClient) -> None:
    response = reload(client, {"model_uri": "models:/digits-classifier"})
    assert response.status == 422
    assert "expected models:/<name>@<alias>" in response.json()["error"]


def test_an_unexpected_loader_crash_is_500_and_keeps_the_old_model(model: LoadedModel) -> None:
    from ml.serving.app import ModelService

    def explode(uri: str, registration: str | None) -> LoadedModel:
        raise RuntimeError("disk on fire")

    client = AsgiClient(ModelService(model, ServingConfig(admin_token=TOKEN), loader=explode))
    response = reload(client, {"model_uri": "x.onnx"})
    assert response.status == 500 and response.json()["error"] == "reload failed: internal error"
    assert client.post("/predict", {"instances": digits_rows(1).tolist()}).status == 200


def test_a_thousand_requests_in_flight_during_a_reload_all_succeed(
    model_dir: Path, other_model_dir: Path
) -> None:
    """Requests held in flight (1.5 s injected latency) while the model is swapped under them."""
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"),
        model_dir=str(model_dir.parent),
        admin_token=TOKEN,
        faults=FaultConfig(latency_ms=1500.0),
    )
    rows = digits_rows(1, seed=5).tolist()

    body = json.dumps({"instances": rows}).encode()

    async def one(port: int) -> tuple[int, dict[str, object]]:
        """A raw HTTP/1.1 request on its own connection (1,000 httpx clients cost seconds)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /predict HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = json.loads(await reader.readexactly(length))
        writer.close()
        return int(status_line.split()[1]), payload

    async def scenario(base: str) -> tuple[list[tuple[int, dict[str, object]]], httpx.Response]:
        port = int(base.rsplit(":", 1)[1])
        async with httpx.AsyncClient(base_url=base, timeout=60) as admin:
            tasks = [asyncio.create_task(one(port)) for _ in range(1000)]

            async def in_flight() -> float:
                text = (await admin.get("/metrics")).text
                return metric_value(text, "inference_requests_in_flight")

            deadline = asyncio.get_running_loop().time() + 30
            while await in_flight() < 500:  # wait until requests are really held in flight
                assert asyncio.get_running_loop().time() < deadline, "requests never in flight"
                await asyncio.sleep(0.005)
            swap = await admin.post(
                "/admin/reload",
                json={"model_uri": str(other_model_dir / "model.onnx")},
                headers=AUTH,
            )
            return list(await asyncio.gather(*tasks)), swap

    with threaded_server(config) as (base, _server):
        responses, swap = asyncio.run(scenario(base))
        after = httpx.post(f"{base}/predict", json={"instances": rows}).json()
    assert swap.status_code == 200, swap.text
    assert [status for status, _ in responses] == [200] * 1000
    versions = {str(payload["model_version"]) for _, payload in responses}
    assert "7" in versions and versions <= {"7", "8"}  # in-flight ones finish on their model
    assert after["model_version"] == "8"  # ... and the new one serves from then on


# -- what a reload may read ---------------------------------------------------------------------


def reload_over_http(base: str, body: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{base}/admin/reload", json=body, headers=AUTH, timeout=10)


def test_reload_reads_only_under_the_model_directory(
    model_dir: Path, other_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Outside MODEL_DIR nothing is read, and the refusal reads the same whether or not the
    path exists: the endpoint cannot probe the file system (symlinks resolved first)."""
    outside = tmp_path_factory.mktemp("outside")
    make_onnx(outside / "model.onnx", seed=8)  # a valid model, just not in the model directory
    (model_dir.parent / "escape.onnx").symlink_to(outside / "model.onnx")
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), model_dir=str(model_dir.parent), admin_token=TOKEN
    )
    with threaded_server(config) as (base, _server):
        refusals = [
            reload_over_http(base, {"model_uri": uri})
            for uri in (
                str(outside / "model.onnx"),  # exists, valid
                str(outside / "absent.onnx"),  # does not exist
                "/etc/passwd",  # exists, not a model
                "escape.onnx",  # a symlink out of the directory
                f"../{outside.name}/model.onnx",
                str(model_dir.parent),  # the directory itself
            )
        ]
        record = reload_over_http(
            base, {"model_uri": "v8/model.onnx", "registration": "/etc/hostname"}
        )
        relative = reload_over_http(base, {"model_uri": "v8/model.onnx"})
    assert {r.status_code for r in refusals} == {422}
    errors = {r.json()["error"] for r in refusals}
    assert errors == {
        "reload failed: model_uri must name a file under the model directory (MODEL_DIR)"
    }
    assert all(r.json()["serving"]["version"] == "7" for r in refusals)
    assert record.status_code == 422 and "registration must name a file under" in record.text
    assert relative.status_code == 200 and relative.json()["current"]["version"] == "8"


def test_a_named_pipe_hangs_neither_reload_nor_shutdown(model_dir: Path) -> None:
    os.mkfifo(model_dir / "pipe.onnx")
    os.mkfifo(model_dir / "pipe.json")
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), admin_token=TOKEN)
    with threaded_server(config) as (base, _server):
        as_model = reload_over_http(base, {"model_uri": str(model_dir / "pipe.onnx")})
        as_record = reload_over_http(
            base,
            {"model_uri": str(model_dir / "model.onnx"), "registration": "pipe.json"},
        )
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200
    # leaving the block stopped the server (threaded_server fails if it does not stop)
    assert as_model.status_code == 422 and "model file is not a regular file" in as_model.text
    assert as_record.status_code == 422
    assert "registration record is not a regular file" in as_record.text


def test_a_registration_outside_the_contract_is_refused_on_reload(
    model_dir: Path, other_model_dir: Path
) -> None:
    (other_model_dir / "registration.json").write_text('{"model_name": "x", "anything": 1}')
    config = ServingConfig(
        model_uri=str(model_dir / "model.onnx"), model_dir=str(model_dir.parent), admin_token=TOKEN
    )
    with threaded_server(config) as (base, _server):
        answer = reload_over_http(base, {"model_uri": str(other_model_dir / "model.onnx")})
        metadata = httpx.get(f"{base}/metadata").json()
    assert answer.status_code == 422 and "not a registration record" in answer.text
    assert "anything" not in metadata and metadata["version"] == "7"


def test_a_stuck_load_times_out_and_the_old_model_keeps_serving(model: LoadedModel) -> None:
    from ml.serving.app import ModelService

    release = threading.Event()

    def stuck(uri: str, registration: str | None) -> LoadedModel:
        release.wait(30)  # a read blocked in the kernel (a hung network file system)
        raise AssertionError("abandoned loads are never used")

    config = ServingConfig(admin_token=TOKEN, reload_timeout_s=0.3)
    client = AsgiClient(ModelService(model, config, loader=stuck))
    started = time.monotonic()
    response = reload(client, {"model_uri": "model.onnx"})
    release.set()
    assert time.monotonic() - started < 5
    assert response.status == 422  # type: ignore[attr-defined]
    assert "RELOAD_TIMEOUT_S=0.3" in response.json()["error"]  # type: ignore[attr-defined]
    assert client.post("/predict", {"instances": digits_rows(1).tolist()}).status == 200


def test_file_reloads_are_off_without_a_model_directory(model: LoadedModel) -> None:
    from .conftest import make_app

    client = AsgiClient(
        make_app(model, model_uri="models:/digits-classifier@champion", admin_token=TOKEN)
    )
    response = reload(client, {"model_uri": "/models/model.onnx"})
    assert response.status == 422  # type: ignore[attr-defined]
    assert "set MODEL_DIR" in response.json()["error"]  # type: ignore[attr-defined]
