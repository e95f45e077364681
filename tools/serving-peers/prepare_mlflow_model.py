"""Runs in the peers' venv: put the served ONNX model in an MLflow model directory for the peers.

Usage: prepare_mlflow_model.py ONNX_FILE DEST [MODEL_URI]
With MODEL_URI (``models:/<name>/<version>``, tracking store from MLFLOW_TRACKING_URI) the
registered version's artifacts are downloaded, i.e. `mlflow models serve` serves exactly the
registered model; without it, or if the registry is unreachable, the ONNX file is saved with
mlflow.onnx.save_model. Prints one JSON line: {"path": ..., "source": "registry" | "onnx-file"}.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def main() -> None:
    onnx_file, dest = Path(sys.argv[1]), Path(sys.argv[2])
    uri = sys.argv[3] if len(sys.argv) > 3 else ""
    shutil.rmtree(dest, ignore_errors=True)
    import mlflow

    if uri:
        try:
            dest.mkdir(parents=True)
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))
            if (Path(path) / "MLmodel").is_file():
                print(json.dumps({"path": path, "source": "registry", "uri": uri}))
                return
        except Exception as exc:  # noqa: BLE001 - fall back to the file, say why
            print(f"registry download failed ({exc}); saving the ONNX file", file=sys.stderr)
        shutil.rmtree(dest, ignore_errors=True)
    import onnx

    mlflow.onnx.save_model(onnx.load(str(onnx_file)), str(dest))
    print(json.dumps({"path": str(dest), "source": "onnx-file"}))


if __name__ == "__main__":
    main()
