"""`make release TAG=vX.Y.Z`: ship the tagged model to staging and prepare production for review.

What it does, in order, and only after every check passed:
1. refuses anything but strict semver `vMAJOR.MINOR.PATCH[-pre][+build]`, a dirty tree, or a missing
   registration record / registry version;
2. writes the image tag into `apps/<app>/overlays/staging/kustomization.yaml` (`images:` only, the
   field `kustomize edit set image` and argocd-image-updater edit: the service image and, where
   pinned, the trainer image), appends a CHANGELOG entry, validates the rendered overlay, and
   commits both on the current branch;
3. prepares the production change as a commit on its own branch `release/<tag>-production`
   (never on the current branch: production is a reviewed merge request);
4. moves the MLflow alias `staging` to the released model version.
A failure at any step puts back every file, commit, branch and alias it had changed. A second run
with the same tag changes nothing. `--dry-run` prints the diffs and the plan, and changes nothing.
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from ruamel.yaml import YAML

from ml.io import write_text
from ml.workflows import TRAINER_IMAGE

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"  # semver.org: no leading zeros
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
GIT_ID = ["-c", "user.name=release-bot", "-c", "user.email=release-bot@example.com"]


class ReleaseError(RuntimeError):
    """The release cannot go ahead; the message says why and what to do."""


@dataclass
class Plan:
    tag: str
    image_tag: str
    app: str
    model_name: str
    model_version: str
    changes: dict[Path, tuple[str, str]] = field(default_factory=dict)  # path -> (old, new)
    production: tuple[Path, str, str] | None = None


def image_tag_for(tag: str) -> str:
    """v1.2.3 -> 1.2.3 (the image tag CI pushes); anything not strict semver is refused."""
    if not SEMVER.match(tag):
        raise ReleaseError(
            f"{tag!r} is not a release tag: expected vMAJOR.MINOR.PATCH, e.g. v1.2.3"
        )
    return tag[1:].replace("+", "_")  # '+' is not allowed in image tags


def git(repo: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *GIT_ID, *args], cwd=repo, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def set_image_tag(text: str, image: str, new_tag: str, source: Path, required: bool = True) -> str:
    """Return kustomization text with images[name=image].newTag set; comments and order kept.
    Without such an entry: an error, or the text unchanged when not ``required``."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the repo style: "  - item" under a key
    data = yaml.load(text)
    entries = [e for e in (data.get("images") or []) if e.get("name") == image]
    if not entries and not required:
        return text
    if len(entries) != 1:
        raise ReleaseError(f"{source}: needs exactly one images: entry named {image!r}")
    entries[0]["newTag"] = new_tag
    buffer = io.StringIO()
    yaml.dump(data, buffer)
    return buffer.getvalue()


def release_images(text: str, app: str, image_tag: str, source: Path) -> str:
    """Both images CI builds and tags with the release version (scripts/ci/build_image.sh) get
    the tag: the service, named after the app, and the trainer its retraining workflow and drift
    CronJob run. An overlay that does not pin the trainer (no continuous training) keeps the
    service alone."""
    text = set_image_tag(text, app, image_tag, source)
    return set_image_tag(text, TRAINER_IMAGE, image_tag, source, required=False)


def changelog_entry(plan: Plan, record: dict[str, object], today: date) -> str:
    metrics = record.get("metrics") or {}
    latency = record.get("latency") or {}
    assert isinstance(metrics, dict) and isinstance(latency, dict)
    return (
        f"## {plan.tag} - {today.isoformat()}\n\n"
        f"- {plan.app}: image tag `{plan.image_tag}` to staging; production prepared on branch"
        f" `release/{plan.tag}-production` for review\n"
        f"- model `{plan.model_name}` version {plan.model_version}"
        f" (accuracy {float(metrics.get('accuracy', float('nan'))):.4f},"
        f" p99 {float(latency.get('p99_ms', float('nan'))):.3f} ms,"
        f" commit {str(record.get('git_commit', 'unknown'))[:12]})\n"
    )


def with_changelog(old: str, entry: str, tag: str) -> str:
    if re.search(rf"^## {re.escape(tag)} ", old, flags=re.M):
        return old  # already released: idempotent
    head = "# Changelog\n\n"
    body = old[len(head) :] if old.startswith(head) else old
    return head + entry + ("\n" + body if body.strip() else "")


def build_plan(repo: Path, tag: str, app: str, registration: Path, today: date) -> Plan:
    image_tag = image_tag_for(tag)
    if not registration.is_file():
        raise ReleaseError(f"{registration}: no registration record (run `make pipeline` first)")
    record = json.loads(registration.read_text())
    plan = Plan(tag, image_tag, app, str(record["model_name"]), str(record["version"]))
    overlays = repo / "apps" / app / "overlays"
    for env in ("staging", "production"):
        if not (overlays / env / "kustomization.yaml").is_file():
            raise ReleaseError(f"{overlays / env / 'kustomization.yaml'}: missing")
    staging = overlays / "staging" / "kustomization.yaml"
    old = staging.read_text()
    new = release_images(old, app, image_tag, staging)
    if new != old:
        plan.changes[staging] = (old, new)
    changelog = repo / "CHANGELOG.md"
    old_log = changelog.read_text() if changelog.exists() else ""
    new_log = with_changelog(old_log, changelog_entry(plan, record, today), tag)
    if new_log != old_log:
        plan.changes[changelog] = (old_log, new_log)
    production = overlays / "production" / "kustomization.yaml"
    prod_old = production.read_text()
    prod_new = release_images(prod_old, app, image_tag, production)
    if prod_new != prod_old:
        plan.production = (production, prod_old, prod_new)
    return plan


def unified(path: Path, repo: Path, old: str, new: str) -> str:
    name = str(path.relative_to(repo))
    lines = difflib.unified_diff(
        old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"
    )
    return "".join(lines)


def default_validate(repo: Path, overlay: Path) -> None:
    """Render and validate the overlay with the manifests tool (schemas, policies, references)."""
    cmd = [sys.executable, "-m", "scripts.manifests", "validate", str(overlay), "--no-promtool"]
    result = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseError(
            f"{overlay}: rendered manifests are invalid:\n{result.stdout}{result.stderr}"
        )


def default_set_alias(model_name: str, version: str, alias: str) -> str | None:
    """Move the MLflow alias; returns the version it pointed at before (None if unset)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ml.tracking import start_tracking

    start_tracking()
    client = MlflowClient()
    try:
        previous: str | None = str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        previous = None
    try:
        client.get_model_version(model_name, version)
        client.set_registered_model_alias(model_name, alias, version)
    except MlflowException as error:
        raise ReleaseError(
            f"MLflow: cannot point {model_name}@{alias} at {version}: {error}"
        ) from None
    return previous


def restore_alias(model_name: str, alias: str, previous: str | None) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    if previous is None:
        client.delete_registered_model_alias(model_name, alias)
    else:
        client.set_registered_model_alias(model_name, alias, previous)


def apply(
    repo: Path,
    plan: Plan,
    validate: Callable[[Path, Path], None] = default_validate,
    set_alias: Callable[[str, str, str], str | None] = default_set_alias,
) -> list[str]:
    """Carry out the plan; on any failure undo every step already taken, then re-raise."""
    done: list[str] = []
    head = git(repo, "rev-parse", "HEAD")
    branch = f"release/{plan.tag}-production"
    created_branch = False
    created_files = {path for path in plan.changes if not path.exists()}
    try:
        for path, (_, new) in plan.changes.items():
            write_text(path, new)
        if plan.changes:
            validate(repo, repo / "apps" / plan.app / "overlays" / "staging")
            git(repo, "add", *(str(p.relative_to(repo)) for p in plan.changes))
            git(
                repo,
                "commit",
                "-q",
                "-m",
                f"release {plan.tag}: {plan.app} {plan.image_tag} to staging",
            )
            done.append(
                f"committed staging change on {git(repo, 'rev-parse', '--abbrev-ref', 'HEAD')}"
            )
        if plan.production and not git(repo, "branch", "--list", branch):
            created_branch = True
            _commit_on_branch(repo, branch, plan)
            done.append(
                f"prepared production change on branch {branch} (open it as a merge request)"
            )
        previous = set_alias(plan.model_name, plan.model_version, "staging")
        if previous != plan.model_version:
            done.append(f"MLflow alias {plan.model_name}@staging -> version {plan.model_version}")
    except BaseException:
        git(repo, "reset", "-q", "--hard", head, check=False)
        for path, (old, _) in plan.changes.items():
            path.unlink(missing_ok=True) if path in created_files else write_text(path, old)
        if created_branch:
            git(repo, "branch", "-D", branch, check=False)
        raise
    return done


def _commit_on_branch(repo: Path, branch: str, plan: Plan) -> None:
    """Commit the production overlay change on a new branch without touching the work tree."""
    assert plan.production is not None
    path, _, new = plan.production
    rel = str(path.relative_to(repo))
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=repo,
        input=new,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env_index = repo / ".git" / "release-index"
    try:
        run_env = {"GIT_INDEX_FILE": str(env_index)}
        _git_env(repo, run_env, "read-tree", "HEAD")
        _git_env(repo, run_env, "update-index", "--cacheinfo", f"100644,{blob},{rel}")
        tree = _git_env(repo, run_env, "write-tree")
        message = f"release {plan.tag}: {plan.app} {plan.image_tag} to production"
        commit = git(repo, "commit-tree", tree, "-p", "HEAD", "-m", message)
        git(repo, "branch", branch, commit)
    finally:
        env_index.unlink(missing_ok=True)


def _git_env(repo: Path, extra: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **extra}
    )
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def default_branch() -> str:
    return os.environ.get("CI_DEFAULT_BRANCH", "main")


def push_release(repo: Path, remote: str) -> str:
    """Publish the staging commit to the default branch (CI runs on the tag's detached HEAD)."""
    target = default_branch()
    git(repo, "push", remote, f"HEAD:refs/heads/{target}")
    return f"pushed the staging change to {remote}/{target}"


def promote(repo: Path, plan: Plan, remote: str) -> str:
    """Push the production branch with GitLab push options that open its merge request."""
    branch = f"release/{plan.tag}-production"
    if not git(repo, "branch", "--list", branch):
        if plan.production is None:
            raise ReleaseError(
                f"production already runs image tag {plan.image_tag}: nothing to promote"
            )
        _commit_on_branch(repo, branch, plan)
    target = default_branch()
    git(
        repo,
        "push",
        "-o",
        "merge_request.create",
        "-o",
        f"merge_request.target={target}",
        "-o",
        f"merge_request.title=Promote {plan.tag} to production",
        remote,
        f"refs/heads/{branch}:refs/heads/{branch}",
    )
    return f"pushed {branch} to {remote}; its merge request into {target} awaits review"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tag", help="release tag, vMAJOR.MINOR.PATCH")
    parser.add_argument("--app", default="digits-classifier")
    parser.add_argument("--registration", default="models/registration.json")
    parser.add_argument("--repo", default=".", help="repository root (default: cwd)")
    parser.add_argument("--dry-run", action="store_true", help="print the diffs; change nothing")
    parser.add_argument("--push", action="store_true", help="push the staging commit (CI)")
    parser.add_argument(
        "--promote", action="store_true", help="push the production branch and open its MR"
    )
    parser.add_argument("--remote", default="origin")
    args = parser.parse_args(argv)
    repo = Path(args.repo).resolve()
    try:
        plan = build_plan(repo, args.tag, args.app, repo / args.registration, date.today())
        if args.promote:
            print(f"release: {promote(repo, plan, args.remote)}")
            return 0
        if not args.dry_run and git(repo, "status", "--porcelain", "--untracked-files=no"):
            raise ReleaseError("the work tree has uncommitted changes: commit or stash them first")
        if args.dry_run:
            for path, (old, new) in plan.changes.items():
                print(unified(path, repo, old, new), end="")
            if plan.production:
                print(f"# on branch release/{plan.tag}-production:")
                print(unified(plan.production[0], repo, *plan.production[1:]), end="")
            print(f"# would move MLflow alias {plan.model_name}@staging -> {plan.model_version}")
            return 0
        done = apply(repo, plan, validate=default_validate, set_alias=default_set_alias)
        if args.push:
            done.append(push_release(repo, args.remote))
    except ReleaseError as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1
    for line in done or ["nothing to do: this release is already in place"]:
        print(f"release: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
