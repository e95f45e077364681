"""The repository Argo CD reads: a bare copy of a commit, served under the repoURL of clusters/.

`make gitops-up` serves one commit (REF, default HEAD) of a repository (default this one) as
branch `main` of a fresh bare repository, the branch every Application in clusters/ tracks;
uncommitted changes are not served. A clone of the served repository can push to it (the
release loop does, as CI pushes a release commit to GitLab), and Argo CD sees the new commit.

With a time factor, one local commit goes on top: every canary pause and analysis interval
under rollouts/ and apps/ divided by it (`pause: {duration: 2m}` -> `2s` at 60), the same rule
as `make canary`'s, so a canary synced from git runs in seconds. PromQL windows are untouched.
The commit says what it is; `git log` of the served branch shows it.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ruamel.yaml import YAML

from scripts.cluster.canary import scale_durations

GIT_ID = ["-c", "user.name=gitops-up", "-c", "user.email=gitops-up@example.com"]
SCALED_FOLDERS = ("rollouts", "apps")


class ServeError(RuntimeError):
    """The repository or ref cannot be served; the message says what and where."""


@dataclass(frozen=True)
class Served:
    url: str
    """The repoURL Argo CD uses, e.g. https://gitlab.example.com/mlops/gitops.git."""
    bare: Path
    source_commit: str
    head: str
    """The commit `main` points at (source_commit, or the local time-scaling commit on it)."""
    scaled: tuple[str, ...]
    """What the time-scaling commit changed, one line per value ("" when none)."""

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *GIT_ID, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        raise ServeError(f"git {' '.join(args)} (in {cwd}): {result.stderr.strip()}")
    return result.stdout.strip()


def bare_path(root: Path, url: str) -> Path:
    """Where the bare repository for `url` lives under the git server's root (its URL path)."""
    path = urlsplit(url).path.strip("/")
    if not path.endswith(".git") or ".." in path.split("/"):
        raise ServeError(f"repoURL {url!r}: expected https://<host>/<group>/<name>.git")
    return root / path


def serve(source: Path, ref: str, root: Path, url: str, time_factor: float = 1.0) -> Served:
    """A fresh bare repository for `url` under `root` whose `main` is `ref` of `source`."""
    if not (source / ".git").exists() and not (source / "HEAD").is_file():
        raise ServeError(f"{source}: not a git repository")
    try:
        commit = git(source, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ServeError:
        raise ServeError(f"{source}: no commit {ref!r} (REF must name a commit)") from None
    bare = bare_path(root, url)
    shutil.rmtree(bare, ignore_errors=True)
    bare.parent.mkdir(parents=True, exist_ok=True)
    git(bare.parent, "init", "-q", "--bare", "--initial-branch=main", str(bare))
    git(bare, "config", "http.receivepack", "true")  # a clone may push, as CI does
    git(source, "push", "-q", "--force", str(bare), f"{commit}:refs/heads/main")
    head, scaled = commit, tuple[str, ...]()
    if time_factor != 1:
        head, scaled = _commit_time_scaling(bare, time_factor)
    return Served(url, bare, commit, head, scaled)


def _commit_time_scaling(bare: Path, factor: float) -> tuple[str, tuple[str, ...]]:
    with tempfile.TemporaryDirectory(prefix="gitops-scale-") as folder:
        work = Path(folder) / "work"
        git(Path(folder), "clone", "-q", str(bare), str(work))
        changes = scale_tree(work, factor)
        if not changes:
            return git(work, "rev-parse", "HEAD"), ()
        git(
            work,
            "commit",
            "-q",
            "-a",
            "-m",
            f"local: canary pauses and analysis intervals / {factor:g}",
            "-m",
            "Made by make gitops-up --time-factor; not part of the repository.\n\n"
            + "\n".join(changes),
        )
        git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
        return git(work, "rev-parse", "HEAD"), tuple(changes)


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def scale_tree(tree: Path, factor: float) -> list[str]:
    """Time-scale the YAML files of SCALED_FOLDERS in a work tree, in place, keeping comments;
    -> one line per value changed."""
    yaml = _yaml()
    changes: list[str] = []
    for folder in SCALED_FOLDERS:
        for path in sorted((tree / folder).rglob("*.yaml")):
            text = path.read_text(encoding="utf-8")
            documents = list(yaml.load_all(text))
            found = [
                line
                for document in documents
                for line in scale_durations(document, factor, str(path.relative_to(tree)))
            ]
            if found:
                buffer = io.StringIO()
                yaml.dump_all(documents, buffer)
                path.write_text(buffer.getvalue(), encoding="utf-8")
                changes += found
    return changes
