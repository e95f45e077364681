"""register: gate the exported model, then record it in the MLflow Model Registry.

Gates (params `gates`) are checked first: accuracy and ROC-AUC floors, the gain over the best
baseline evaluate computed on the same split, and the p99 single-prediction latency of the ONNX
model measured here. When any fails the stage prints a table of gate, measured value and limit,
exits non-zero, registers nothing and leaves the alias where it was.

When all pass, the registry gets the model once per content: a version whose `onnx_sha256` tag
equals this file's is reused (a re-run, a fresh clone, an interrupted run) instead of adding a
duplicate; otherwise the ONNX file is logged into the run as our pyfunc model (ml/mlflow_model.py:
onnxruntime over that very file, a column per input feature in its signature, so
`mlflow models serve` answers `dataframe_split` requests with labels and probabilities), then
registered with its tags in one call (one database transaction: no version can exist
without the `onnx_sha256` tag that finds it again). Then the alias moves. Ctrl-C or SIGTERM
during that section is held until it completes (the stage then exits 130 and DVC records
nothing); a harder kill leaves either no version or a fully tagged one, and the next `dvc repro`
reruns register, finds the version by content and moves the alias: never a duplicate version.
It writes `registration.json` (git-tracked, content only), `metrics/release.json` (the gate
verdict and whether this run released) and `registration.local.json` (git-ignored: version, run,
commit, time, latency of this machine); see ml/registration.py.

Experiments never release. Under `dvc exp run` (DVC sets DVC_EXP_NAME) the gates are evaluated
and recorded, but nothing is registered and no alias moves, and a failing gate is a result shown
in `dvc exp show` (`release.json`: gates_passed false), not a failed experiment. The registry
and the `candidate` alias move only on the main pipeline (`make pipeline` / `dvc repro`).
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ml.catalog import ModelEntry, load_catalog
from ml.cli import StageError, add_catalog_options, run_stage, stage_parser
from ml.config import GateParams, Params, load_params, model_params
from ml.data import load_split
from ml.io import read_json, sha256_file, write_json
from ml.onnx_runtime import open_session
from ml.registration import (
    GateResult,
    LatencyMeasurement,
    RegistrationRecord,
    ReleaseVerdict,
    local_record_path,
)
from ml.tracking import dvc_experiment, store_root


def content_gates(gates: GateParams, metrics: dict[str, Any]) -> list[GateResult]:
    """The gates decided by the evaluation alone (the same on every machine)."""
    accuracy, roc_auc = float(metrics["accuracy"]), float(metrics["roc_auc"])
    results = [
        GateResult(
            gate="min_accuracy",
            measured=accuracy,
            limit=gates.min_accuracy,
            passed=accuracy >= gates.min_accuracy,
        ),
        GateResult(
            gate="min_roc_auc",
            measured=roc_auc,
            limit=gates.min_roc_auc,
            passed=bool(roc_auc >= gates.min_roc_auc),  # NaN (one class in test) fails
        ),
    ]
    for baseline, limit in sorted(gates.min_gain_over_baselines.items()):
        scores = metrics.get("baselines", {}).get(baseline)
        if scores is None:
            raise StageError(f"metrics have no {baseline!r} baseline: run the evaluate stage")
        gain = accuracy - float(scores["accuracy"])
        results.append(
            GateResult(
                gate=f"gain_over_{baseline}",
                measured=gain,
                limit=limit,
                # rounded: a tie with the baseline must not fail on float noise
                passed=round(gain, 9) >= limit,
            )
        )
    return results


def measure_latency(onnx_path: Path, X: np.ndarray, gates: GateParams) -> LatencyMeasurement:
    """Single-row predictions as the service makes them: one session, one thread, one row a call."""
    session = open_session(onnx_path)
    samples, warmup = gates.latency_samples, gates.latency_warmup
    rows = [X[i % len(X)][None, :] for i in range(samples + warmup)]
    for row in rows[:warmup]:
        session.run(None, {"input": row})
    timings = np.empty(samples)
    for i, row in enumerate(rows[warmup:]):
        start = time.perf_counter_ns()
        session.run(None, {"input": row})
        timings[i] = (time.perf_counter_ns() - start) / 1e6
    p99 = float(np.percentile(timings, 99))
    return LatencyMeasurement(
        p50_ms=float(np.percentile(timings, 50)),
        p99_ms=p99,
        mean_ms=float(timings.mean()),
        samples=samples,
        gate=GateResult(
            gate="max_p99_latency_ms",
            measured=p99,
            limit=gates.max_p99_latency_ms,
            passed=p99 <= gates.max_p99_latency_ms,
        ),
    )


def gate_table(results: list[GateResult]) -> str:
    lines = [f"{'gate':<26}{'measured':>12}{'limit':>12}  result"]
    for r in results:
        lines.append(
            f"{r.gate:<26}{r.measured:>12.4f}{r.limit:>12.4f}  {'pass' if r.passed else 'FAIL'}"
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
    return hashlib.sha256(json.dumps(model_params(params), sort_keys=True).encode()).hexdigest()


@contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block completes, then raise KeyboardInterrupt: the registry
    and the records are written together or not at all by a Ctrl-C."""
    received: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        received.append(signum)
        print(f"register: signal {signum} held until the registry is consistent", flush=True)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt


def register_model(
    entry: ModelEntry,
    root: Path,
    alias: str,
    onnx_path: Path,
    checkpoint_sha: str,
    tags: dict[str, str],
    features: list[str],
    classes: list[str],
) -> tuple[str, str]:
    """Reuse the version holding this exact ONNX file or register a new one; move the alias.
    Returns (version, run id)."""
    import mlflow
    import onnxruntime as ort
    import pandas as pd
    from mlflow import MlflowClient

    from ml import mlflow_model

    from ml.tracking import at_store_root, registered_version, start_tracking, training_run

    experiment_id = start_tracking(entry.experiment, root)
    run_id = training_run(experiment_id, entry.name, checkpoint_sha)
    name = entry.registered_model
    client = MlflowClient()
    version = registered_version(client, name, tags["onnx_sha256"])
    if version is None:
        onnx_file = str(onnx_path.resolve())
        with at_store_root(root), mlflow.start_run(run_id=run_id):
            # explicit requirements: MLflow's own inference imports the world and costs ~5 s
            requirements = [
                f"mlflow=={mlflow.__version__}",
                f"onnxruntime=={ort.__version__}",
                f"pandas=={pd.__version__}",
            ]
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=mlflow_model.__file__,  # logged as code: no pickle of our classes
                artifacts={mlflow_model.ONNX: onnx_file},
                model_config={mlflow_model.FEATURES: features, mlflow_model.CLASSES: classes},
                signature=mlflow_model.signature(features, classes),
                pip_requirements=requirements,
            )
        # the version and every tag in one call (one transaction): the onnx_sha256 tag that
        # finds it again can never be missing, whatever interrupts this process
        created = mlflow.register_model(info.model_uri, name, tags=tags)
        version = str(created.version)
    else:
        run_id = str(client.get_model_version(name, version).run_id or run_id)
        for key, value in tags.items():  # this machine's facts of a re-registration
            client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    return version, run_id


def write_release(path: Path, gates: list[GateResult], released: bool) -> None:
    """The gate verdict as DVC metrics: `dvc exp show` compares experiments by it. Built through
    the contract its readers validate with, so a writer cannot produce what they would refuse."""
    verdict = ReleaseVerdict(
        gates_passed=all(g.passed for g in gates),
        released=released,
        failed_gates=sum(not g.passed for g in gates),
    )
    write_json(path, verdict.model_dump(mode="json"))


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "register")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--model", required=True, help="the trained checkpoint (finds its run)")
    parser.add_argument("--metrics", required=True)
    parser.add_argument("--data", required=True, help="prepared splits (meta.json, test rows)")
    parser.add_argument("--out", required=True, help="registration.json to write")
    parser.add_argument("--release", required=True, help="metrics/release.json to write")
    add_catalog_options(parser)
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.name)
    metrics = read_json(args.metrics)
    gates = content_gates(params.gates, metrics)
    latency = measure_latency(Path(args.onnx), load_split(args.data, "test").X, params.gates)
    print(gate_table([*gates, latency.gate]))
    failed = [g.gate for g in (*gates, latency.gate) if not g.passed]
    experiment = dvc_experiment()
    if failed and not experiment:
        raise StageError(
            f"release gate(s) failed: {', '.join(failed)}; nothing registered,"
            f" alias {params.registry.alias!r} unchanged"
        )
    headline = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    headline.pop("test_samples", None)
    record = RegistrationRecord(
        model_name=entry.registered_model,
        catalog_name=entry.name,
        app=entry.app,
        alias=params.registry.alias,
        input=params.input,
        task=params.task,
        data_hash=read_json(Path(args.data) / "meta.json")["data_hash"],
        params_hash=params_hash(params),
        params=model_params(params),
        metrics=headline,
        baselines=metrics["baselines"],
        onnx_sha256=sha256_file(args.onnx),
        gates=gates,
    )
    if experiment:
        write_json(args.out, record.tracked_json())
        write_release(Path(args.release), [*gates, latency.gate], released=False)
        verdict = f"gates failed ({', '.join(failed)})" if failed else "gates pass"
        print(
            f"experiment {experiment}: {verdict}; not released, alias"
            f" {params.registry.alias!r} unchanged (experiments never register: apply and commit"
            " it, then `make pipeline` releases it)"
        )
        return
    commit = git_commit()
    tags = {
        "git_commit": commit,
        "data_hash": record.data_hash,
        "params_hash": record.params_hash,
        "onnx_sha256": record.onnx_sha256,
        **{f"metric.{k}": f"{v:.6f}" for k, v in headline.items()},
        "latency.p50_ms": f"{latency.p50_ms:.4f}",
        "latency.p99_ms": f"{latency.p99_ms:.4f}",
        # what a service loading models:/<name>@<alias> needs to know about its inputs
        "input_schema": record.input.model_dump_json(),
        "task": record.task.model_dump_json(),
    }
    with interrupts_held():
        version, run_id = register_model(
            entry,
            store_root(catalog.root),
            params.registry.alias,
            Path(args.onnx),
            sha256_file(args.model),
            tags,
            params.input.feature_names(),
            list(params.task.classes),
        )
        _write_records(args, record, entry, version, run_id, commit, latency, gates)
    print(
        f"register: models:/{entry.registered_model}/{version} -> alias {params.registry.alias!r}"
        f" (onnx {record.onnx_sha256[:12]}, commit {commit[:12]})"
    )


def _write_records(
    args: Any,
    record: RegistrationRecord,
    entry: ModelEntry,
    version: str,
    run_id: str,
    commit: str,
    latency: LatencyMeasurement,
    gates: list[GateResult],
) -> None:
    local = record.model_copy(
        update={
            "version": version,
            "model_uri": f"models:/{entry.registered_model}/{version}",
            "run_id": run_id,
            "git_commit": commit,
            "registered_at": datetime.now(timezone.utc).replace(microsecond=0),
            "latency": latency,
        }
    )
    # validated before writing: every reader parses it with the same model (ml.registration)
    RegistrationRecord.model_validate(local.model_dump())
    write_json(args.out, record.tracked_json())
    write_json(local_record_path(args.out), local.model_dump(mode="json"))
    write_release(Path(args.release), [*gates, latency.gate], released=True)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("register", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
