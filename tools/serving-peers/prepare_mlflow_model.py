"""Runs in the peers' venv: put the served ONNX model in an MLflow model directory for the peers.

Usage: prepare_mlflow_model.py ONNX_FILE DEST [MODEL_URI]
With MODEL_URI (``models:/<name>/<version>``, tracking store from MLFLOW_TRACKING_URI) the
registered version's artifacts are downloaded. A version of the ONNX flavour is served as it is;
one of the pipeline's pyfunc (ml/mlflow_model.py: named columns in, a frame out) has its ONNX
file, the registered bytes, saved with mlflow.onnx.save_model, so every peer answers the same
tensor requests the benchmark sends. Without MODEL_URI, or if the registry is unreachable, the
ONNX file given is saved that way. Prints one JSON line: {"path": ..., "source": "registry" |
"registry-onnx" | "onnx-file"}.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml


def main() -> None:
    onnx_file, dest = Path(sys.argv[1]), Path(sys.argv[2])
    uri = sys.argv[3] if len(sys.argv) > 3 else ""
    source, staged = "onnx-file", dest.with_name(f"{dest.name}.registered.onnx")
    shutil.rmtree(dest, ignore_errors=True)
    import mlflow

    if uri:
        try:
            dest.mkdir(parents=True)
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))
            mlmodel = Path(path) / "MLmodel"
            flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
            if "onnx" in flavors:
                print(json.dumps({"path": path, "source": "registry", "uri": uri}))
                return
            registered = sorted(Path(path).rglob("*.onnx"))
            if len(registered) == 1:  # moved out of `dest`, which save_model needs empty
                onnx_file, source = staged, "registry-onnx"
                shutil.move(registered[0], staged)
        except Exception as exc:  # noqa: BLE001 - fall back to the file, say why
            print(f"registry download failed ({exc}); saving the ONNX file", file=sys.stderr)
        shutil.rmtree(dest, ignore_errors=True)
    import onnx

    mlflow.onnx.save_model(onnx.load(str(onnx_file)), str(dest))
    staged.unlink(missing_ok=True)
    print(json.dumps({"path": str(dest), "source": source}))


if __name__ == "__main__":
    main()
