"""`make bench-pipeline`: how long the data-to-model pipeline takes, and what DVC adds to it.

Runs in a temporary git copy of the repo with an empty DVC cache and MLflow store:
1. full `dvc repro` from clean; 2. no-op `dvc repro`; 3. `dvc repro` after changing one train
param (must rerun train and the stages after it, nothing before); and, as the peer in the same run,
4. the same six stage commands run directly in sequence with no DVC (the floor DVC adds to).
Prints a table against the targets and writes .bench/pipeline.json. Exit 1 when a target is missed.
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

import yaml

from scripts.repo_copy import REPO, copy_repo, remove_outputs, tool_env

GENERATED = (
    "data/prepared",
    "models/model.pt",
    "models/model.onnx",
    "reports/figures",
    ".dvc/cache",
    "mlflow.db",
    "mlartifacts",
)
TARGETS = {"full repro": 60.0, "no-op repro": 3.0}
AFTER_TRAIN = ["train", "evaluate", "export", "register"]


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"bench-pipeline: {' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return elapsed, result.stdout


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([a-z_]+)'", output)


def direct_commands(workspace: Path) -> list[list[str]]:
    stages = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]
    return [" ".join(stage["cmd"].split()).split() for stage in stages.values()]


def bench(workspace: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    full, out = timed(["dvc", "repro"], workspace)
    rows.append({"case": "full repro", "seconds": full, "stages": stages_run(out)})
    noop, out = timed(["dvc", "repro"], workspace)
    rows.append({"case": "no-op repro", "seconds": noop, "stages": stages_run(out)})
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["weight_decay"] = params["train"]["weight_decay"] * 2
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed, out = timed(["dvc", "repro"], workspace)
    rows.append({"case": "train param changed", "seconds": changed, "stages": stages_run(out)})
    remove_outputs(workspace, GENERATED)
    start = time.perf_counter()
    for cmd in direct_commands(workspace):
        timed([sys.executable if cmd[0] == "python" else cmd[0], *cmd[1:]], workspace)
    rows.append(
        {
            "case": "peer: same commands, no DVC",
            "seconds": time.perf_counter() - start,
            "stages": ["all 6 (no cache, no lock)"],
        }
    )
    return rows


def verdicts(rows: list[dict[str, object]]) -> list[str]:
    problems = []
    for row in rows:
        limit = TARGETS.get(str(row["case"]))
        if limit is not None and float(str(row["seconds"])) > limit:
            problems.append(f"{row['case']} took {row['seconds']:.1f}s > {limit:.0f}s")
    if rows[2]["stages"] != AFTER_TRAIN:
        problems.append(f"train param change reran {rows[2]['stages']}, expected {AFTER_TRAIN}")
    if rows[1]["stages"]:
        problems.append(f"no-op repro reran {rows[1]['stages']}")
    return problems


def table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'case':<30}{'seconds':>9}  {'target':<8}  stages run", "-" * 90]
    for row in rows:
        limit = TARGETS.get(str(row["case"]))
        target = f"<= {limit:.0f}s" if limit else ""
        if row["case"] == "train param changed":
            target = "train.."
        names = row["stages"] or ["(none)"]
        stages = ", ".join(str(s) for s in names)  # type: ignore[attr-defined]
        seconds = float(str(row["seconds"]))
        lines.append(f"{row['case']:<30}{seconds:>9.1f}  {target:<8}  {stages}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(REPO / ".bench" / "pipeline.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workspace = copy_repo(Path(tmp))
        remove_outputs(workspace, GENERATED)
        rows = bench(workspace)
    print(table(rows))
    problems = verdicts(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"rows": rows, "problems": problems, "cpus": os.cpu_count()}, indent=2)
    )
    for problem in problems:
        print(f"bench-pipeline: MISSED: {problem}", file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
