"""`make bench-cluster`: how long the real engines take here, against their targets.

Starts a fresh cluster in a temporary CLUSTER_DIR (engines cached: the warm case), times each
phase of `cluster-up`, runs the staging canary of a healthy candidate on it with the real Argo
Rollouts controller, times the Python rehearsal of the same overlay for comparison, then stops
the cluster. One table, one run: the machines are noisy, so compare rows of the same run.

    python -m scripts.bench_cluster [--name MODEL] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"\[\s*([0-9.]+) s\]: (.*)")


def _phases(output: str) -> list[tuple[float, str]]:
    return [(float(m[1]), m[2]) for m in map(STAMP.search, output.splitlines()) if m]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_cluster", description=__doc__)
    parser.add_argument(
        "--name",
        default=None,
        help="a model of models.yaml (default: the first): its app's"
        " staging overlay, its model.onnx and its test split as the load",
    )
    parser.add_argument("--json", type=Path, default=REPO / ".bench/cluster.json")
    args = parser.parse_args(argv)
    rows: list[tuple[str, float | None, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        env = dict(os.environ, CLUSTER_DIR=folder)
        python = sys.executable
        started = time.monotonic()
        up = subprocess.run(
            [python, "-m", "scripts.cluster", "up"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        total_up = time.monotonic() - started
        if up.returncode != 0:
            print(up.stdout + up.stderr, file=sys.stderr)
            return 1
        phases = _phases(up.stdout)
        rows += [
            ("cluster-up: control plane ready", _first_matching(phases, "control plane up"), ""),
            (
                "cluster-up: platform CRDs established",
                _first_matching(phases, "CRDs established"),
                "",
            ),
            ("cluster-up: node Ready, controllers up", _first_matching(phases, "up; export"), ""),
            ("cluster-up: total (warm engines)", total_up, "<= 30 s"),
        ]
        try:
            started = time.monotonic()
            canary = subprocess.run(
                [
                    python,
                    "-m",
                    "scripts.cluster.canary",
                    *(["--name", args.name] if args.name else []),
                    "--report-dir",
                    str(Path(folder) / "report"),
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
            )
            total_canary = time.monotonic() - started
            steps = _phases(canary.stdout)
            applied = _first_matching(steps, "applied the candidate")
            verdict = _first_matching(steps, "verdict:")
            first = _first_matching(steps, "first deploy")
            rows += [
                ("canary: first deploy Healthy (stable pods ready)", first, ""),
                (
                    "canary: candidate applied -> verdict (real controller)",
                    None if applied is None or verdict is None else verdict - applied,
                    "",
                ),
                ("canary: total, render to verdict", total_canary, "<= 180 s"),
            ]
            outcome = (
                canary.stdout.strip().splitlines()[-1] if canary.stdout.strip() else canary.stderr
            )
        finally:
            subprocess.run(
                [python, "-m", "scripts.cluster", "down"], cwd=REPO, env=env, capture_output=True
            )
        started = time.monotonic()
        rehearsal = subprocess.run(
            [
                python,
                "-m",
                "scripts.rehearsal",
                *(["--name", args.name] if args.name else []),
                "--out",
                str(Path(folder) / "rehearsal"),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        rows.append(("rehearsal (Python stand-in), same overlay", time.monotonic() - started, ""))
    print(f"{'what':<58}{'seconds':>9}  target")
    for what, seconds, target in rows:
        shown = "-" if seconds is None else f"{seconds:.1f}"
        print(f"{what:<58}{shown:>9}  {target}")
    print(f"canary: {outcome}")
    print(f"rehearsal exit code {rehearsal.returncode}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({what: seconds for what, seconds, _ in rows}, indent=2) + "\n")
    return 0 if canary.returncode == 0 else 1


def _first_matching(phases: list[tuple[float, str]], needle: str) -> float | None:
    return next((at for at, text in phases if needle in text), None)


if __name__ == "__main__":
    raise SystemExit(main())
