"""`make seed-sweep`: test accuracy of a model of models.yaml over several seeds, beside the
baselines its evaluate stage fits on the same split.

One seed's test accuracy says little on a few hundred test rows (one of digits' 360 is 0.3
points, one of breast cancer's 114 is 0.9), so a model choice is judged on the worst and mean
accuracy over seeds, and against the logistic-regression baseline seed by seed. Each seed
re-splits the data and re-initialises the network exactly as `dvc repro` with that `seed:` would
(the same prepare, train, prediction and baseline code, torch's default threads; a test compares
it with the stage chain); nothing is written, tracked or registered. `--set model.hidden=[32]` (a
YAML value; repeatable) tries a variant without editing the model's params.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ml.catalog import CatalogError, load_catalog
from ml.checkpoint import predict_proba
from ml.cli import StageError
from ml.config import Params, ParamsError, parse_params, read_params_yaml
from ml.stages.evaluate import baselines
from ml.stages.prepare import load_rows, split_data
from ml.stages.train import fit

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SeedResult:
    seed: int
    epochs_run: int
    test_accuracy: float
    logistic_regression: float
    majority: float


def override(raw: dict[str, Any], assignment: str) -> None:
    """Apply `section.key=<yaml value>` to the raw params mapping (validation comes after)."""
    dotted, sep, text = assignment.partition("=")
    keys = dotted.strip().split(".")
    if not sep or not all(keys):
        raise ParamsError(f"--set {assignment!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"--set {assignment!r}: value is not YAML: {error}") from None
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            raise ParamsError(f"--set {assignment!r}: params has no section {key!r}")
        node = child
    node[keys[-1]] = value


def run_seed(params: Params, X: np.ndarray, y: np.ndarray, seed: int) -> SeedResult:
    params = params.model_copy(update={"seed": seed})
    splits = split_data(X, y, params.data, seed)
    model, history = fit(
        params, splits["train"], splits["val"], torch.device("cpu"), progress=False
    )
    test = splits["test"]
    predicted = predict_proba(model, torch.from_numpy(test.X)).numpy().argmax(axis=1)
    compared = baselines(splits["train"], test, params.task, seed)
    return SeedResult(
        seed,
        len(history),
        float(np.mean(predicted == test.y)),
        compared["logistic_regression"]["accuracy"],
        compared["majority"]["accuracy"],
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", default=None, help="a model of models.yaml (default: first)")
    parser.add_argument("--catalog", type=Path, default=REPO / "models.yaml")
    parser.add_argument("--seeds", default="0,1,2,3,4,42", help="comma-separated integers")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    return args


def load(args: argparse.Namespace) -> tuple[Params, Path]:
    """The model's params (over the shared root params) with the --set overrides, validated as
    `dvc repro` would validate them; and the model's folder."""
    catalog = load_catalog(args.catalog)
    entry = catalog.get(args.model) if args.model else catalog.entries[0]
    own, shared = catalog.root / entry.params, catalog.root / "params.yaml"
    raw, shared_raw = read_params_yaml(own), read_params_yaml(shared)
    if isinstance(raw, dict):  # anything else gets parse_params' own message
        for assignment in args.set:
            override(raw, assignment)
    return parse_params(raw, own, shared_raw, shared), catalog.root / entry.folder


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params, folder = load(args)
        X, y, _, _ = load_rows(params, folder)  # once for all seeds
        results = [run_seed(params, X, y, seed) for seed in args.seeds]
    except (ParamsError, StageError, CatalogError) as error:
        print(f"seed-sweep: error: {error}", file=sys.stderr)
        return 2
    scores = [r.test_accuracy for r in results]
    logistic = [r.logistic_regression for r in results]
    gate = params.gates.min_accuracy
    print(f"{folder.name}: model {params.model.model_dump()}, train {params.train.model_dump()}")
    print("seed  epochs  test accuracy  logistic regression  majority")
    for r in results:
        print(
            f"{r.seed:>4}  {r.epochs_run:>6}  {r.test_accuracy:>13.3f}"
            f"  {r.logistic_regression:>19.3f}  {r.majority:>8.3f}"
        )
    ties = sum(round(a - b, 9) >= 0 for a, b in zip(scores, logistic))
    print(
        f"min {min(scores):.3f}  mean {np.mean(scores):.3f}  (gate min_accuracy {gate});"
        f" logistic regression min {min(logistic):.3f} mean {np.mean(logistic):.3f};"
        f" at least as accurate as it on {ties} of {len(results)} seeds"
    )
    if args.out:
        summary = {"min": min(scores), "mean": float(np.mean(scores)), "gate": gate}
        document = {"set": args.set, "seeds": [asdict(r) for r in results], **summary}
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
