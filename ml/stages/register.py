"""register: gate the exported model, then record it in the MLflow Model Registry.

Gates (params.yaml `gates`) are checked first: when any fails the stage prints a table of gate,
measured value and limit, exits non-zero, registers nothing and leaves the alias where it was.
When all pass, the ONNX model is logged with the MLflow onnx flavour (so `mlflow models serve`
can serve it), tagged with git commit, data hash, params hash and metrics, and the alias moves.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ml.cli import StageError, run_stage, stage_parser
from ml.config import GateParams, Params, load_params
from ml.io import read_json, sha256_file, write_json
from ml.registration import GateResult, RegistrationRecord


def check_gates(
    gates: GateParams, metrics: dict[str, Any], latency: dict[str, Any]
) -> list[GateResult]:
    accuracy, p99 = float(metrics["accuracy"]), float(latency["p99_ms"])
    return [
        GateResult(
            gate="min_accuracy",
            measured=accuracy,
            limit=gates.min_accuracy,
            passed=accuracy >= gates.min_accuracy,
        ),
        GateResult(
            gate="max_p99_latency_ms",
            measured=p99,
            limit=gates.max_p99_latency_ms,
            passed=p99 <= gates.max_p99_latency_ms,
        ),
    ]


def gate_table(results: list[GateResult]) -> str:
    lines = [f"{'gate':<22}{'measured':>12}{'limit':>12}  result"]
    for r in results:
        lines.append(
            f"{r.gate:<22}{r.measured:>12.4f}{r.limit:>12.4f}  {'pass' if r.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def git_commit() -> str:
    """HEAD's sha, suffixed -dirty when the tree has uncommitted changes; 'unknown' outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def params_hash(params: Params) -> str:
    return hashlib.sha256(json.dumps(params.model_dump(), sort_keys=True).encode()).hexdigest()


def register_model(params: Params, onnx_path: Path, run_id: str, tags: dict[str, str]) -> str:
    """Log the ONNX model into the training run, register it, tag the version; returns version."""
    import mlflow
    import onnx
    import onnxruntime as ort
    from mlflow import MlflowClient

    from ml.tracking import start_tracking

    start_tracking()
    name = params.registry.model_name
    with mlflow.start_run(run_id=run_id):
        # explicit requirements: MLflow's own inference imports the world and costs ~5 s
        requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}"]
        info = mlflow.onnx.log_model(
            onnx.load(str(onnx_path)),
            name="onnx-model",
            registered_model_name=name,
            pip_requirements=requirements,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, params.registry.alias, version)
    return version


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "register")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--latency", required=True)
    parser.add_argument("--run-info", required=True)
    parser.add_argument("--data-meta", required=True)
    parser.add_argument("--out", required=True, help="registration.json to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    metrics, latency = read_json(args.metrics), read_json(args.latency)
    results = check_gates(params.gates, metrics, latency)
    print(gate_table(results))
    if not all(r.passed for r in results):
        failed = ", ".join(r.gate for r in results if not r.passed)
        raise StageError(
            f"release gate(s) failed: {failed}; nothing registered,"
            f" alias {params.registry.alias!r} unchanged"
        )
    record: dict[str, Any] = {
        "model_name": params.registry.model_name,
        "alias": params.registry.alias,
        "run_id": read_json(args.run_info)["run_id"],
        "git_commit": git_commit(),
        "data_hash": read_json(args.data_meta)["data_hash"],
        "params_hash": params_hash(params),
        "params": params.model_dump(),
        "metrics": {k: float(metrics[k]) for k in ("accuracy", "macro_f1", "roc_auc")},
        "latency": {k: float(latency[k]) for k in ("p50_ms", "p99_ms")},
        "onnx_sha256": sha256_file(args.onnx),
        "gates": [r.model_dump() for r in results],
    }
    tags = {k: str(record[k]) for k in ("git_commit", "data_hash", "params_hash", "onnx_sha256")}
    tags.update({f"metric.{k}": f"{v:.6f}" for k, v in record["metrics"].items()})
    tags.update({f"latency.{k}": f"{v:.4f}" for k, v in record["latency"].items()})
    version = register_model(params, Path(args.onnx), record["run_id"], tags)
    record.update(
        version=version,
        model_uri=f"models:/{params.registry.model_name}/{version}",
        registered_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    # validated before writing: every reader parses it with the same model (ml.registration)
    write_json(args.out, RegistrationRecord.model_validate(record).model_dump(mode="json"))
    print(
        f"register: {record['model_uri']} -> alias {params.registry.alias!r}"
        f" (commit {record['git_commit'][:12]})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("register", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
