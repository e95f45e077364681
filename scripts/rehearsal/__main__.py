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

from scripts.rehearsal.analysis import AnalysisSpecError, RehearsalUnsupported
from scripts.rehearsal.canary import Event, RehearsalTimeout, RolloutSpecError
from scripts.rehearsal.expr import UnsupportedExpression
from scripts.rehearsal.orchestrator import (
    REPO_ROOT,
    RehearsalEnvironment,
    RehearsalOptions,
    RehearsalSetupError,
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
        "--overlay",
        type=Path,
        default=REPO_ROOT / "apps/digits-classifier/overlays/staging",
        help="kustomize overlay whose Rollout and AnalysisTemplates are rehearsed",
    )
    parser.add_argument(
        "--model", default=str(REPO_ROOT / "models/model.onnx"), help="candidate (MODEL_URI)"
    )
    parser.add_argument(
        "--registration",
        default=None,
        help="candidate's registration.json (default: models/registration.json if present)",
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
        "--out", type=Path, default=REPO_ROOT / "reports/rehearsal", help="report directory"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, TSDB)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rehearse N times and report how often the verdict flipped (flakiness)",
    )
    return parser


def options_from(args: argparse.Namespace) -> RehearsalOptions:
    registration = args.registration
    default_registration = REPO_ROOT / "models/registration.json"
    # The pipeline's record describes the pipeline's model only (the service checks its sha256).
    default_model = Path(args.model).resolve() == (REPO_ROOT / "models/model.onnx").resolve()
    if registration is None and default_model and default_registration.is_file():
        registration = str(default_registration)
    return RehearsalOptions(
        overlay=args.overlay,
        candidate_model=args.model,
        registration=registration,
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
    options = options_from(args)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)

    def show(event: Event, env: RehearsalEnvironment) -> None:
        print(format_event(event), flush=True)

    print(
        f"rehearsal: overlay {options.overlay}, candidate {options.candidate_model}, stable "
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
