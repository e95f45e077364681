"""`python -m scripts.models ...`: the model list (models.yaml) for the Makefile, CI and scripts.

    names [NAMES]              every model's name (or check the given ones), one line, in order
    pipelines [NAMES]          their dvc.yaml paths, for `dvc repro` / `dvc push` targets
    unregistered [NAMES]       the register stages of models this machine has not registered
                               (no registration.local.json for the ONNX file git records)
    field NAME FIELD           one field of one model (folder, app, serving_image, ...)
    tag TAG                    the model and version a release tag names: `<name> <version>`
    affected --base REF        which models a change touches (see `affected_models`)
    plan                       CI: write .bench/ci/plan.env (TRAIN_MODELS, DELIVER_MODELS) and
                               .bench/ci/images.txt for the jobs after it

Which models a change touches is decided here and nowhere else. Two sets, because training costs
a GPU runner and delivery does not:
- train: a model's folder, the shared code and configuration every pipeline runs (ml/, the root
  params.yaml and dvc.yaml, pyproject.toml, constraints.txt, the CI files and Makefile), or its
  own entry in models.yaml;
- deliver (report, rehearse, build, release): the train set plus the model's app folder, the
  shared desired state every app renders with (apps/_shared/, rollouts/) and the tools around
  the models (scripts/).
Markdown files and docs/ change no model; tests/ are run by the test job whatever changed.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ml.catalog import Catalog, CatalogError, ModelEntry, load_catalog, parse_catalog

REPO = Path(__file__).resolve().parents[1]
CATALOG = "models.yaml"
# paths every model's pipeline runs (a change here retrains every model)
SHARED_TRAINING = (
    "ml/*",
    "params.yaml",
    "dvc.yaml",
    "pyproject.toml",
    "constraints.txt",
    "Makefile",
    ".gitlab-ci.yml",
    "Jenkinsfile",
)
# paths every app's delivery uses (a change here re-rehearses and re-reports every model)
SHARED_DELIVERY = ("apps/_shared/*", "rollouts/*", "scripts/*")
ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Affected:
    train: list[str]
    deliver: list[str]


def _is_docs(path: str) -> bool:
    return path.endswith(".md") or path.startswith("docs/")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def affected_models(
    changed: Iterable[str], catalog: Catalog, base_catalog: Catalog | None = None
) -> Affected:
    """The models a set of changed paths touches, by the rules of the module docstring.
    `base_catalog` is models.yaml before the change: an entry that differs counts as a change
    to that model only (adding a model touches no other)."""
    names = catalog.names
    train: set[str] = set()
    deliver: set[str] = set()
    for path in changed:
        if not path or _is_docs(path):
            continue
        if path == CATALOG:
            before = {e.name: e for e in base_catalog.entries} if base_catalog else {}
            for entry in catalog.entries:
                if before.get(entry.name) != entry:
                    train.add(entry.name)
            continue
        if any(fnmatch.fnmatch(path, p) for p in SHARED_TRAINING):
            train.update(names)
            continue
        if any(fnmatch.fnmatch(path, p) for p in SHARED_DELIVERY):
            deliver.update(names)
            continue
        for entry in catalog.entries:
            if _under(path, entry.folder):
                train.add(entry.name)
            elif _under(path, f"apps/{entry.app}"):
                deliver.add(entry.name)
    deliver |= train
    return Affected(
        train=[n for n in names if n in train], deliver=[n for n in names if n in deliver]
    )


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise CatalogError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def changed_paths(repo: Path, base: str, head: str = "HEAD") -> list[str]:
    """Paths that differ between the merge base of `base` and `head`, and `head`."""
    return git(repo, "diff", "--name-only", f"{base}...{head}").split()


def catalog_at(repo: Path, ref: str) -> Catalog | None:
    """models.yaml as it was at `ref` (None when it did not exist or does not parse)."""
    result = subprocess.run(
        ["git", "show", f"{ref}:{CATALOG}"], cwd=repo, capture_output=True, text=True
    )
    if result.returncode != 0:
        return None
    try:
        return parse_catalog(yaml.safe_load(result.stdout), repo / CATALOG)
    except (CatalogError, yaml.YAMLError):
        return None


def affected_since(repo: Path, catalog: Catalog, base: str, head: str = "HEAD") -> Affected:
    base_ref = git(repo, "merge-base", base, head).strip()
    return affected_models(changed_paths(repo, base_ref, head), catalog, catalog_at(repo, base_ref))


def ci_plan(repo: Path, catalog: Catalog, env: dict[str, str]) -> tuple[Affected, str]:
    """The models a CI pipeline works on, from the variables GitLab (or Jenkins) sets:
    a release tag names its model; a retraining trigger names its model (RETRAIN_MODEL) or all;
    a merge request or a push compares with its base; anything else (schedule, web, a new
    branch) takes every model."""
    everything = Affected(catalog.names, catalog.names)
    tag = env.get("CI_COMMIT_TAG") or env.get("TAG_NAME")  # GitLab, Jenkins
    if tag:
        entry, _ = catalog.for_tag(tag)
        return Affected([], [entry.name]), f"release tag {tag}"
    if env.get("CI_PIPELINE_SOURCE") == "trigger" or env.get("RETRAIN") == "true":
        chosen = [e.name for e in catalog.select(env.get("RETRAIN_MODEL") or None)]
        return Affected(chosen, chosen), "retraining trigger"
    base = (
        env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA")
        or (f"origin/{env['CHANGE_TARGET']}" if env.get("CHANGE_TARGET") else None)  # Jenkins PR
        or env.get("CI_COMMIT_BEFORE_SHA")
        or env.get("GIT_PREVIOUS_SUCCESSFUL_COMMIT")  # Jenkins branch builds
    )
    if not base or base == ZERO_SHA:
        return everything, "no base commit to compare with: every model"
    return affected_since(repo, catalog, base), f"changes since {base[:12]}"


def unregistered(catalog: Catalog, entries: Sequence[ModelEntry]) -> list[str]:
    """`<pipeline>:register` of every model whose git-tracked record this machine has not
    registered: a fresh clone's `dvc repro` skips register (its tracked output is already as
    committed), yet its MLflow store holds nothing; forcing that one stage registers the model
    and writes the same tracked record again, so git stays clean."""
    from ml.registration import RecordError, read_best_record

    stages = []
    for entry in entries:
        tracked = catalog.root / entry.folder / "registration.json"
        try:
            registered = read_best_record(tracked).version is not None
        except RecordError:
            continue  # no record yet: the pipeline's own register stage writes it
        if not registered:
            stages.append(f"{entry.pipeline}:register")
    return stages


def image_lines(catalog: Catalog, names: Sequence[str], registry: str) -> str:
    """`kind folder image` per line, what scripts/sh/build_image.sh and scan_image.sh read."""
    lines = []
    for entry in catalog.select(" ".join(names)) if names else []:
        lines.append(f"serving {entry.folder} {registry}/{entry.serving_image}")
        lines.append(f"trainer {entry.folder} {registry}/{entry.trainer_image}")
    return "".join(f"{line}\n" for line in lines)


def plan_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The plan's lists: GitLab passes them as variables (the plan job's dotenv); Jenkins, which
    has no dotenv, names the plan file in CI_PLAN_FILE and every step reads it from there."""
    found: dict[str, str] = {}
    path = env.get("CI_PLAN_FILE")
    if path and Path(path).is_file():
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                found[key.strip()] = value.strip()
    found.update({k: env[k] for k in ("TRAIN_MODELS", "DELIVER_MODELS") if k in env})
    return found


def selected(catalog: Catalog, names: str | None, ci_variable: str | None) -> list[ModelEntry]:
    """MODEL=... when given; else, in CI, the plan's list (set, even empty); else every model."""
    if names:
        return catalog.select(names)
    planned = plan_variables(os.environ)
    if ci_variable and ci_variable in planned:
        return catalog.select(planned[ci_variable]) if planned[ci_variable].strip() else []
    return list(catalog.entries)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.models", description=__doc__)
    parser.add_argument("--catalog", type=Path, default=REPO / CATALOG)
    sub = parser.add_subparsers(dest="command", required=True)
    names = sub.add_parser("names", help="model names (all, or check the given ones)")
    names.add_argument("selection", nargs="?", default="")
    names.add_argument("--ci", choices=("train", "deliver"), help="CI: the plan's list if set")
    stale = sub.add_parser("unregistered", help="register stages this machine has not run")
    stale.add_argument("selection", nargs="?", default="")
    pipelines = sub.add_parser("pipelines", help="dvc.yaml paths of the models")
    pipelines.add_argument("selection", nargs="?", default="")
    pipelines.add_argument("--ci", choices=("train", "deliver"), help="CI: the plan's list if set")
    field = sub.add_parser("field", help="one field of one model")
    field.add_argument("name")
    field.add_argument("field")
    tag = sub.add_parser("tag", help="the model and version of a release tag")
    tag.add_argument("tag")
    affected = sub.add_parser("affected", help="models touched since a base ref")
    affected.add_argument("--base", required=True)
    affected.add_argument("--head", default="HEAD")
    plan = sub.add_parser("plan", help="CI: which models this pipeline trains and delivers")
    plan.add_argument("--out", type=Path, default=REPO / ".bench" / "ci")
    args = parser.parse_args(argv)
    try:
        catalog = load_catalog(args.catalog)
        repo = catalog.root
        if args.command in ("names", "pipelines"):
            variable = {"train": "TRAIN_MODELS", "deliver": "DELIVER_MODELS"}.get(args.ci or "")
            chosen = selected(catalog, args.selection, variable)
            attribute = "name" if args.command == "names" else "pipeline"
            print(" ".join(getattr(e, attribute) for e in chosen))
        elif args.command == "unregistered":
            print(" ".join(unregistered(catalog, catalog.select(args.selection or None))))
        elif args.command == "field":
            entry = catalog.get(args.name)
            if args.field not in entry.__dataclass_fields__ and args.field != "pipeline":
                raise CatalogError(f"no field {args.field!r} (fields: {list(entry.__dict__)})")
            print(getattr(entry, args.field))
        elif args.command == "tag":
            entry, version = catalog.for_tag(args.tag)
            print(entry.name, version)
        elif args.command == "affected":
            found = affected_since(repo, catalog, args.base, args.head)
            print(f"train: {' '.join(found.train)}\ndeliver: {' '.join(found.deliver)}")
        else:
            found, why = ci_plan(repo, catalog, dict(os.environ))
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "plan.env").write_text(
                f"TRAIN_MODELS={' '.join(found.train)}\nDELIVER_MODELS={' '.join(found.deliver)}\n"
            )
            registry = os.environ.get("IMAGE_REGISTRY", "registry.example.com/mlops")
            (args.out / "images.txt").write_text(image_lines(catalog, found.deliver, registry))
            train, deliver = " ".join(found.train), " ".join(found.deliver)
            print(f"plan ({why}): train [{train}], deliver [{deliver}]")
    except CatalogError as error:
        print(f"models: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
