"""`make bench-pipeline` / `make bench-run`: how long the models' pipelines take, and what DVC adds.

`bench-pipeline` runs in a temporary git copy of the repo with an empty DVC cache and MLflow store
(a fresh clone), every model of models.yaml:
1. `dvc repro` of every model from clean;
2. a no-op `dvc repro` of every model (target: <= 3 s);
3. `dvc repro` after changing one train param of the last model of the list: must rerun that
   model's train and the stages after it, and nothing of any other model;
4. as the peer in the same run, the same stage commands run directly, in each model's folder,
   with no DVC (the floor DVC adds to; the perf gate's pipeline ratio).
`bench-run` times `make run` itself in a fresh copy, phase by phase (pipeline, manifests, rehearse,
report; target: <= 240 s for every model), reusing this checkout's .venv (no bootstrap).
Each prints a table against its targets and writes .bench/pipeline.json (or run.json); exit 1 when
a target is missed.
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

from ml.catalog import Catalog, load_catalog
from scripts.repo_copy import REPO, copy_repo, remove_outputs, tool_env

PER_MODEL_OUTPUTS = ("data/prepared", "model.pt", "model.onnx", "reports/figures")
SHARED_OUTPUTS = (".dvc/cache", "mlflow.db", "mlartifacts")
TARGETS = {"no-op repro": 3.0, "make run": 240.0}
AFTER_TRAIN = ["train", "evaluate", "export", "register"]
RUN_PHASES = ("pipeline", "manifests", "rehearse", "report")


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
    """`<folder>/dvc.yaml:<stage>` of every stage DVC ran."""
    return re.findall(r"Running stage '([^']+)'", output)


def clean(workspace: Path, catalog: Catalog) -> None:
    for entry in catalog.entries:
        remove_outputs(workspace, tuple(f"{entry.folder}/{p}" for p in PER_MODEL_OUTPUTS))
    remove_outputs(workspace, SHARED_OUTPUTS)


def direct_commands(workspace: Path, catalog: Catalog) -> list[tuple[Path, list[str]]]:
    """(folder, argv) of every stage of every model, with the model's inline vars resolved."""
    from scripts.workflows.compile import load_stages

    commands = []
    for entry in catalog.entries:
        for stage in load_stages(workspace / entry.pipeline):
            argv = stage.cmd.split()
            commands.append((workspace / entry.folder, [sys.executable, *argv[1:]]))
    return commands


def bench(workspace: Path, catalog: Catalog) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    pipelines = [e.pipeline for e in catalog.entries]
    full, out = timed(["dvc", "repro", *pipelines], workspace)
    rows.append({"case": "full repro", "seconds": full, "stages": stages_run(out)})
    noop, out = timed(["dvc", "repro", *pipelines], workspace)
    rows.append({"case": "no-op repro", "seconds": noop, "stages": stages_run(out)})
    last = catalog.entries[-1]
    path = workspace / last.params
    params = yaml.safe_load(path.read_text())
    params["train"]["weight_decay"] = params["train"]["weight_decay"] * 2
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    changed, out = timed(["dvc", "repro", *pipelines], workspace)
    case = f"{last.name} train param changed"
    rows.append({"case": case, "seconds": changed, "stages": stages_run(out)})
    clean(workspace, catalog)
    start = time.perf_counter()
    for folder, argv in direct_commands(workspace, catalog):
        timed(argv, folder)
    rows.append(
        {
            "case": "peer: same commands, no DVC",
            "seconds": time.perf_counter() - start,
            "stages": [f"all {len(direct_commands(workspace, catalog))} (no cache, no lock)"],
        }
    )
    return rows


def verdicts(rows: list[dict[str, object]], catalog: Catalog) -> list[str]:
    problems = []
    for row in rows:
        limit = TARGETS.get(str(row["case"]))
        if limit is not None and float(str(row["seconds"])) > limit:
            problems.append(f"{row['case']} took {row['seconds']:.1f}s > {limit:.0f}s")
    if len(rows) > 2:
        last = catalog.entries[-1]
        expected = [f"{last.pipeline}:{s}" for s in AFTER_TRAIN]
        if rows[2]["stages"] != expected:
            problems.append(f"a change to {last.name} reran {rows[2]['stages']}, not {expected}")
    if len(rows) > 1 and rows[1]["stages"]:
        problems.append(f"no-op repro reran {rows[1]['stages']}")
    return problems


def run_phases(workspace: Path) -> list[dict[str, object]]:
    """`make run`, one phase at a time, in a fresh copy using this checkout's .venv."""
    venv = f"VENV={Path(sys.executable).parent.parent}"
    rows: list[dict[str, object]] = []
    total = 0.0
    for phase in RUN_PHASES:
        seconds, _ = timed(["make", "--no-print-directory", phase, venv], workspace)
        total += seconds
        rows.append({"case": f"make {phase}", "seconds": seconds, "stages": []})
    rows.append({"case": "make run", "seconds": total, "stages": list(RUN_PHASES)})
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'case':<36}{'seconds':>9}  {'target':<8}  stages run", "-" * 96]
    for row in rows:
        limit = TARGETS.get(str(row["case"]))
        target = f"<= {limit:.0f}s" if limit else ""
        if str(row["case"]).endswith("train param changed"):
            target = "train.."
        names = [str(s) for s in row["stages"]] or ["(none)"]  # type: ignore[attr-defined]
        seconds = float(str(row["seconds"]))
        lines.append(f"{row['case']:<36}{seconds:>9.1f}  {target:<8}  {', '.join(names)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", action="store_true", help="time `make run` (bench-run)")
    parser.add_argument("--out", default=None, help="JSON results (default: .bench/...)")
    args = parser.parse_args(argv)
    out = Path(args.out or REPO / ".bench" / ("run.json" if args.run else "pipeline.json"))
    catalog = load_catalog(REPO / "models.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        workspace = copy_repo(Path(tmp))
        clean(workspace, catalog)
        rows = run_phases(workspace) if args.run else bench(workspace, catalog)
    print(table(rows))
    problems = verdicts(rows, catalog) if not args.run else verdicts(rows[-1:], catalog)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"rows": rows, "problems": problems, "cpus": os.cpu_count()}
    out.write_text(json.dumps(document, indent=2))
    for problem in problems:
        print(f"bench-pipeline: MISSED: {problem}", file=sys.stderr)
    print(f"wrote {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
