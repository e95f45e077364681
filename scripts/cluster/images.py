"""Process images: what the node agent runs for a container image, since no container engine
runs here. A process image is built from the image's own Dockerfile: its final stage's
ENTRYPOINT, CMD, ENV, WORKDIR and USER, and a snapshot of the files it COPYs from the build
context, each mapped to the path it has inside the image. The image's programs are this
machine's (the bootstrap's `.venv` stands in for a virtualenv the build stage installs from the
same lock); RUN steps of the final stage are not replayed, and the image says so.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

VENV = Path(sys.prefix)


class ImageError(ValueError):
    """A Dockerfile this tool cannot turn into a process image, or an unknown image."""


@dataclass(frozen=True)
class ProcessImage:
    ref: str
    dockerfile: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    user: str | None
    mounts: dict[str, str]
    """Path inside the image -> path on this machine (a snapshot or the venv)."""
    notes: tuple[str, ...] = field(default=())
    """What of the Dockerfile is not reproduced, to be said wherever the image runs."""

    def host_path(self, path: str) -> str | None:
        """The local path behind an image path, by the longest mapped prefix; None if unmapped."""
        for inside in sorted(self.mounts, key=len, reverse=True):
            if path == inside or path.startswith(inside.rstrip("/") + "/"):
                return self.mounts[inside] + path[len(inside.rstrip("/")) :]
        return None


def image_file(store: Path, ref: str) -> Path:
    return store / (re.sub(r"[^A-Za-z0-9_.-]+", "_", ref) + ".json")


def load_image(store: Path, ref: str) -> ProcessImage | None:
    path = image_file(store, ref)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return ProcessImage(
        ref=data["ref"],
        dockerfile=data["dockerfile"],
        entrypoint=tuple(data["entrypoint"]),
        cmd=tuple(data["cmd"]),
        env=dict(data["env"]),
        workdir=data["workdir"],
        user=data["user"],
        mounts=dict(data["mounts"]),
        notes=tuple(data["notes"]),
    )


def _substitute(text: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        return variables.get(name, "")

    return re.sub(r"\$(?:\{(?P<braced>\w+)\}|(?P<plain>\w+))", value, text)


def _json_or_shell(value: str) -> tuple[str, ...]:
    text = value.strip()
    if text.startswith("["):
        parsed = json.loads(text)
        if not (isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)):
            raise ImageError(f"not an exec-form list: {text}")
        return tuple(parsed)
    return ("/bin/sh", "-c", text)


def _env_pairs(value: str) -> list[tuple[str, str]]:
    words = shlex.split(value)
    if words and "=" not in words[0]:  # legacy form: ENV KEY value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [tuple(word.split("=", 1)) for word in words]  # type: ignore[misc]


def build_image(
    dockerfile: Path,
    context: Path,
    ref: str,
    store: Path,
    build_args: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> ProcessImage:
    """Turn `dockerfile`'s final stage into a process image stored under `store`;
    `extra_env` is added last, as an ENV line appended to the Dockerfile would be."""
    parser = DockerfileParser(str(dockerfile))
    stages: list[list[dict[str, Any]]] = [[]]
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM" and stages[-1]:
            stages.append([])
        stages[-1].append(instruction)
    final = stages[-1]
    args = dict(build_args or {})
    env: dict[str, str] = {}
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir, user = "/", None
    mounts: dict[str, str] = {}
    notes: list[str] = []
    snapshot = image_file(store, ref).with_suffix("")
    shutil.rmtree(snapshot, ignore_errors=True)
    for instruction in final:
        kind, value = instruction["instruction"], instruction["value"]
        variables = {**args, **env}
        if kind == "ARG":
            name, _, default = value.partition("=")
            args.setdefault(name.strip(), _substitute(default.strip(), variables))
        elif kind == "ENV":
            for key, raw in _env_pairs(value):
                env[key] = raw if key == "PATH" else _substitute(raw, {**args, **env})
        elif kind == "WORKDIR":
            workdir = _substitute(value.strip(), variables)
        elif kind == "USER":
            user = _substitute(value.strip(), variables)
        elif kind == "ENTRYPOINT":
            entrypoint, cmd = _json_or_shell(value), ()
        elif kind == "CMD":
            cmd = _json_or_shell(value)
        elif kind in ("COPY", "ADD"):
            words = [_substitute(w, variables) for w in shlex.split(value)]
            options = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if len(paths) < 2:
                raise ImageError(f"{dockerfile}:{instruction['startline'] + 1}: {kind} {value}")
            *sources, destination = paths
            if not destination.startswith("/"):
                destination = workdir.rstrip("/") + "/" + destination
            if any(o.startswith("--from=") for o in options):
                # a virtualenv the build stage installed from constraints.txt: the bootstrap's
                # .venv holds the same pinned packages
                for source in sources:
                    if (VENV / "bin" / "python").exists() and source.rstrip("/").endswith("venv"):
                        mounts[destination.rstrip("/") or "/"] = str(VENV)
                    else:
                        raise ImageError(
                            f"{dockerfile}:{instruction['startline'] + 1}: COPY {value}: only a"
                            " build stage's virtualenv can be taken from another stage"
                        )
                continue
            into_folder = (
                destination.endswith("/") or destination.endswith("/.") or len(sources) > 1
            )
            destination = posixpath.normpath(destination)
            for source in sources:
                local = (context / source).resolve()
                if not local.exists():
                    raise ImageError(
                        f"{dockerfile}:{instruction['startline'] + 1}: {source} is not in the"
                        f" build context {context}"
                    )
                inside = posixpath.join(destination, local.name) if into_folder else destination
                copy = snapshot / inside.lstrip("/")
                copy.parent.mkdir(parents=True, exist_ok=True)
                if local.is_dir():
                    shutil.copytree(local, copy, symlinks=True)
                else:
                    shutil.copy2(local, copy)  # modes kept, as COPY keeps them
                mounts[inside.rstrip("/")] = str(copy)
        elif kind == "RUN":
            notes.append(f"RUN not replayed: {value[:60]}")
        elif kind == "HEALTHCHECK":
            notes.append("HEALTHCHECK ignored (Kubernetes probes decide readiness)")
    env.update(extra_env or {})
    if extra_env:
        notes.append(f"ENV added for this image: {', '.join(sorted(extra_env))}")
    image = ProcessImage(
        ref=ref,
        dockerfile=str(dockerfile),
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        workdir=workdir,
        user=user,
        mounts=mounts,
        notes=tuple(notes),
    )
    path = image_file(store, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(image), indent=2) + "\n")
    return image
