"""`models.yaml`: the one list of the repository's models, read by every tool.

Each entry names a model and where its parts live: its folder (with its `dvc.yaml` pipeline and
`params.yaml`), its app under `apps/`, its images, its MLflow experiment and registered model,
and the prefix of its release tags. Fields left out take the defaults below, derived from the
name, so a new model can be one line (`wine: {}`); the shipped entries spell everything out.

| field | default | used by |
| --- | --- | --- |
| folder | `models/<name>` | Makefile, stages (working directory), CI path rules, report |
| app | `<name>` | apps/<app>/, rehearsal overlay, release, serving MODEL_NAME |
| registered_model | app | register (MLflow registry), release (alias `staging`) |
| experiment | app | train/evaluate/register (MLflow runs) |
| images.serving | app | image build, release write-back (`images:` of the overlays) |
| images.trainer | `<app>-trainer` | image build, generated workflows and drift CronJob |
| tag_prefix | `<app>/` | release tags `<tag_prefix>vX.Y.Z`; `""` only in a single-model repo |

Names must be unique across entries (apps, folders, registered models, images, tag prefixes), so
one tag, one image or one registry entry can never mean two models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CATALOG = "models.yaml"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class CatalogError(ValueError):
    """models.yaml is missing, unreadable or invalid; the message names the file and the entry."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Images(_Strict):
    serving: Name | None = None
    trainer: Name | None = None


class _EntrySpec(_Strict):
    folder: str | None = None
    app: Name | None = None
    registered_model: Name | None = None
    experiment: str | None = Field(default=None, min_length=1, max_length=200)
    images: Images = Images()
    tag_prefix: str | None = Field(default=None, pattern=r"^([a-z0-9][a-z0-9-]*/)?$")


@dataclass(frozen=True)
class ModelEntry:
    """One model of the catalog with every default resolved."""

    name: str
    folder: str  # relative to the repository root, POSIX separators
    app: str
    registered_model: str
    experiment: str
    serving_image: str
    trainer_image: str
    tag_prefix: str

    @property
    def pipeline(self) -> str:
        return f"{self.folder}/dvc.yaml"

    @property
    def params(self) -> str:
        return f"{self.folder}/params.yaml"

    def tag(self, version: str) -> str:
        """`1.2.3` -> this model's release tag, e.g. `digits-classifier/v1.2.3`."""
        return f"{self.tag_prefix}v{version}"


class _CatalogFile(_Strict):
    models: dict[Name, _EntrySpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _folders_are_relative(self) -> "_CatalogFile":
        for name, spec in self.models.items():
            if spec.folder is not None:
                path = PurePosixPath(spec.folder)
                if path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
                    raise ValueError(f"{name}: folder must be a path inside the repository")
        return self


@dataclass(frozen=True)
class Catalog:
    """The parsed models.yaml; `root` is the repository root (the file's folder)."""

    root: Path
    entries: tuple[ModelEntry, ...]

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def get(self, name: str) -> ModelEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise CatalogError(f"no model {name!r} in {self.root / DEFAULT_CATALOG} ({self.names})")

    def select(self, names: str | None) -> list[ModelEntry]:
        """`None`/"" -> every model; else the space- or comma-separated names, in list order."""
        if not names or not names.strip():
            return list(self.entries)
        wanted = [n for n in names.replace(",", " ").split() if n]
        for name in wanted:
            self.get(name)
        return [e for e in self.entries if e.name in wanted]

    def by_app(self, app: str) -> ModelEntry:
        for entry in self.entries:
            if entry.app == app:
                return entry
        raise CatalogError(f"no model with app {app!r} in the catalog (apps: {self.apps})")

    @property
    def apps(self) -> list[str]:
        return [e.app for e in self.entries]

    def by_folder(self, folder: Path) -> ModelEntry:
        resolved = folder.resolve()
        for entry in self.entries:
            if (self.root / entry.folder).resolve() == resolved:
                return entry
        raise CatalogError(f"{folder}: not the folder of any model in the catalog")

    def for_tag(self, tag: str) -> tuple[ModelEntry, str]:
        """Split a release tag into (model, the version part after its prefix, e.g. `v1.2.3`);
        a prefix of no model is an error (the version part is the release tool's to judge)."""
        matches = [e for e in self.entries if e.tag_prefix and tag.startswith(e.tag_prefix)]
        if not matches:
            matches = [e for e in self.entries if e.tag_prefix == "" and "/" not in tag]
        if len(matches) != 1:
            prefixes = ", ".join(f"{e.tag(version='X.Y.Z')}" for e in self.entries)
            raise CatalogError(
                f"tag {tag!r} names no model of the catalog; expected one of: {prefixes}"
            )
        entry = matches[0]
        return entry, tag[len(entry.tag_prefix) :]


def _resolve(name: str, spec: _EntrySpec) -> ModelEntry:
    app = spec.app or name
    return ModelEntry(
        name=name,
        folder=str(PurePosixPath(spec.folder or f"models/{name}")),
        app=app,
        registered_model=spec.registered_model or app,
        experiment=spec.experiment or app,
        serving_image=spec.images.serving or app,
        trainer_image=spec.images.trainer or f"{app}-trainer",
        tag_prefix=f"{app}/" if spec.tag_prefix is None else spec.tag_prefix,
    )


def _unique(path: Path, entries: list[ModelEntry]) -> None:
    fields = {
        "folder": [e.folder for e in entries],
        "app": [e.app for e in entries],
        "registered_model": [e.registered_model for e in entries],
        "images": [i for e in entries for i in (e.serving_image, e.trainer_image)],
        "tag_prefix": [e.tag_prefix for e in entries],
    }
    for field, values in fields.items():
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise CatalogError(f"{path}: {field} must differ between models; repeated: {repeated}")
    if len(entries) > 1 and "" in fields["tag_prefix"]:
        raise CatalogError(
            f"{path}: tag_prefix '' (plain vX.Y.Z tags) is only for a repository with one model"
        )


def parse_catalog(raw: object, path: Path) -> Catalog:
    if not isinstance(raw, dict):
        raise CatalogError(f"{path}: expected a mapping with a `models:` section")
    try:
        parsed = _CatalogFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in error.errors()
        )
        raise CatalogError(f"{path}: {problems}") from None
    entries = [_resolve(name, spec) for name, spec in parsed.models.items()]
    _unique(path, entries)
    return Catalog(root=path.resolve().parent, entries=tuple(entries))


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Read and validate models.yaml; CatalogError names the file and the problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CatalogError(f"{path}: cannot read the model list: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise CatalogError(f"{path}: not valid YAML: {error}") from None
    return parse_catalog(raw, path)
