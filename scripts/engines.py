"""Upstream engines built from their Go modules: `make engines` (the bootstrap runs it once).

Each folder of tools/engines/ is a Go module pinning one upstream project (its go.mod and go.sum
are the pin); this tool builds its programs into a cache outside the repository, keyed by the
module's files, so every clone on a machine shares one build and a changed pin builds anew.
A program can also come from elsewhere (the projects' release downloads, a package manager):
set the variable named in the table, e.g. KUBE_APISERVER=/usr/local/bin/kube-apiserver, and
nothing is built for it.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ENGINES_ROOT = REPO_ROOT / "tools" / "engines"


class EngineError(RuntimeError):
    """An engine is missing or could not be built; the message says what to do."""


@dataclass(frozen=True)
class Engine:
    name: str
    """Folder under tools/engines/ holding the module."""
    module: str
    """The upstream module whose required version is this engine's version."""
    programs: tuple[tuple[str, str], ...]
    """(binary name, Go package) pairs; a package starting with ./ is ours."""
    version_vars: tuple[tuple[str, str], ...] = ()
    """(Go variable, value template) set at link time, as upstream's release builds do; the
    template sees {version} (v1.2.3), {number} (1.2.3), {major}, {minor}, and
    {prometheus_release} (Prometheus numbers release 3.5.0 as module v0.305.0)."""

    @property
    def folder(self) -> Path:
        return ENGINES_ROOT / self.name

    def version(self) -> str:
        text = (self.folder / "go.mod").read_text(encoding="utf-8")
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.module)} (v\S+)", text, re.M)
        if match is None:
            raise EngineError(f"{self.folder}/go.mod: no `require {self.module} vX.Y.Z`")
        return match[1]

    def key(self) -> str:
        """Cache key: version plus a digest of every file of the module folder."""
        digest = hashlib.sha256()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(self.folder)).encode())
            digest.update(path.read_bytes())
        return f"{self.name}-{self.version()}-{digest.hexdigest()[:12]}"


def _kubernetes_version_vars() -> tuple[tuple[str, str], ...]:
    # hack/lib/version.sh of Kubernetes sets these for both packages; without them the binaries
    # report v0.0.0-master, which clients such as Argo CD fail to parse.
    values = (
        ("gitVersion", "{version}"),
        ("gitMajor", "{major}"),
        ("gitMinor", "{minor}"),
        ("gitTreeState", "clean"),
    )
    return tuple(
        (f"{package}.{name}", template)
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, template in values
    )


ENGINES: tuple[Engine, ...] = (
    Engine(
        name="kubernetes",
        module="k8s.io/kubernetes",
        programs=(
            ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
            ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
            ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
            ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
            ("etcd", "./cmd/etcd"),
        ),
        version_vars=_kubernetes_version_vars(),
    ),
    Engine(
        name="rollouts",
        module="github.com/argoproj/argo-rollouts",
        programs=(
            ("rollouts-controller", "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"),
        ),
        version_vars=(("github.com/argoproj/argo-rollouts/utils/version.version", "{number}"),),
    ),
    Engine(
        name="prometheus",
        module="github.com/prometheus/prometheus",
        programs=(
            ("prometheus", "github.com/prometheus/prometheus/cmd/prometheus"),
            ("promtool", "github.com/prometheus/prometheus/cmd/promtool"),
        ),
        version_vars=(("github.com/prometheus/common/version.Version", "{prometheus_release}"),),
    ),
    Engine(
        # one multi-call program (tools/engines/argocd/cmd/argocd): `argocd repo-server ...`
        name="argocd",
        module="github.com/argoproj/argo-cd/v3",
        programs=(("argocd", "./cmd/argocd"),),
        version_vars=tuple(
            (f"github.com/argoproj/argo-cd/v3/common.{name}", template)
            for name, template in (
                ("version", "{number}"),
                ("gitTag", "{version}"),
                ("gitTreeState", "clean"),
            )
        ),
    ),
    Engine(
        # the program Argo CD's repo server runs for `kustomize build` (found on its PATH)
        name="kustomize",
        module="sigs.k8s.io/kustomize/kustomize/v5",
        programs=(("kustomize", "sigs.k8s.io/kustomize/kustomize/v5"),),
    ),
    Engine(
        name="kubeconform",
        module="github.com/yannh/kubeconform",
        programs=(("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform"),),
        version_vars=(("main.version", "{version}"),),
    ),
)


def cache_root() -> Path:
    configured = os.environ.get("ENGINES_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlops-gitops" / "engines"


def env_name(program: str) -> str:
    """The variable that points at a prebuilt binary: kube-apiserver -> KUBE_APISERVER."""
    return program.upper().replace("-", "_")


def engine_of(program: str) -> Engine:
    for engine in ENGINES:
        if any(name == program for name, _ in engine.programs):
            return engine
    raise EngineError(f"no engine builds {program!r}")


def component_version_of(program: str) -> str:
    """The pinned version of the engine that builds `program` (for reports)."""
    return engine_of(program).version()


def program_path(program: str) -> Path:
    """Where `program` is: the variable's path, else the cache; EngineError when neither."""
    override = os.environ.get(env_name(program))
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EngineError(f"{env_name(program)}={override}: not an executable file")
        return path
    engine = engine_of(program)
    path = cache_root() / engine.key() / program
    if not path.is_file():
        raise EngineError(
            f"{program} ({engine.module} {engine.version()}) is not built: run `make engines`,"
            f" or set {env_name(program)} to a binary of that version"
        )
    return path


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise EngineError(
            "the Go toolchain is not installed: install Go >= 1.26 (the official tarball) to"
            " build the engines, or point KUBE_APISERVER, ETCD, ..."
            " at prebuilt binaries (tools/engines/README.md)"
        )
    return go


def build(engine: Engine, log: Path | None = None) -> tuple[Path, float | None]:
    """Build `engine` unless cached; -> (its folder in the cache, seconds spent or None)."""
    target = cache_root() / engine.key()
    if all((target / name).is_file() for name, _ in engine.programs):
        return target, None
    go = _go()
    cache_root().mkdir(parents=True, exist_ok=True)
    # one build per key at a time, even across clones and CI jobs on the machine
    with open(cache_root() / f".{engine.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((target / name).is_file() for name, _ in engine.programs):
            return target, None
        started = time.monotonic()
        version = engine.version()
        flags = ["-s", "-w"] + [
            f"-X {var}={_version_value(template, version)}" for var, template in engine.version_vars
        ]
        staging = Path(tempfile.mkdtemp(prefix=f".{engine.name}-", dir=cache_root()))
        try:
            for name, package in engine.programs:
                command = [go, "build", "-trimpath", "-ldflags", " ".join(flags)]
                command += ["-o", str(staging / name), package]
                _run(command, engine.folder, log)
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target, time.monotonic() - started


def _version_value(template: str, version: str) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", version)] + [0, 0, 0]
    major, minor, patch = numbers[:3]
    release = f"{minor // 100}.{minor % 100}.{patch}"
    return template.format(
        version=version,
        number=version.lstrip("v"),
        major=major,
        minor=minor,
        prometheus_release=release,
    )


def _run(command: list[str], cwd: Path, log: Path | None) -> None:
    env = dict(os.environ, CGO_ENABLED=os.environ.get("CGO_ENABLED", "0"), GOFLAGS="-mod=readonly")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if log is not None:
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"$ (cd {cwd} && {' '.join(command)})\n{result.stdout}{result.stderr}")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise EngineError(f"`{' '.join(command)}` in {cwd} failed:\n{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.engines", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build every engine that is not cached")
    build_cmd.add_argument("--quiet", action="store_true", help="print only what was built")
    path_cmd = sub.add_parser("path", help="print where a program is (for scripts)")
    path_cmd.add_argument("program")
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(program_path(args.program))
            return 0
        rows = []
        for engine in ENGINES:
            overridden = all(os.environ.get(env_name(name)) for name, _ in engine.programs)
            if overridden:
                rows.append((engine, "from " + ", ".join(env_name(n) for n, _ in engine.programs)))
                continue
            if not args.quiet or not (cache_root() / engine.key()).is_dir():
                print(f"engines: {engine.name} {engine.version()} ...", flush=True)
            _, seconds = build(engine)
            rows.append((engine, "cached" if seconds is None else f"built in {seconds:.0f} s"))
    except EngineError as exc:
        print(f"engines: {exc}", file=sys.stderr)
        return 1
    if not args.quiet or any("built" in state for _, state in rows):
        print(f"{'engine':<13}{'module':<36}{'version':<10}state")
        for engine, state in rows:
            print(f"{engine.name:<13}{engine.module:<36}{engine.version():<10}{state}")
        print(f"cache: {cache_root()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
