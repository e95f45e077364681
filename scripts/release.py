"""`make release TAG=<app>/vX.Y.Z`: ship one app's model to staging and prepare its production
change for review.

The tag names the model: its prefix is the model's `tag_prefix` in models.yaml (`<app>/` by
default; `""` in a single-model repository, whose tags are plain `vX.Y.Z`), so apps release
independently and two apps may carry the same version. What it does, in order, and only after
every check passed:
1. refuses a tag of no model, anything but strict semver `vMAJOR.MINOR.PATCH[-pre][+build]`
   after the prefix, a dirty tree, a missing registration record, or a model no registry version
   holds (the version is looked up by content: the ONNX sha256 register tagged it with);
2. writes the image tag into `apps/<app>/overlays/staging/kustomization.yaml` (`images:` only, the
   field `kustomize edit set image` and argocd-image-updater edit: the model's service image and,
   where pinned, its trainer image), adds an entry to the app's section of CHANGELOG.md,
   validates the rendered overlay, and commits both on the current branch;
3. prepares the production change as a commit on its own branch `release/<tag>-production`
   (never on the current branch: production is a reviewed merge request);
4. moves the MLflow alias `staging` of that app's registered model, and no other;
5. with `--push` (CI): publishes the staging commit to the default branch.
A failure at any step, the push included, puts back every file, commit, branch and alias it had
changed. A second run with the same tag changes nothing. `--dry-run` prints the diffs and the
plan, and changes nothing. A version below the one staging runs is refused (a downgrade) unless
`--allow-downgrade` says it is a deliberate rollback.

In CI (`--push`) the release is made on top of the remote default branch, not on the tag's commit:
the tag usually lies behind the branch's tip, and a commit on it could never be pushed. The
tagged commit must be on that branch. The model (registration record) is the tagged commit's; the
overlays and CHANGELOG are the branch tip's. If the branch moves while the release runs (the push
is refused), everything is rolled back and the release starts again from the new tip, up to
`--attempts` times. The registry is the team's tracking server: CI without MLFLOW_TRACKING_URI is
refused before anything changes (a runner's local SQLite store holds no team's model).
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from datetime import date
from pathlib import Path

import semver
from ruamel.yaml import YAML

from ml.catalog import CatalogError, ModelEntry, load_catalog
from ml.io import write_text
from ml.registration import RecordError, RegistrationRecord, read_record

_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"  # semver.org: no leading zeros
SEMVER = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
GIT_ID = ["-c", "user.name=release-bot", "-c", "user.email=release-bot@example.com"]


class ReleaseError(RuntimeError):
    """The release cannot go ahead; the message says why and what to do."""


class PushRejected(ReleaseError):
    """The remote branch moved while the release ran: roll back, then try again from its tip."""


@dataclass
class Plan:
    tag: str
    image_tag: str
    entry: ModelEntry
    record: RegistrationRecord
    changes: dict[Path, tuple[str, str]] = field(default_factory=dict)  # path -> (old, new)
    production: tuple[Path, str, str] | None = None


def image_tag_for(version_tag: str) -> str:
    """v1.2.3 -> 1.2.3 (the image tag CI pushes); anything not strict semver is refused."""
    if not SEMVER.match(version_tag):
        raise ReleaseError(
            f"{version_tag!r} is not a release tag: expected vMAJOR.MINOR.PATCH, e.g. v1.2.3"
        )
    return version_tag[1:].replace("+", "_")  # '+' is not allowed in image tags


def model_of(repo: Path, tag: str) -> tuple[ModelEntry, str]:
    """(model, image tag) of a release tag `<tag_prefix>vX.Y.Z`."""
    try:
        entry, version = load_catalog(repo / "models.yaml").for_tag(tag)
    except CatalogError as error:
        raise ReleaseError(f"{error} (a release tag is <app>/vMAJOR.MINOR.PATCH)") from None
    return entry, image_tag_for(version)


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


def release_images(text: str, entry: ModelEntry, image_tag: str, source: Path) -> str:
    """Both images CI builds and tags with the release version (scripts/sh/build_image.sh) get
    the tag: the model's service image and the trainer its retraining workflow and drift CronJob
    run. An overlay that does not pin the trainer (no continuous training) keeps the service
    alone."""
    text = set_image_tag(text, entry.serving_image, image_tag, source)
    return set_image_tag(text, entry.trainer_image, image_tag, source, required=False)


def changelog_entry(plan: Plan, today: date) -> str:
    record = plan.record
    scores = ", ".join(f"{k} {record.metrics[k]:.4f}" for k in ("accuracy", "roc_auc"))
    return (
        f"### {plan.tag} - {today.isoformat()}\n\n"
        f"- image tag `{plan.image_tag}` to staging; production prepared on branch"
        f" `release/{plan.tag}-production` for review\n"
        f"- model `{record.model_name}` with ONNX sha256 `{record.onnx_sha256[:12]}` ({scores},"
        f" data `{record.data_hash[:12]}`, params `{record.params_hash[:12]}`)\n"
    )


def with_changelog(old: str, app: str, entry: str, tag: str) -> str:
    """CHANGELOG.md with `entry` first in the app's `## <app>` section (a new section at the end
    for an app's first release); unchanged when the tag is already there: a second run is a
    no-op, and two apps released at the same version keep an entry each."""
    if re.search(rf"^### {re.escape(tag)} ", old, flags=re.M):
        return old
    lines = old.splitlines(keepends=True) or ["# Changelog\n", "\n"]
    heading = f"## {app}\n"
    if heading in lines:
        at = lines.index(heading) + 1
        while at < len(lines) and not lines[at].strip():
            at += 1
        lines[at:at] = [entry, "\n"]
    else:
        if lines[-1].strip():
            lines.append("\n")
        lines += [heading, "\n", entry]
    return "".join(lines)


def released_versions(staging_text: str, changelog: str, entry: ModelEntry) -> list[str]:
    """Versions this app has shipped: the service image tag staging runs and every `### <tag>`
    heading of the app's CHANGELOG entries (anything not semver, e.g. `latest`, is skipped)."""
    found: list[str] = []
    images = YAML(typ="safe").load(staging_text).get("images") or []
    found += [str(i.get("newTag", "")) for i in images if i.get("name") == entry.serving_image]
    prefix = re.escape(entry.tag_prefix)
    found += re.findall(rf"^### {prefix}v(\S+) ", changelog, flags=re.M)
    return [v.replace("_", "+") for v in found if semver.Version.is_valid(v.replace("_", "+"))]


def refuse_downgrade(tag: str, version: str, shipped: list[str]) -> None:
    """A release below a version already shipped would move staging back and list the older
    version above the newer one: refused unless the caller says it is a rollback."""
    newer = [v for v in shipped if semver.Version.parse(v).compare(version) > 0]
    if newer:
        top = max(newer, key=semver.Version.parse)
        raise ReleaseError(
            f"{tag} is older than {top}, already released: a downgrade. Pass --allow-downgrade"
            " (make release ALLOW_DOWNGRADE=1) to roll staging back deliberately"
        )


def load_record(path: Path) -> RegistrationRecord:
    if not path.is_file():
        raise ReleaseError(f"{path}: no registration record (run `make pipeline` first)")
    try:
        return read_record(path)
    except RecordError as error:
        raise ReleaseError(str(error)) from None


def build_plan(
    repo: Path,
    tag: str,
    registration: Path | None,
    today: date,
    record: RegistrationRecord | None = None,
    allow_downgrade: bool = False,
) -> Plan:
    """What the release would change. `record`: the model, when it was read elsewhere (CI reads
    it at the tagged commit and plans against the default branch's tip)."""
    entry, image_tag = model_of(repo, tag)
    registration = registration or repo / entry.folder / "registration.json"
    if record is None:
        record = load_record(registration)
    if record.model_name != entry.registered_model:
        raise ReleaseError(
            f"{registration}: records model {record.model_name!r}, but models.yaml registers"
            f" {entry.name} as {entry.registered_model!r}"
        )
    plan = Plan(tag, image_tag, entry, record)
    app = entry.app
    overlays = repo / "apps" / app / "overlays"
    for env in ("staging", "production"):
        if not (overlays / env / "kustomization.yaml").is_file():
            raise ReleaseError(f"{overlays / env / 'kustomization.yaml'}: missing")
    staging = overlays / "staging" / "kustomization.yaml"
    old = staging.read_text()
    changelog = repo / "CHANGELOG.md"
    old_log = changelog.read_text() if changelog.exists() else ""
    if not allow_downgrade:
        refuse_downgrade(tag, image_tag.replace("_", "+"), released_versions(old, old_log, entry))
    new = release_images(old, entry, image_tag, staging)
    if new != old:
        plan.changes[staging] = (old, new)
    new_log = with_changelog(old_log, app, changelog_entry(plan, today), tag)
    if new_log != old_log:
        plan.changes[changelog] = (old_log, new_log)
    production = overlays / "production" / "kustomization.yaml"
    prod_old = production.read_text()
    prod_new = release_images(prod_old, entry, image_tag, production)
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


def default_find_version(model_name: str, onnx_sha256: str) -> str:
    """The registry version holding this exact ONNX file (register tags it with its sha256):
    found by content, so a version number written on another machine is never trusted."""
    from mlflow import MlflowClient

    from ml.tracking import registered_version, tracking_uri

    version = registered_version(MlflowClient(tracking_uri()), model_name, onnx_sha256)
    if version is None:
        raise ReleaseError(
            f"MLflow ({tracking_uri()}): no version of {model_name!r} holds the model with ONNX"
            f" sha256 {onnx_sha256[:12]}...: run the model's register stage against this store"
            " (MLFLOW_TRACKING_URI) first"
        )
    return version


def default_set_alias(model_name: str, version: str, alias: str) -> str | None:
    """Move the MLflow alias; returns the version it pointed at before (None if unset)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from ml.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
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

    from ml.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    if previous is None:
        client.delete_registered_model_alias(model_name, alias)
    else:
        client.set_registered_model_alias(model_name, alias, previous)


def apply(
    repo: Path,
    plan: Plan,
    validate: Callable[[Path, Path], None] = default_validate,
    set_alias: Callable[[str, str, str], str | None] = default_set_alias,
    find_version: Callable[[str, str], str] = default_find_version,
    publish: Callable[[Path], str] | None = None,
    restore: Callable[[str, str, str | None], None] = restore_alias,
) -> list[str]:
    """Carry out the plan, then `publish` it (the push, in CI); on any failure, the push's
    included, undo every step already taken (files, commit, branch, alias), then re-raise."""
    model_name = plan.record.model_name
    version = find_version(model_name, plan.record.onnx_sha256)  # before anything changes
    done: list[str] = []
    head = git(repo, "rev-parse", "HEAD")
    branch = f"release/{plan.tag}-production"
    created_branch = False
    alias_moved = False
    previous: str | None = None
    created_files = {path for path in plan.changes if not path.exists()}
    try:
        for path, (_, new) in plan.changes.items():
            write_text(path, new)
        if plan.changes:
            validate(repo, repo / "apps" / plan.entry.app / "overlays" / "staging")
            git(repo, "add", *(str(p.relative_to(repo)) for p in plan.changes))
            git(
                repo,
                "commit",
                "-q",
                "-m",
                f"release {plan.tag}: {plan.entry.app} {plan.image_tag} to staging",
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
        previous = set_alias(model_name, version, "staging")
        alias_moved = previous != version
        if alias_moved:
            done.append(f"MLflow alias {model_name}@staging -> version {version}")
        if publish is not None:
            done.append(publish(repo))
    except BaseException:
        git(repo, "reset", "-q", "--hard", head, check=False)
        for path, (old, _) in plan.changes.items():
            path.unlink(missing_ok=True) if path in created_files else write_text(path, old)
        if created_branch:
            git(repo, "branch", "-D", branch, check=False)
        if alias_moved:
            restore(model_name, "staging", previous)
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
        message = f"release {plan.tag}: {plan.entry.app} {plan.image_tag} to production"
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


def push_release(repo: Path, remote: str, expected: str) -> str:
    """Publish the staging commit to the default branch, only if the branch is still at
    `expected` (the tip the release was made on): a lease, so a concurrent push is never
    overwritten and a moved branch is reported as PushRejected, not as a half-done release."""
    target = default_branch()
    result = subprocess.run(
        [
            "git",
            *GIT_ID,
            "push",
            "--porcelain",
            f"--force-with-lease=refs/heads/{target}:{expected}",
            remote,
            f"HEAD:refs/heads/{target}",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).strip()
        if re.search(r"stale info|non-fast-forward|fetch first|rejected", detail):
            raise PushRejected(f"{remote}/{target} moved while the release ran: {detail}")
        raise ReleaseError(f"git push {remote} HEAD:{target} failed: {detail}")
    return f"pushed the staging change to {remote}/{target}"


def on_default_branch(repo: Path, remote: str) -> str:
    """Fetch the remote default branch and check the tagged commit (HEAD) is on it; check its tip
    out (detached) and return that tip. The release commit goes on top of it."""
    target = default_branch()
    tagged = git(repo, "rev-parse", "HEAD")
    git(repo, "fetch", "-q", remote, f"+refs/heads/{target}:refs/remotes/{remote}/{target}")
    tip = git(repo, "rev-parse", f"refs/remotes/{remote}/{target}")
    if subprocess.run(["git", "merge-base", "--is-ancestor", tagged, tip], cwd=repo).returncode:
        raise ReleaseError(
            f"the tagged commit {tagged[:12]} is not on {remote}/{target}: release tags must be"
            f" made on {target}"
        )
    git(repo, "checkout", "-q", "--detach", tip)
    return tip


# git asks this helper for the push credentials: the token never appears on a command line
_CREDENTIAL_HELPER = '!f() { echo username=oauth2; echo "password=${GIT_PUSH_TOKEN}"; }; f'


def configure_push(repo: Path, remote: str, env: Mapping[str, str]) -> None:
    """GitLab clones with the job token in the remote's URL, and that token cannot push. With
    GIT_PUSH_TOKEN set, pushes go to the project's plain URL (CI_SERVER_URL/CI_PROJECT_PATH)
    and git gets the token from a credential helper. This clone's config only; fetches keep
    the job's URL (on Jenkins, whose checkout leaves no credentials, the helper answers them
    too). Without the token, nothing changes."""
    token, server, project = (
        env.get(k) for k in ("GIT_PUSH_TOKEN", "CI_SERVER_URL", "CI_PROJECT_PATH")
    )
    if not token or not server or not project:
        return
    git(repo, "remote", "set-url", "--push", remote, f"{server.rstrip('/')}/{project}.git")
    git(repo, "config", "credential.helper", _CREDENTIAL_HELPER)


def require_tracking_server() -> None:
    """CI must look the model up in the team's registry: the runner's own SQLite store is empty
    (a fresh clone), so without MLFLOW_TRACKING_URI the lookup could only fail, later and
    obscurely."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        raise ReleaseError(
            "MLFLOW_TRACKING_URI is not set: a CI release finds the model's registry version on"
            " the team's MLflow server by the ONNX sha256 register tagged it with. Set"
            " MLFLOW_TRACKING_URI (and MLFLOW_TRACKING_TOKEN or _USERNAME/_PASSWORD) as CI"
            " variables (README, CI section)"
        )


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


def release_in_ci(repo: Path, args: argparse.Namespace) -> list[str]:
    """The CI release: on the remote default branch's tip, pushed within the transaction; a
    push refused because the branch moved is rolled back and retried from the new tip."""
    require_tracking_server()
    configure_push(repo, args.remote, os.environ)
    tagged = git(repo, "rev-parse", "HEAD")
    entry, _ = model_of(repo, args.tag)
    registration = repo / (args.registration or f"{entry.folder}/registration.json")
    record = load_record(registration)  # the tagged commit's model
    try:
        for attempt in range(1, args.attempts + 1):
            tip = on_default_branch(repo, args.remote)
            plan = build_plan(repo, args.tag, None, date.today(), record, args.allow_downgrade)
            try:
                return apply(
                    repo,
                    plan,
                    validate=default_validate,
                    set_alias=default_set_alias,
                    find_version=default_find_version,
                    publish=partial(push_release, remote=args.remote, expected=tip),
                    restore=restore_alias,
                )
            except PushRejected as error:
                if attempt == args.attempts:
                    raise ReleaseError(
                        f"{error}\nrolled back (commit, production branch, MLflow alias) after"
                        f" {attempt} attempt(s): re-run the release job"
                    ) from None
                print(f"release: {error}: rolled back; attempt {attempt + 1} from the new tip")
    finally:
        git(repo, "checkout", "-q", "--detach", tagged, check=False)
        # the production branch was made from the default branch's tip, not the tag: keep it
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "tag", help="release tag, <app>/vMAJOR.MINOR.PATCH (models.yaml tag_prefix)"
    )
    parser.add_argument(
        "--registration", default=None, help="default: the model's <folder>/registration.json"
    )
    parser.add_argument("--repo", default=".", help="repository root (default: cwd)")
    parser.add_argument("--dry-run", action="store_true", help="print the diffs; change nothing")
    parser.add_argument(
        "--push",
        action="store_true",
        help="CI: release on the remote default branch's tip, push it (needs MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--attempts", type=int, default=3, help="--push: tries if the branch moves")
    parser.add_argument(
        "--allow-downgrade", action="store_true", help="release a version below staging's"
    )
    parser.add_argument(
        "--promote", action="store_true", help="push the production branch and open its MR"
    )
    parser.add_argument("--remote", default="origin")
    args = parser.parse_args(argv)
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    repo = Path(args.repo).resolve()
    try:
        if args.promote:
            configure_push(repo, args.remote, os.environ)
            registration = repo / args.registration if args.registration else None
            plan = build_plan(repo, args.tag, registration, date.today(), allow_downgrade=True)
            print(f"release: {promote(repo, plan, args.remote)}")
            return 0
        if not args.dry_run and git(repo, "status", "--porcelain", "--untracked-files=no"):
            raise ReleaseError("the work tree has uncommitted changes: commit or stash them first")
        if args.push and not args.dry_run:
            done = release_in_ci(repo, args)
        else:
            registration = repo / args.registration if args.registration else None
            plan = build_plan(
                repo, args.tag, registration, date.today(), allow_downgrade=args.allow_downgrade
            )
            if args.dry_run:
                print_plan(repo, plan)
                return 0
            done = apply(
                repo,
                plan,
                validate=default_validate,
                set_alias=default_set_alias,
                find_version=default_find_version,
            )
    except ReleaseError as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1
    for line in done or ["nothing to do: this release is already in place"]:
        print(f"release: {line}")
    return 0


def print_plan(repo: Path, plan: Plan) -> None:
    for path, (old, new) in plan.changes.items():
        print(unified(path, repo, old, new), end="")
    if plan.production:
        print(f"# on branch release/{plan.tag}-production:")
        print(unified(plan.production[0], repo, *plan.production[1:]), end="")
    print(
        f"# would move MLflow alias {plan.record.model_name}@staging -> the version"
        f" holding ONNX sha256 {plan.record.onnx_sha256[:12]}..."
    )


if __name__ == "__main__":
    raise SystemExit(main())
