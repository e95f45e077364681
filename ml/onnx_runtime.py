"""One way to open the exported model with onnxruntime, shared by export (timing) and serving."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def open_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    # One intra-op thread: for an 8x8 CNN the thread hand-off costs more than the maths, and the
    # service scales by processes/replicas, not by threads inside one request.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not JSON log lines
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
