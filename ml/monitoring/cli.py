"""`python -m ml.monitoring drift|trigger|synthetic`: the drift CronJob, manual or other retraining
signals, and the synthetic shifted samples `make drift` compares.

Secrets come from the environment (SAMPLE_TOKEN, GITLAB_TRIGGER_TOKEN, GITLAB_READ_TOKEN,
ARGO_TOKEN) or token files, never from arguments that show up in `ps`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import numpy as np

from ml.cli import StageError
from ml.config import Params, ParamsError, load_params
from ml.data import load_split
from ml.monitoring.drift import build_reference, detect
from ml.monitoring.live import (
    LiveSample,
    LiveSampleError,
    fetch_snapshots,
    load_sample_file,
    merge_snapshots,
    resolve_pods,
)
from ml.monitoring.metrics import DriftMetrics
from ml.monitoring.drift_report import build_report, write_reports
from ml.monitoring.shifts import SHIFTS, apply_shift
from ml.schema import ImageInput
from ml.monitoring.trigger import (
    ArgoBackend,
    Backend,
    Decision,
    GitLabBackend,
    JenkinsBackend,
    Signals,
    StateStore,
    Trigger,
    TriggerError,
)

Env = Mapping[str, str]
ClientFactory = Callable[[], httpx.Client]


def _default_client() -> httpx.Client:
    return httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0))


def _secret(env: Env, name: str, file: str | None) -> str | None:
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise TriggerError(f"{file}: cannot read {name}: {exc.strerror}") from None
    return env.get(name) or None


def add_trigger_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("retraining trigger")
    group.add_argument("--state", type=Path, default=Path(".bench/retrain-state.json"))
    group.add_argument(
        "--dry-run", action="store_true", help="decide, submit nothing, write nothing"
    )
    group.add_argument("--backend", choices=("none", "argo", "gitlab", "jenkins"), default="none")
    group.add_argument(
        "--retrain-model", default=None, help="models.yaml name to retrain (env RETRAIN_MODEL)"
    )
    group.add_argument("--jenkins-url", default=None, help="else env JENKINS_URL")
    group.add_argument("--jenkins-job", default=None, help="e.g. mlops/job/main (env JENKINS_JOB)")
    group.add_argument("--argo-server", default=None, help="Argo Server URL (env ARGO_SERVER_URL)")
    group.add_argument("--argo-namespace", default=None, help="default: env POD_NAMESPACE")
    group.add_argument("--argo-template", default="training", help="WorkflowTemplate name")
    group.add_argument("--argo-pipeline", default="dvc-training", help="pipeline label value")
    group.add_argument("--argo-token-file", default=None, help="else env ARGO_TOKEN")
    group.add_argument("--gitlab-api", default=None, help="e.g. https://gitlab.example.com/api/v4")
    group.add_argument("--gitlab-project", default=None, help="id or path, e.g. mlops/gitops")
    group.add_argument("--gitlab-ref", default="main")


def make_backend(args: argparse.Namespace, env: Env, client: httpx.Client) -> Backend | None:
    model = args.retrain_model or env.get("RETRAIN_MODEL", "")
    if args.backend == "jenkins":
        url = args.jenkins_url or env.get("JENKINS_URL")
        job = args.jenkins_job or env.get("JENKINS_JOB")
        user, token = env.get("JENKINS_USER"), env.get("JENKINS_API_TOKEN")
        if not url or not job or not user or not token:
            raise TriggerError(
                "jenkins backend needs --jenkins-url, --jenkins-job, JENKINS_USER and"
                " JENKINS_API_TOKEN"
            )
        return JenkinsBackend(client, url, job, user, token, model)
    if args.backend == "argo":
        server = args.argo_server or env.get("ARGO_SERVER_URL")
        namespace = args.argo_namespace or env.get("POD_NAMESPACE")
        if not server or not namespace:
            raise TriggerError("argo backend needs --argo-server and --argo-namespace")
        token = _secret(env, "ARGO_TOKEN", args.argo_token_file)
        return ArgoBackend(server, namespace, args.argo_template, args.argo_pipeline, token)
    if args.backend == "gitlab":
        trigger_token = env.get("GITLAB_TRIGGER_TOKEN")
        if not args.gitlab_api or not args.gitlab_project or not trigger_token:
            raise TriggerError(
                "gitlab backend needs --gitlab-api, --gitlab-project and GITLAB_TRIGGER_TOKEN"
            )
        return GitLabBackend(
            args.gitlab_api,
            args.gitlab_project,
            trigger_token,
            args.gitlab_ref,
            env.get("GITLAB_READ_TOKEN") or None,
            model,
        )
    return None


def _load(args: argparse.Namespace) -> Params:
    return load_params(args.params, args.shared_params)


def _decide(args: argparse.Namespace, env: Env, signals: Signals, client: httpx.Client) -> Decision:
    retrain = _load(args).monitoring.retrain
    backend = make_backend(args, env, client)
    # RETRAIN_DRY_RUN lets an environment's config (not the CronJob's command) say "decide only"
    dry_run = args.dry_run or env.get("RETRAIN_DRY_RUN", "").strip().lower() in ("1", "true", "yes")
    trigger = Trigger(StateStore(args.state), backend, retrain, dry_run=dry_run)
    return trigger.evaluate(signals)


# -- drift --------------------------------------------------------------------------------------


def _live_sample(
    args: argparse.Namespace, env: Env, client: httpx.Client, max_rows: int
) -> LiveSample:
    if args.sample is not None:
        return load_sample_file(args.sample)
    token = env.get("SAMPLE_TOKEN")
    if not token:
        raise LiveSampleError("SAMPLE_TOKEN is not set: the service's sample route needs it")
    urls = list(args.service_url or [])
    if args.service_dns:
        host, _, port = args.service_dns.rpartition(":")
        if not host or not port.isdigit():
            raise LiveSampleError(f"--service-dns {args.service_dns!r}: expected HOST:PORT")
        urls += resolve_pods(host, int(port))
    snapshots, failures = fetch_snapshots(urls, token, client)
    for failure in failures:
        print(f"drift: warning: skipped {failure}", file=sys.stderr)
    return merge_snapshots(snapshots, max_rows, np.random.default_rng(args.seed))


def _window_id(live: LiveSample) -> str:
    """The data a verdict is about: newest window start (service) or the sample's content."""
    starts = [float(w["start_unix"]) for w in live.windows if w.get("start_unix") is not None]
    if starts:
        return f"window-{max(starts):.0f}"
    return "sample-" + hashlib.sha256(live.rows.tobytes()).hexdigest()[:16]


def cmd_drift(args: argparse.Namespace, env: Env, client_factory: ClientFactory) -> int:
    params = _load(args)
    settings = params.monitoring.drift
    reference_split = load_split(args.reference.parent, args.reference.stem)
    reference = build_reference(
        reference_split.X,
        reference_split.y,
        settings,
        params.task.num_classes,
        params.input.bounds(),
        seed=params.seed,
    )
    with client_factory() as client:
        live = _live_sample(args, env, client, settings.max_live_rows)
        result = detect(reference, live.rows, live.labels, settings)
        decision = None
        trigger_error: TriggerError | None = None
        if args.trigger:
            signals = Signals(
                drift=result.detected,
                model_version=",".join(live.model_versions),
                window=_window_id(live),
            )
            try:
                decision = _decide(args, env, signals, client)
            except TriggerError as error:  # the verdict is still written and pushed below
                trigger_error = error
    finished = time.time()
    report = build_report(
        result.to_dict(),
        live.describe(),
        {"source": str(args.reference), "rows": int(reference.rows.shape[0])},
        (
            decision.to_dict()
            if decision is not None
            else {"action": "error", "why": str(trigger_error)} if trigger_error else None
        ),
        finished,
    )
    json_path, html_path = write_reports(report, args.out)
    metrics = DriftMetrics()
    metrics.record_drift(result, finished)
    if decision is not None:
        metrics.record_decision(decision)
    metrics.write(args.metrics_file or args.out / "drift.prom")
    gateway = args.pushgateway or env.get("PUSHGATEWAY_URL")
    if gateway:
        grouping = {
            "namespace": args.namespace or env.get("POD_NAMESPACE", "local"),
            "app": args.app or env.get("APP", "local"),
        }
        try:
            metrics.push(gateway, grouping)
        except OSError as exc:  # urllib errors: the report is written, say what failed
            raise LiveSampleError(f"push to {gateway} failed: {exc}") from exc
    verdict = (
        "no verdict (too few rows)"
        if not result.sufficient_data
        else ("DRIFT" if result.detected else "no drift")
    )
    print(
        f"drift: {verdict}: {result.drifted_share:.1%} of features over {settings.threshold} "
        f"({settings.statistic}), prediction shift "
        f"{'n/a' if result.prediction_shift is None else f'{result.prediction_shift:.3f}'}, "
        f"{result.live_rows} live rows; reports: {json_path}, {html_path}"
    )
    if decision is not None:
        print(f"retrain: {decision.action}: {decision.why}")
    if trigger_error is not None:
        raise trigger_error  # after the report and metrics: a failed call loses neither
    return 0


# -- trigger ------------------------------------------------------------------------------------


def cmd_trigger(args: argparse.Namespace, env: Env, client_factory: ClientFactory) -> int:
    performance_drop = None
    if args.current_accuracy is not None:
        if args.baseline_accuracy is None or args.baseline_accuracy <= 0:
            raise TriggerError("--current-accuracy needs a positive --baseline-accuracy")
        performance_drop = 1.0 - args.current_accuracy / args.baseline_accuracy
    signals = Signals(
        performance_drop=performance_drop,
        new_rows=args.new_rows,
        scheduled=args.reason == "schedule",
        manual=args.reason == "manual",
        model_version=args.model_version,
        window=args.window,
    )
    with client_factory() as client:
        decision = _decide(args, env, signals, client)
    print(json.dumps(decision.to_dict(), indent=2, sort_keys=True))
    return 0


# -- synthetic ----------------------------------------------------------------------------------


def cmd_synthetic(args: argparse.Namespace, env: Env, client_factory: ClientFactory) -> int:
    params = _load(args)
    splits = [load_split(args.data, name) for name in args.split.split(",")]
    x = np.concatenate([split.X for split in splits])
    y = np.concatenate([split.y for split in splits])
    rng = np.random.default_rng(args.seed)
    shape = params.input.shape if isinstance(params.input, ImageInput) else None
    image = (shape[0], shape[1]) if shape else None
    rows, _ = apply_shift(x, y, args.shift, rng, params.input.bounds(), args.magnitude, image)
    payload: dict[str, np.ndarray] = {"X": rows}
    if args.model is not None and args.model.is_file():
        from ml.onnx_runtime import open_session

        (labels,) = open_session(args.model).run(["label"], {"input": rows})
        payload["labels"] = np.asarray(labels, dtype=np.int64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "wb") as handle:
        np.savez(handle, **payload)  # type: ignore[arg-type]  # numpy's stub types kwds as bool
    labelled = "with" if "labels" in payload else "without"
    print(
        f"synthetic: {len(rows)} rows of {args.split} shifted by {args.shift!r} -> {args.out} "
        f"({labelled} predicted labels)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ml.monitoring", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    drift = sub.add_parser("drift", help="compare live inputs with the training reference")
    drift.add_argument("--params", type=Path, required=True, help="the model's params.yaml")
    drift.add_argument("--shared-params", type=Path, default=None, help="the root params.yaml")
    drift.add_argument("--reference", type=Path, default=Path("data/prepared/train.npz"))
    source = drift.add_mutually_exclusive_group(required=True)
    source.add_argument("--sample", type=Path, help="a local .npz (X, optional labels)")
    source.add_argument("--service-dns", help="HOST:PORT of a headless Service: every pod")
    source.add_argument("--service-url", action="append", help="a pod or service base URL")
    drift.add_argument("--out", type=Path, default=Path("reports/drift"))
    drift.add_argument("--metrics-file", type=Path, default=None)
    drift.add_argument("--pushgateway", default=None, help="else env PUSHGATEWAY_URL")
    drift.add_argument("--namespace", default=None, help="grouping label; else env POD_NAMESPACE")
    drift.add_argument("--app", default=None, help="grouping label; else env APP")
    drift.add_argument("--seed", type=int, default=0)
    drift.add_argument("--trigger", action="store_true", help="evaluate retraining on the verdict")
    add_trigger_options(drift)
    drift.set_defaults(func=cmd_drift)

    trig = sub.add_parser("trigger", help="retraining for a reason other than drift")
    trig.add_argument("--params", type=Path, required=True, help="the model's params.yaml")
    trig.add_argument("--shared-params", type=Path, default=None, help="the root params.yaml")
    trig.add_argument("--reason", choices=("manual", "schedule", "signals"), default="signals")
    trig.add_argument("--current-accuracy", type=float, default=None)
    trig.add_argument("--baseline-accuracy", type=float, default=None)
    trig.add_argument("--new-rows", type=int, default=None)
    trig.add_argument("--model-version", default="")
    trig.add_argument("--window", default="", help="what the signals were computed on (dedup)")
    add_trigger_options(trig)
    trig.set_defaults(func=cmd_trigger)

    syn = sub.add_parser("synthetic", help="write a shifted copy of a prepared split")
    syn.add_argument("--params", type=Path, required=True, help="the model's params.yaml")
    syn.add_argument("--shared-params", type=Path, default=None, help="the root params.yaml")
    syn.add_argument("--data", type=Path, default=Path("data/prepared"))
    syn.add_argument(
        "--split",
        default="val,test",
        help="held-out split(s), comma-separated (default: %(default)s)",
    )
    syn.add_argument("--shift", choices=SHIFTS, required=True)
    syn.add_argument("--magnitude", type=float, default=None)
    syn.add_argument("--model", type=Path, default=None, help="label rows with this ONNX model")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--out", type=Path, required=True)
    syn.set_defaults(func=cmd_synthetic)
    return parser


def main(
    argv: Sequence[str] | None = None,
    env: Env | None = None,
    client_factory: ClientFactory = _default_client,
) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args, os.environ if env is None else env, client_factory)
    except (LiveSampleError, TriggerError, ParamsError, StageError, ValueError) as exc:
        print(f"{args.command}: error: {exc}", file=sys.stderr)
        return 1
    return code
