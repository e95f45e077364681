"""The model the registry holds: an MLflow pyfunc running the exported ONNX file with onnxruntime.

MLflow's ONNX flavour flattens every output of the graph into one column of one frame, which the
two outputs of different widths (probabilities [n, C], label [n]) cannot fit, so a pandas
`dataframe_split` request to `mlflow models serve` failed. This wrapper answers a frame with one
row per input: `label` (the class index), `class` (its name) and `probability_<class>` per class.

The register stage logs it as code (MLflow's "models from code"): MLflow copies this file into
each registered version and runs it on load, so it imports nothing of this repository and works
wherever MLflow, onnxruntime and pandas are installed. The ONNX file is the version's artifact
`onnx`, byte for byte the one the service serves. The feature names and classes come from the
model's params (`model_config`, written by register), the signature from the same
(`signature()`): a column per feature, named as the input schema names it (tabular: its
features; images: `px_<row>_<col>`, row-major).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

FEATURES, CLASSES, ONNX = "features", "classes", "onnx"


def output_columns(classes: list[str]) -> list[str]:
    return ["label", "class", *(f"probability_{c}" for c in classes)]


def signature(features: list[str], classes: list[str]) -> Any:
    """Columns in, columns out: MLflow checks a request's column names and types against it and
    casts integers to the declared double."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("double", name) for name in features]),
        outputs=Schema(
            [
                ColSpec("long", "label"),
                ColSpec("string", "class"),
                *(ColSpec("float", name) for name in output_columns(classes)[2:]),
            ]
        ),
    )


class OnnxClassifier(PythonModel):  # type: ignore[misc]
    def load_context(self, context: Any) -> None:
        import onnxruntime as ort

        self.features = [str(f) for f in context.model_config[FEATURES]]
        self.classes = [str(c) for c in context.model_config[CLASSES]]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            context.artifacts[ONNX], sess_options=options, providers=["CPUExecutionProvider"]
        )

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            named = all(f in model_input.columns for f in self.features)
            frame = model_input[self.features] if named else model_input
            X = frame.to_numpy(dtype=np.float32)
        else:
            X = np.asarray(model_input, dtype=np.float32).reshape(len(model_input), -1)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(
                f"expected {len(self.features)} features per row ({', '.join(self.features[:3])},"
                f" ...), got an input of shape {X.shape}"
            )
        probabilities, labels = self.session.run(["probabilities", "label"], {"input": X})
        frame = pd.DataFrame(probabilities, columns=output_columns(self.classes)[2:])
        frame.insert(0, "class", [self.classes[int(i)] for i in labels])
        frame.insert(0, "label", labels.astype(np.int64))
        return frame


if __name__ != "ml.mlflow_model":
    # run by MLflow as the model's code (under a module name of its own): this is the model;
    # imported as part of the package (register reads `signature`), it is only a library
    mlflow.models.set_model(OnnxClassifier())
