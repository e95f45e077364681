"""`make seed-sweep`: test accuracy of the configured model over several seeds.

One seed's test accuracy says little on 360 test images (one image is 0.3 points), so a model
choice is judged on the worst and mean accuracy over seeds. Each seed re-splits the data and
re-initialises the network exactly as `dvc repro` with that `seed:` would (the same prepare,
train and prediction code, torch's default threads; a test compares it with the stage chain);
nothing is written, tracked or registered. `--set model.channels=[8,16]` (a YAML
value; repeatable) tries a variant without editing params.yaml.
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

from ml.checkpoint import predict_proba
from ml.cli import StageError
from ml.config import Params, ParamsError, parse_params, read_params_yaml
from ml.stages.prepare import load_rows, split_data
from ml.stages.train import fit


@dataclass(frozen=True)
class SeedResult:
    seed: int
    epochs_run: int
    test_accuracy: float


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
    return SeedResult(seed, len(history), float(np.mean(predicted == test.y)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--seeds", default="0,1,2,3,4,42", help="comma-separated integers")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: expected comma-separated integers")
    return args


def load(args: argparse.Namespace) -> Params:
    """params.yaml with the --set overrides, validated as `dvc repro` would validate it."""
    raw = read_params_yaml(args.params)
    if isinstance(raw, dict):  # anything else gets parse_params' own message
        for assignment in args.set:
            override(raw, assignment)
    return parse_params(raw, args.params)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        params = load(args)
        X, y, _ = load_rows(params.data, args.params.resolve().parent)  # once for all seeds
        results = [run_seed(params, X, y, seed) for seed in args.seeds]
    except (ParamsError, StageError) as error:
        print(f"seed-sweep: error: {error}", file=sys.stderr)
        return 2
    scores = [r.test_accuracy for r in results]
    gate = params.gates.min_accuracy
    print(f"model {params.model.model_dump()}, train {params.train.model_dump()}")
    print("seed  epochs  test accuracy")
    for r in results:
        print(f"{r.seed:>4}  {r.epochs_run:>6}  {r.test_accuracy:.3f}")
    print(f"min {min(scores):.3f}  mean {np.mean(scores):.3f}  (gate min_accuracy {gate})")
    if args.out:
        summary = {"min": min(scores), "mean": float(np.mean(scores)), "gate": gate}
        document = {"set": args.set, "seeds": [asdict(r) for r in results], **summary}
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
