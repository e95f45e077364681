"""``python -m scripts.rehearsal``: would this model be promoted or aborted by the canary?

Exit codes: 0 Promoted, 1 Aborted, 2 Paused (inconclusive analysis or a manual gate with
``--manual-gates stop``), 3 the rehearsal could not run (bad input, missing Prometheus, a feature
it cannot reproduce), 4 InvalidSpec (the controller would refuse the Rollout: an unresolved
argument, an inline metric without an end), 130 interrupted. Writes ``rehearsal.md``
(merge-request report) and ``rehearsal-junit.xml`` (CI) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Sequence

from ml.catalog import CatalogError
from scripts.rehearsal.analysis import AnalysisSpecError, RehearsalUnsupported
from scripts.rehearsal.canary import Event, RehearsalTimeout, RolloutSpecError
from scripts.rehearsal.expr import UnsupportedExpression
from scripts.rehearsal.orchestrator import (
    REPO_ROOT,
    RehearsalEnvironment,
    RehearsalOptions,
    RehearsalSetupError,
    load_rows_from_split,
    run_rehearsal,
)
from scripts.rehearsal.report import format_event, render_junit, render_markdown

EXIT_CANNOT_REHEARSE = 3
EXIT_INTERRUPTED = 130


def _faults(prefix: str, args: argparse.Namespace) -> dict[str, str]:
    faults: dict[str, str] = {}
    for option, variable in (
        ("error_rate", "FAULT_ERROR_RATE"),
        ("latency_ms", "FAULT_LATENCY_MS"),
        ("degrade", "FAULT_DEGRADE"),
    ):
        value = getattr(args, f"{prefix}_{option}")
        if value not in (None, ""):
            faults[variable] = str(value)
    return faults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.rehearsal",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--name",
        default=None,
        help="the model of models.yaml to rehearse (default: the first); sets the defaults below",
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        default=None,
        help="kustomize overlay whose Rollout and AnalysisTemplates are rehearsed"
        " (default: apps/<app>/overlays/staging)",
    )
    parser.add_argument(
        "--model", default=None, help="candidate (MODEL_URI; default: <folder>/model.onnx)"
    )
    parser.add_argument(
        "--registration",
        default=None,
        help="candidate's registration record (default: the model's, with its registry version"
        " when this machine registered it)",
    )
    parser.add_argument(
        "--load",
        type=Path,
        default=None,
        help="the split whose rows are sent (default: <folder>/data/prepared/test.npz)",
    )
    parser.add_argument(
        "--stable-model",
        default=None,
        help="stable model: a file or models:/<name>@<alias> (default: the candidate, as on a "
        "first release)",
    )
    parser.add_argument("--stable-registration", default=None)
    parser.add_argument(
        "--time-factor",
        type=float,
        default=60.0,
        help="divide every duration by this (default 60: 5m -> 5 s)",
    )
    parser.add_argument("--rps", type=float, default=100.0, help="total requests per second")
    for role in ("canary", "stable"):
        parser.add_argument(f"--{role}-error-rate", type=float, help=f"inject 5xx into {role}")
        parser.add_argument(f"--{role}-latency-ms", type=float, help=f"add latency to {role}")
        parser.add_argument(
            f"--{role}-degrade", choices=("shuffle", "constant"), help=f"degrade {role}'s model"
        )
    parser.add_argument(
        "--manual-gates",
        choices=("pass", "stop"),
        default="pass",
        help="`pause: {}` steps: pass them (flagged in the verdict) or stop there (exit 2)",
    )
    parser.add_argument("--max-seconds", type=float, default=300.0, help="time budget")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report directory (default: reports/rehearsal/<name>)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, TSDB)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rehearse N times and report how often the verdict flipped (flakiness)",
    )
    return parser


def resolve_model(args: argparse.Namespace) -> None:
    """Fill the per-model defaults from models.yaml (the named model, else the first)."""
    from ml.catalog import load_catalog
    from ml.registration import RecordError, local_record_path, read_best_record

    catalog = load_catalog(REPO_ROOT / "models.yaml")
    entry = catalog.get(args.name) if args.name else catalog.entries[0]
    folder = REPO_ROOT / entry.folder
    args.name = entry.name
    args.overlay = args.overlay or REPO_ROOT / "apps" / entry.app / "overlays" / "staging"
    args.out = args.out or REPO_ROOT / "reports" / "rehearsal" / entry.name
    args.load = args.load or folder / "data" / "prepared" / "test.npz"
    default_model = folder / "model.onnx"
    chosen = Path(args.model).resolve() if args.model else default_model
    args.model = str(chosen)
    tracked = folder / "registration.json"
    # The pipeline's record describes the pipeline's model only (the service checks its sha256);
    # the local record adds this machine's registry version when it describes the same model.
    if args.registration is None and chosen == default_model.resolve() and tracked.is_file():
        try:
            best = read_best_record(tracked)
        except RecordError:
            best = None
        local = local_record_path(tracked)
        args.registration = str(local if best is not None and best.version else tracked)


def options_from(args: argparse.Namespace) -> RehearsalOptions:
    return RehearsalOptions(
        overlay=args.overlay,
        candidate_model=args.model,
        load_rows=load_rows_from_split(args.load) if args.load else (),
        registration=args.registration,
        stable_model=args.stable_model,
        stable_registration=args.stable_registration,
        time_factor=args.time_factor,
        rps=args.rps,
        canary_faults=_faults("canary", args),
        stable_faults=_faults("stable", args),
        manual_gates=args.manual_gates,
        max_seconds=args.max_seconds,
        keep=args.keep,
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (a cancelled CI job) takes the same path as Ctrl-C, so cleanup always runs.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.time_factor <= 0 or args.rps <= 0 or args.repeat < 1:
        print("rehearsal: --time-factor, --rps and --repeat must be > 0", file=sys.stderr)
        return EXIT_CANNOT_REHEARSE
    try:
        resolve_model(args)
        options = options_from(args)
    except (CatalogError, RehearsalSetupError) as exc:
        print(f"rehearsal: cannot rehearse: {exc}", file=sys.stderr)
        return EXIT_CANNOT_REHEARSE
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)

    def show(event: Event, env: RehearsalEnvironment) -> None:
        print(format_event(event), flush=True)

    print(
        f"rehearsal of {args.name}: overlay {options.overlay}, candidate {options.candidate_model},"
        f" load {args.load}, stable "
        f"{options.stable_model or 'the candidate'}, time factor {options.time_factor:g} "
        "(a local stand-in for the Argo Rollouts controller)",
        flush=True,
    )
    verdicts: list[str] = []
    try:
        for attempt in range(args.repeat):
            if args.repeat > 1:
                print(f"rehearsal: run {attempt + 1} of {args.repeat}", flush=True)
            result, facts = run_rehearsal(options, on_event=show)
            verdicts.append(result.verdict.headline())
    except KeyboardInterrupt:
        print("rehearsal: interrupted; every process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        RehearsalSetupError,
        RolloutSpecError,
        RehearsalUnsupported,
        UnsupportedExpression,
        RehearsalTimeout,
        AnalysisSpecError,
    ) as exc:
        print(f"rehearsal: cannot rehearse: {exc}", file=sys.stderr)
        return EXIT_CANNOT_REHEARSE
    finally:
        signal.signal(signal.SIGTERM, previous)
    args.out.mkdir(parents=True, exist_ok=True)
    ignore = args.out / ".gitignore"
    if not ignore.exists():  # generated reports are never committed
        ignore.write_text("*\n")
    (args.out / "rehearsal.md").write_text(render_markdown(result))
    (args.out / "rehearsal-junit.xml").write_text(render_junit(result))
    summary = _summary(result, facts)
    if args.repeat > 1:
        counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
        summary["repeats"] = {"runs": args.repeat, "verdicts": counts}
        print(f"rehearsal: verdicts over {args.repeat} runs: {counts}")
    (args.out / "rehearsal.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"rehearsal: {result.verdict.headline()}")
    print(
        f"rehearsal: {facts['total_seconds']} s in all ({facts['setup_seconds']} s to start, "
        f"{facts['rollout_seconds']} s of rollout); requests {facts['requests']}; "
        f"reports in {args.out}"
    )
    return result.verdict.exit_code


def _summary(result: Any, facts: dict[str, Any]) -> dict[str, Any]:
    verdict = result.verdict
    return {
        "verdict": str(verdict.outcome),
        "headline": verdict.headline(),
        "exit_code": verdict.exit_code,
        "step": verdict.step,
        "metric": verdict.metric,
        "reason": verdict.reason,
        "manual_gates_passed": list(verdict.gates_passed),
        "runs": [
            {"run": r.label, "templates": list(r.templates), "phase": str(r.run.phase)}
            for r in result.runs
        ],
        **facts,
    }


if __name__ == "__main__":
    raise SystemExit(main())
