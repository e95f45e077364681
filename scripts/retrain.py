"""`python -m scripts.retrain [NAMES]`: give a triggered retraining something new to learn from,
before `make ci-train` reproduces the models' pipelines (RETRAIN=true).

A retraining that re-runs a seeded `dvc repro` on unchanged inputs reproduces the committed model
byte for byte, and there is nothing to propose. So, for each model:
1. **new data first**: every DVC import in the model's folder (a `.dvc` file with a source: `dvc
   import-url` or `dvc import`) is brought to its source's newest version with `dvc update`. A
   model that names such a file as its `data.source` (and its prepare stage's dependency) then
   trains on the data that arrived, and `dvc.lock` records which version;
2. **otherwise a new seed**: when no data version changed, the model's `seed` in its params.yaml
   becomes RETRAIN_SEED, or one derived from RETRAIN_KEY (the trigger's dedup key), so the run is
   a genuine re-draw that reviewers judge by the merge request's metrics diff;
3. neither possible (no new data, no seed, no key): an error, not a silent no-op.
Every file changed here (the `.dvc` files, params.yaml) is tracked and is proposed with the
outputs by `make propose-retrain`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ruamel.yaml import YAML

from ml.catalog import CatalogError, ModelEntry, load_catalog
from ml.io import write_text

REPO = Path(__file__).resolve().parents[1]


class RetrainError(RuntimeError):
    """Nothing new to retrain on, or an input could not be brought up to date."""


def imports_in(folder: Path) -> list[Path]:
    """The `.dvc` files of a model's folder that import data from a source (have `deps`)."""
    yaml = YAML(typ="safe")
    found = []
    for path in sorted(folder.rglob("*.dvc")):
        data = yaml.load(path.read_text()) or {}
        if data.get("deps"):
            found.append(path)
    return found


def update_imports(repo: Path, folder: Path, dvc: str) -> list[Path]:
    """`dvc update` every import; returns those whose recorded version changed."""
    changed = []
    for path in imports_in(folder):
        before = path.read_text()
        result = subprocess.run(
            [dvc, "update", str(path.relative_to(repo))], cwd=repo, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise RetrainError(f"dvc update {path}: {result.stderr.strip() or result.stdout}")
        if path.read_text() != before:
            changed.append(path)
    return changed


def new_seed(env: Mapping[str, str]) -> int | None:
    """RETRAIN_SEED, else a seed derived from RETRAIN_KEY (the same trigger, the same seed)."""
    if env.get("RETRAIN_SEED", "").strip():
        try:
            seed = int(env["RETRAIN_SEED"])
        except ValueError:
            raise RetrainError(f"RETRAIN_SEED={env['RETRAIN_SEED']!r} is not an integer") from None
        if not 0 <= seed < 2**32:
            raise RetrainError(f"RETRAIN_SEED={seed} is outside 0..2**32-1")
        return seed
    key = env.get("RETRAIN_KEY", "").strip()
    if key:
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return None


def set_seed(params: Path, seed: int) -> bool:
    """Write `seed:` into a model's params.yaml, comments and order kept; True if it changed."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(params.read_text())
    if data.get("seed") == seed:
        return False
    data["seed"] = seed
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    write_text(params, buffer.getvalue())
    return True


def prepare_inputs(repo: Path, entry: ModelEntry, env: Mapping[str, str], dvc: str) -> str:
    """Bring one model's inputs forward; returns what changed, for the log and the proposal."""
    updated = update_imports(repo, repo / entry.folder, dvc)
    if updated:
        names = ", ".join(str(p.relative_to(repo)) for p in updated)
        return f"{entry.name}: new data version of {names}"
    seed = new_seed(env)
    if seed is None:
        raise RetrainError(
            f"{entry.name}: nothing new to retrain on: no DVC import in {entry.folder} has a newer"
            " version, and neither RETRAIN_SEED nor RETRAIN_KEY is set (a seeded re-run of the"
            " same inputs reproduces the committed model)"
        )
    if not set_seed(repo / entry.params, seed):
        raise RetrainError(f"{entry.name}: seed is already {seed}: set another RETRAIN_SEED")
    source = "RETRAIN_SEED" if env.get("RETRAIN_SEED", "").strip() else "RETRAIN_KEY"
    return f"{entry.name}: no new data; seed {seed} (from {source})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="?", default="", help="models (default: every model)")
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    dvc = str(Path(sys.executable).with_name("dvc"))
    try:
        catalog = load_catalog(args.repo / "models.yaml")
        for entry in catalog.select(args.names or None):
            print(f"retrain: {prepare_inputs(args.repo, entry, os.environ, dvc)}")
    except (RetrainError, CatalogError) as error:
        print(f"retrain: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
