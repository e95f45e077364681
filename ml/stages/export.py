"""export: write the ONNX model the service runs, prove it matches torch, time it, write its card.

The ONNX file only replaces the previous one after the parity check passes on the whole test split
(identical labels, probabilities within export.parity_atol), so a bad export never reaches serving.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.checkpoint import load_checkpoint, predict_proba
from ml.cli import StageError, run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import Split, load_split
from ml.io import atomic_path, read_json, sha256_file, write_json, write_text
from ml.model import FEATURES, DigitsCNN, ServingHead
from ml.onnx_runtime import open_session


def export_onnx(model: DigitsCNN, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated upstream but is exact and 20x faster here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ServingHead(model).eval(),
            (torch.zeros(2, FEATURES),),
            str(path),
            input_names=["input"],
            output_names=["probabilities", "label"],
            dynamic_axes={
                "input": {0: "batch"},
                "probabilities": {0: "batch"},
                "label": {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )


def check_parity(model: DigitsCNN, onnx_path: Path, test: Split, atol: float) -> dict[str, float]:
    """Raise StageError unless ONNX labels equal torch's and probabilities agree within atol."""
    expected = predict_proba(model, torch.from_numpy(test.X)).numpy()
    probabilities, labels = open_session(onnx_path).run(None, {"input": test.X})
    max_diff = float(np.max(np.abs(probabilities - expected)))
    mismatched = int(np.sum(labels != expected.argmax(axis=1)))
    if mismatched or max_diff > atol:
        raise StageError(
            f"{onnx_path}: ONNX does not match the trained model on the test split:"
            f" {mismatched} label(s) differ, max probability difference {max_diff:.2e}"
            f" (limit export.parity_atol={atol:g})"
        )
    return {"max_abs_diff": max_diff, "rows": float(len(test.y))}


def measure_latency(onnx_path: Path, X: np.ndarray, samples: int, warmup: int) -> dict[str, float]:
    """Single-row predictions as the service makes them: one session, one thread, one row a call."""
    session = open_session(onnx_path)
    rows = [X[i % len(X)][None, :] for i in range(samples + warmup)]
    for row in rows[:warmup]:
        session.run(None, {"input": row})
    timings = np.empty(samples)
    for i, row in enumerate(rows[warmup:]):
        start = time.perf_counter_ns()
        session.run(None, {"input": row})
        timings[i] = (time.perf_counter_ns() - start) / 1e6
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "mean_ms": float(timings.mean()),
        "samples": float(samples),
    }


def model_card(
    params: Params,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    latency: dict[str, float],
    onnx_sha: str,
) -> str:
    per_class = ", ".join(
        f"{k}: {v:.3f}" for k, v in sorted(metrics.get("per_class_f1", {}).items())
    )
    return f"""# Model card: {params.registry.model_name}

Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by the export stage.

## Intended use
Classifies 8x8 grey-scale images of handwritten digits (0-9) given as 64 raw pixel values in
[0, {params.data.pixel_max:g}]. It is a reference model for the delivery pipeline, not for decisions
about people; inputs unlike the training images (other sizes, scanned documents, non-digits) get
confident but meaningless answers.

## Data
- source: `{meta['source']}`, {meta['rows']} images
  (after removing {meta['duplicates_removed']} duplicate(s))
- split (stratified, seed {params.seed}): {meta['split_rows']}
- data hash (sha256 of the prepared splits): `{meta['data_hash']}`

## Model
- small CNN: conv widths {params.model.channels}, hidden {params.model.hidden},
  dropout {params.model.dropout}
- trained up to {params.train.epochs} epochs (early stopping, patience {params.train.patience}),
  AdamW lr {params.train.learning_rate}, batch {params.train.batch_size}
- served as ONNX (opset {params.export.opset}) with onnxruntime; sha256 `{onnx_sha}`

## Evaluation (held-out test split, {metrics['test_samples']} images)
| metric | value |
| --- | --- |
| accuracy | {metrics['accuracy']:.4f} |
| macro F1 | {metrics['macro_f1']:.4f} |
| ROC-AUC (one-vs-rest) | {metrics['roc_auc']:.4f} |
| p50 single-prediction latency | {latency['p50_ms']:.3f} ms |
| p99 single-prediction latency | {latency['p99_ms']:.3f} ms |

Per-class F1: {per_class}.

## Limits
- Trained on {meta['rows']} images from a single source; accuracy on other handwriting is
  unmeasured.
- Latency was measured in-process on the build machine (one onnxruntime thread, one row per call);
  it excludes HTTP and queueing.
- Release gates: accuracy >= {params.gates.min_accuracy},
  p99 latency <= {params.gates.max_p99_latency_ms} ms.
"""


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "export")
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, help="trained checkpoint (.pt)")
    parser.add_argument("--metrics", required=True, help="evaluate's metrics.json (for the card)")
    parser.add_argument("--onnx", required=True, help="ONNX file to write")
    parser.add_argument("--latency", required=True, help="latency metrics JSON to write")
    parser.add_argument("--card", required=True, help="model card markdown to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    test = load_split(args.data, "test")
    model = load_checkpoint(args.model)
    onnx_path = Path(args.onnx)
    with atomic_path(onnx_path) as tmp:
        export_onnx(model, tmp, params.export.opset)
        parity = check_parity(model, tmp, test, params.export.parity_atol)
        latency = measure_latency(tmp, test.X, params.export.latency_samples, params.export.warmup)
        onnx_sha = sha256_file(tmp)
    write_json(args.latency, {**latency, "parity_max_abs_diff": parity["max_abs_diff"]})
    meta = read_json(Path(args.data) / "meta.json")
    write_text(args.card, model_card(params, meta, read_json(args.metrics), latency, onnx_sha))
    print(
        f"export: {onnx_path} parity ok (max diff {parity['max_abs_diff']:.1e}),"
        f" latency p50 {latency['p50_ms']:.3f} ms p99 {latency['p99_ms']:.3f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("export", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
