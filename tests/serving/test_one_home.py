"""The body-size limit and the 401 challenge have one home, the app (ml/serving/app.py): our HTTP
layer asks the app's rule, so replacing the rule changes what every transport does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx

from ml.serving.app import BodyLimit, error_reply
from ml.serving.config import ServingConfig
from ml.serving.model import LoadedModel

from .conftest import AsgiClient, make_app, threaded_server

BODY = json.dumps({"instances": [[0.0] * 64] * 6}).encode()  # ~1.2 KB


def test_a_401_reply_carries_its_bearer_challenge() -> None:
    reply = error_reply(401, "missing or wrong bearer token")
    assert reply.headers == b"www-authenticate: Bearer\r\n"
    assert error_reply(403, "no").headers == b""


def test_the_asgi_entry_asks_the_apps_body_limit(model: LoadedModel) -> None:
    app = make_app(model, max_body_bytes=4096)
    client = AsgiClient(app)
    assert client.post("/predict", BODY).status == 200
    app.body_limit = BodyLimit(1024)
    refused = client.post("/predict", BODY)
    assert refused.status == 413 and b"MAX_BODY_BYTES=1024" in refused.body
    streamed = client.post("/predict", BODY, chunk=256, content_length=False)
    assert streamed.status == 413 and b"MAX_BODY_BYTES=1024" in streamed.body


def test_the_builtin_server_asks_the_apps_body_limit(model_dir: Path) -> None:
    config = ServingConfig(model_uri=str(model_dir / "model.onnx"), max_body_bytes=4096)
    with threaded_server(config) as (base, server):
        assert httpx.post(f"{base}/predict", content=BODY).status_code == 200
        server.service.body_limit = BodyLimit(1024)  # read by each new connection
        refused = httpx.post(f"{base}/predict", content=BODY)
        assert refused.status_code == 413 and "MAX_BODY_BYTES=1024" in refused.text

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(BODY), 256):
                yield BODY[start : start + 256]

        streamed = httpx.post(f"{base}/predict", content=chunks())
        assert streamed.status_code == 413 and "MAX_BODY_BYTES=1024" in streamed.text
