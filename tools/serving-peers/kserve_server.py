"""Runs in the peers' venv: KServe's Python ModelServer (v1 protocol) serving the ONNX model.

Usage: kserve_server.py ONNX_FILE PORT
The model class is the one KServe's docs show for a custom predictor: onnxruntime with one
intra-op thread, one uvicorn worker, latency logging off. ModelServer hard-codes host 0.0.0.0,
so uvicorn.Config is wrapped to bind loopback only (benchmarks never listen on other interfaces).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import uvicorn

_config_init = uvicorn.Config.__init__


def _loopback_config(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
    kwargs["host"] = "127.0.0.1"
    kwargs["access_log"] = False
    _config_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_config  # type: ignore[method-assign]

import kserve  # noqa: E402 - after the wrap, so every uvicorn.Config kserve builds is loopback


class DigitsModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.session: ort.InferenceSession | None = None
        self.load()

    def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.ready = True
        return True

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        rows = np.asarray(payload["instances"], dtype=np.float32)
        probabilities, labels = self.session.run(None, {"input": rows})
        return {"predictions": labels.tolist(), "probabilities": probabilities.tolist()}


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    server = kserve.ModelServer(
        http_port=port, workers=1, enable_grpc=False, enable_latency_logging=False
    )
    server.start([DigitsModel("digits-classifier", path)])


if __name__ == "__main__":
    main()
