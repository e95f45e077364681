"""export: write the ONNX model the service runs, prove it matches torch, and write its card.

The ONNX file only replaces the previous one after the parity check passes on the whole test split
(identical labels, probabilities within export.parity_atol), so a bad export never reaches serving.
The graph's input is float32 [batch, features] of the model's input schema, raw values: the
network's normalisation is part of the graph.

Everything written here is reproducible (the card holds no date and no machine's timings): the
latency gate is measured where it is decided, in the register stage, and recorded with the
registry version, never in a git-tracked file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.checkpoint import load_checkpoint, predict_proba
from ml.cli import StageError, run_stage, stage_parser
from ml.config import Params, load_params
from ml.data import Split, load_split
from ml.io import atomic_path, read_json, sha256_file, write_text
from ml.networks import ServingHead
from ml.onnx_runtime import open_session
from ml.schema import TabularInput


def export_onnx(network: nn.Module, path: Path, opset: int, features: int) -> None:
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated upstream but is exact and 20x faster here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            ServingHead(network).eval(),
            (torch.zeros(2, features),),
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


def check_parity(network: nn.Module, onnx_path: Path, test: Split, atol: float) -> float:
    """Raise StageError unless ONNX labels equal torch's and probabilities agree within atol;
    returns the largest probability difference."""
    expected = predict_proba(network, torch.from_numpy(test.X)).numpy()
    probabilities, labels = open_session(onnx_path).run(None, {"input": test.X})
    max_diff = float(np.max(np.abs(probabilities - expected)))
    mismatched = int(np.sum(labels != expected.argmax(axis=1)))
    if mismatched or max_diff > atol:
        raise StageError(
            f"{onnx_path}: ONNX does not match the trained model on the test split:"
            f" {mismatched} label(s) differ, max probability difference {max_diff:.2e}"
            f" (limit export.parity_atol={atol:g})"
        )
    return max_diff


def _input_section(params: Params) -> str:
    schema = params.input
    norm = {
        "range": "(x - low) / (high - low) with the declared range",
        "standardize": "(x - mean) / std of the training split",
        "none": "none",
    }[schema.normalisation]
    text = f"{schema.describe()}; float32. Normalisation inside the graph: {norm}."
    if isinstance(schema, TabularInput):
        rows = "\n".join(f"| {f.name} | {f.range[0]:g} | {f.range[1]:g} |" for f in schema.features)
        text += f"\n\n| feature | low | high |\n| --- | ---: | ---: |\n{rows}"
    return text


def _metric_rows(metrics: dict[str, Any], params: Params) -> str:
    names = [
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1"),
        ("roc_auc", "ROC-AUC" + (" (one-vs-rest)" if params.task.type == "multiclass" else "")),
    ]
    if params.task.type == "binary":
        positive = params.task.positive_class
        names += [
            ("precision", f"precision ({positive})"),
            ("recall", f"recall ({positive})"),
            ("f1", f"F1 ({positive})"),
            ("average_precision", f"average precision ({positive})"),
        ]
    rows = [f"| {label} | {float(metrics[key]):.4f} |" for key, label in names if key in metrics]
    for baseline, scores in sorted(metrics.get("baselines", {}).items()):
        label = baseline.replace("_", " ")
        rows.append(f"| baseline: {label}, accuracy | {float(scores['accuracy']):.4f} |")
    return "\n".join(rows)


def model_card(
    name: str, params: Params, meta: dict[str, Any], metrics: dict[str, Any], onnx_sha: str
) -> str:
    task, gates = params.task, params.gates
    per_class = ", ".join(f"{k}: {v:.3f}" for k, v in metrics.get("per_class_f1", {}).items())
    outputs = f"{task.type} classification over {task.num_classes} classes {task.classes}"
    if task.positive_class:
        outputs += f"; positive class `{task.positive_class}`"
    limitations = "\n".join(f"- {line}" for line in params.card.limitations)
    model = params.model.model_dump(mode="json")
    family = model.pop("family")
    gains = ", ".join(
        f"{name.replace('_', ' ')} {gain:+g}"
        for name, gain in sorted(gates.min_gain_over_baselines.items())
    )
    return f"""# Model card: {name}

Written by the export stage from the model's params, data and evaluation; reproducible, so a
re-run on the same inputs writes the same card.

## Intended use
{params.card.intended_use}

## Input
{_input_section(params)}

## Output
`probabilities` float32 [batch, {task.num_classes}] (softmax) and `label` int64 [batch] (argmax):
{outputs}.

## Data
- source: `{meta['source']}`, {meta['rows']} rows (after removing {meta['duplicates_removed']}
  duplicate(s))
- split (stratified, seed {params.seed}): {meta['split_rows']}
- data hash (sha256 of the prepared splits): `{meta['data_hash']}`

## Model
- {family}: {model}
- trained up to {params.train.epochs} epochs (early stopping, patience {params.train.patience}),
  AdamW lr {params.train.learning_rate}, batch {params.train.batch_size}
- served as ONNX (opset {params.export.opset}) with onnxruntime; sha256 `{onnx_sha}`

## Evaluation (held-out test split, {metrics['test_samples']} rows)
| metric | value |
| --- | ---: |
{_metric_rows(metrics, params)}

Per-class F1: {per_class}.

## Release gates (checked by the register stage)
accuracy >= {gates.min_accuracy}, ROC-AUC >= {gates.min_roc_auc}, accuracy gain over each baseline
of the same split >= {gains}, p99 single-prediction latency <= {gates.max_p99_latency_ms:g} ms
(measured on the registering machine and recorded with the registry version, not here).

## Limitations
{limitations}
"""


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "export")
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", required=True, help="trained checkpoint (.pt)")
    parser.add_argument("--metrics", required=True, help="evaluate's metrics.json (for the card)")
    parser.add_argument("--onnx", required=True, help="ONNX file to write")
    parser.add_argument("--card", required=True, help="model card markdown to write")
    parser.add_argument("--name", required=True, help="this model's name (the card's title)")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    test = load_split(args.data, "test")
    network = load_checkpoint(args.model)
    onnx_path = Path(args.onnx)
    with atomic_path(onnx_path) as tmp:
        export_onnx(network, tmp, params.export.opset, params.input.feature_count)
        max_diff = check_parity(network, tmp, test, params.export.parity_atol)
        onnx_sha = sha256_file(tmp)
    meta = read_json(Path(args.data) / "meta.json")
    write_text(args.card, model_card(args.name, params, meta, read_json(args.metrics), onnx_sha))
    print(f"export: {onnx_path} parity ok (max diff {max_diff:.1e}), sha256 {onnx_sha[:12]}")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("export", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
