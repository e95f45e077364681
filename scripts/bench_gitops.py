"""`make bench-gitops`: how long Argo CD takes, phase by phase, on the local cluster.

Each run (on the cluster of `make cluster-up`, engines cached): `make gitops-up` from nothing
(Argo CD stopped, the served repository fresh), canary pauses time-scaled by 20 as in the
tests, then one release pushed to the served repository with load on the app, followed until
the real Argo Rollouts controller promotes it; then `gitops-down`. Phases:

| phase | from | to |
| --- | --- | --- |
| prepare | start | repository served, install manifests applied, process images built |
| argocd | prepare done | Redis, repo server, controllers ready |
| platform | root Application applied | its waves done (the ApplicationSet created) |
| apps | ApplicationSet created | every generated Application Synced and Healthy |
| detect | release pushed | Argo CD reports the new revision |
| sync | detected | Argo CD's sync of it succeeded |
| canary | synced | the controller's verdict (promoted) |

The machine is shared and noisy: `--repeat N` runs N times and prints every run and the median.
Results also go to .bench/gitops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.cluster.canary import ServiceLoad
from scripts.cluster.control_plane import REPO_ROOT, Layout, State
from scripts.gitops.release_loop import (
    Network,
    Timeline,
    Watch,
    clone_served,
    load_service,
    release,
    verdict_of,
)
from scripts.gitops.served import git
from scripts.rehearsal.canary import Outcome
from scripts.rehearsal.orchestrator import load_rows_from_split

APP = "digits-classifier"
MODEL = "models/digits"
PHASES = ("prepare", "argocd", "platform", "apps", "detect", "sync", "canary")


def gitops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.gitops", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )


def one_run(
    layout: Layout, source: Path, time_factor: float, poll: float, index: int
) -> dict[str, float]:
    gitops("down")
    load_average = os.getloadavg()[0]  # the machine is shared: say how busy it was
    started = time.monotonic()
    up = gitops("up", f"--source={source}", f"--time-factor={time_factor:g}", f"--poll={poll:g}")
    if up.returncode != 0:
        raise RuntimeError(f"gitops up failed:\n{up.stdout}{up.stderr}")
    record = json.loads((layout.root / "gitops" / "state.json").read_text())
    phases = {k: float(record["phases"][k]) for k in ("prepare", "argocd", "platform", "apps")}
    phases["gitops-up"] = time.monotonic() - started
    network = Network(record["url"], record["proxy"], record["ca"])
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(layout.kubeconfig))
    namespace = f"{APP}-staging"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gitops-") as folder:
            clone = clone_served(network, Path(folder) / "clone")
            git(clone, "config", "user.email", "bench@example.com")
            git(clone, "config", "user.name", "bench")
            rows = load_rows_from_split(source / MODEL / "data/prepared/test.npz")
            load = ServiceLoad(api, namespace, load_service(clone, APP), 40.0, rows)
            load.start()
            try:
                # a new version each run: the served repository is fresh, the images are not
                released = release(
                    layout,
                    network,
                    clone,
                    f"{APP}/v0.{index + 2}.0",
                    source / MODEL / "model.onnx",
                    say=lambda s: None,
                )
                watch = Watch(api, f"{APP}-staging", say=lambda s: None)

                def until(timeline: Timeline, app: dict[str, object], rollout: object) -> bool:
                    if isinstance(rollout, dict) and timeline.verdict is None:
                        timeline.verdict = verdict_of(
                            rollout, released.image, watch.analysis_runs(namespace)
                        )
                        if timeline.verdict is not None:
                            timeline.seen["verdict"] = time.monotonic() - released.pushed_at
                    return timeline.verdict is not None

                timeline = watch.follow(released, until, timeout=600)
            finally:
                load.stop()
    finally:
        gitops("down")
    if timeline.verdict is None or timeline.verdict.outcome != Outcome.PROMOTED:
        raise RuntimeError(f"the release was not promoted: {timeline.verdict}")
    seen = timeline.seen
    phases["detect"] = seen["detected"]
    phases["sync"] = seen["synced"] - seen["detected"]
    phases["canary"] = seen["verdict"] - seen["synced"]
    phases["release-to-verdict"] = seen["verdict"]
    phases["load-average"] = load_average
    return phases


TARGETS = {"gitops-up": 90.0, "release-to-verdict": 180.0}
"""Issue 14's targets, in seconds (benchmarks, not timed tests)."""


def table(runs: list[dict[str, float]]) -> str:
    keys = list(PHASES) + ["gitops-up", "release-to-verdict", "load-average"]
    header = "| phase | " + " | ".join(f"run {i + 1}" for i in range(len(runs)))
    lines = [header + " | median | target |", "|" + " --- |" * (len(runs) + 3)]
    for key in keys:
        values = [run[key] for run in runs]
        unit = "" if key == "load-average" else " s"
        cells = " | ".join(f"{v:.1f}{unit}" for v in values)
        target = f"<= {TARGETS[key]:.0f} s" if key in TARGETS else ""
        lines.append(f"| {key} | {cells} | {statistics.median(values):.1f}{unit} | {target} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench_gitops", description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO_ROOT,
        help="the checkout served, with its models trained (make pipeline)",
    )
    parser.add_argument("--time-factor", type=float, default=20.0)
    parser.add_argument("--poll", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".bench" / "gitops.json")
    args = parser.parse_args(argv)
    layout = Layout.default()
    state = State.read(layout)
    if state is None or not state.running():
        print("bench-gitops: the local cluster is not up (make cluster-up)", file=sys.stderr)
        return 1
    model = args.source / MODEL / "model.onnx"
    if not model.is_file():
        print(f"bench-gitops: {model}: no trained model (make pipeline)", file=sys.stderr)
        return 1
    runs = []
    for index in range(args.repeat):
        try:
            runs.append(one_run(layout, args.source, args.time_factor, args.poll, index))
        except RuntimeError as exc:
            print(f"bench-gitops: run {index + 1}: {exc}", file=sys.stderr)
            return 1
        print(f"bench-gitops: run {index + 1} done", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "cpus": os.cpu_count()}, indent=2) + "\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
