"""check: refuse bad params before any other stage runs, whatever started the pipeline.

DVC reruns a stage only when a key it lists changed, and removes a stage's outputs before running
it: a misspelt key (`data.test_szie`) changed no listed key, so nothing ran and the typo went
unnoticed, and a bad value (`train.epochs: 0`) was refused by train only after DVC had deleted
its outputs. This stage depends on the params *files* themselves (every byte, so any edit reruns
it) and `prepare` depends on its stamp, so it is an ancestor of every stage: `make pipeline`,
`dvc repro` and `dvc exp run` all run it first, and a refusal stops DVC before any stage removed
anything. It checks everything that can be known without the data:

- the merged params, in DVC's YAML dialect (ml/config.py: unknown keys, types, ranges, the
  network fitting the input);
- a file `data.source` exists inside the repository and is a dependency of this model's
  `prepare` stage, so an edit to it reruns the pipeline (a file outside the repository, or one
  DVC does not track, would leave a stale model);
- a `sklearn:` source names a data set scikit-learn bundles;
- `train.device: cuda[:N]` only where CUDA is available (checked here, not in train, because DVC
  deletes train's outputs before train could refuse).

The stamp it writes is the same bytes for every valid params (so no stage after it reruns because
it ran); it is a persistent output, never deleted by DVC, and rewritten only on success.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ml.catalog import load_catalog
from ml.cli import StageError, add_catalog_options, run_stage, stage_parser
from ml.config import Params, load_params
from ml.io import write_text
from ml.yaml_dialect import YamlError, locate, parse

SKLEARN_PREFIX = "sklearn:"
CHECKS = ("params", "data.source", "train.device")


def _where(params_path: Path, keys: list[str | int]) -> str:
    """`file:line` of a key for messages (the file alone when it cannot be located)."""
    try:
        found = locate(params_path.read_text(encoding="utf-8"), keys)
    except OSError:
        found = None
    return f"{params_path}:{found[0]}" if found else str(params_path)


def _prepare_deps(pipeline: Path) -> list[str]:
    try:
        document = parse(pipeline.read_text(encoding="utf-8")) or {}
    except (OSError, YamlError) as error:
        raise StageError(f"{pipeline}: cannot read the pipeline: {error}") from None
    stage = (document.get("stages") or {}).get("prepare") or {}
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps") or []]


def check_source(params: Params, params_path: Path, pipeline: Path, root: Path) -> None:
    """A file source must live inside the repository and be a dependency of `prepare`."""
    source = params.data.source
    where = _where(params_path, ["data", "source"])
    folder = params_path.resolve().parent
    if source.startswith(SKLEARN_PREFIX):
        import sklearn.datasets

        name = source[len(SKLEARN_PREFIX) :]
        if not name.isidentifier() or not hasattr(sklearn.datasets, f"load_{name}"):
            raise StageError(
                f"{where}: data.source {source}: scikit-learn bundles no data set {name!r}"
                " (e.g. digits, breast_cancer, wine, iris)"
            )
        return
    path = (folder / source).resolve()
    repo = root.resolve()
    if not path.is_relative_to(repo):
        raise StageError(
            f"{where}: data.source {source} resolves to {path}, outside the repository {repo}:"
            " DVC cannot track it, so a change to it would leave a stale model; copy it into"
            " the model's folder (or `dvc import` it)"
        )
    if not path.is_file():
        raise StageError(f"{where}: data.source {source}: no such file ({path})")
    deps = [(pipeline.resolve().parent / d).resolve() for d in _prepare_deps(pipeline)]
    if not any(path == d or path.is_relative_to(d) for d in deps):
        relative = os.path.relpath(path, pipeline.resolve().parent)
        raise StageError(
            f"{where}: data.source {source} is not a dependency of the prepare stage in"
            f" {pipeline}: add `- {relative}` under its deps, or a change to the file would"
            " leave a stale model"
        )


def check_device(params: Params, params_path: Path) -> None:
    requested = params.train.device
    if not requested.startswith("cuda"):
        return
    import torch

    index = int(requested.split(":")[1]) if ":" in requested else 0
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if index >= available:
        raise StageError(
            f"{_where(params_path, ['train', 'device'])}: train.device: {requested} but this"
            f" machine has {available} CUDA device(s); use auto (CUDA when present) or cpu"
        )


def _main(argv: Sequence[str] | None) -> None:
    parser = stage_parser(__doc__ or "check")
    parser.add_argument("--pipeline", default="dvc.yaml", help="this model's dvc.yaml")
    parser.add_argument("--stamp", required=True, help="written on success, same bytes always")
    add_catalog_options(parser)
    args = parser.parse_args(argv)
    params = load_params(args.params, args.shared_params)
    catalog = load_catalog(args.catalog)
    catalog.get(args.name)
    params_path = Path(args.params)
    check_source(params, params_path, Path(args.pipeline), catalog.root)
    check_device(params, params_path)
    write_text(args.stamp, json.dumps({"passed": list(CHECKS)}, indent=2) + "\n")
    print(f"check: {args.params} + {args.shared_params}: params valid, source tracked")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("check", _main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
