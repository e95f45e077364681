"""models.yaml (ml.catalog) and the rules that map a change to models (scripts/models.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ml.catalog import CatalogError, load_catalog, parse_catalog
from scripts import models
from tests.conftest import REPO

CATALOG = load_catalog(REPO / "models.yaml")


def catalog_of(entries: dict[str, object]) -> object:
    return parse_catalog({"models": entries}, Path("models.yaml"))


def test_the_shipped_list() -> None:
    assert CATALOG.names == ["digits", "breast-cancer"]
    digits = CATALOG.get("digits")
    assert (digits.folder, digits.app, digits.trainer_image) == (
        "models/digits",
        "digits-classifier",
        "digits-trainer",
    )
    assert digits.pipeline == "models/digits/dvc.yaml" and digits.tag("1.2.3").endswith("/v1.2.3")


def test_every_field_defaults_from_the_name() -> None:
    (wine,) = catalog_of({"wine": {}}).entries  # type: ignore[attr-defined]
    assert (wine.folder, wine.app, wine.registered_model, wine.experiment) == (
        "models/wine",
        "wine",
        "wine",
        "wine",
    )
    assert (wine.serving_image, wine.trainer_image, wine.tag_prefix) == (
        "wine",
        "wine-trainer",
        "wine/",
    )


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"a": {"app": "x"}, "b": {"app": "x"}}, "app must differ"),
        ({"a": {"tag_prefix": ""}, "b": {}}, "only for a repository with one model"),
        ({"a": {"folder": "/abs"}}, "inside the repository"),
        ({"a": {"folder": "../up"}}, "inside the repository"),
        ({"Bad_Name": {}}, "Bad_Name"),
        ({"a": {"colour": "red"}}, "colour"),
        ({"a": {"images": {"serving": "x"}}, "b": {"images": {"trainer": "x"}}}, "images"),
    ],
)
def test_an_invalid_list_is_refused_naming_the_problem(
    entries: dict[str, object], message: str
) -> None:
    with pytest.raises(CatalogError, match=message):
        catalog_of(entries)


def test_unreadable_lists(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read the model list"):
        load_catalog(tmp_path / "models.yaml")
    (tmp_path / "models.yaml").write_text("models: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(tmp_path / "models.yaml")
    (tmp_path / "models.yaml").write_text("- a list\n")
    with pytest.raises(CatalogError, match="expected a mapping"):
        load_catalog(tmp_path / "models.yaml")


def test_tags_name_their_model() -> None:
    entry, version = CATALOG.for_tag("breast-cancer/v1.2.3")
    assert entry.name == "breast-cancer" and version == "v1.2.3"
    for tag in ("v1.2.3", "unknown/v1.0.0"):
        with pytest.raises(CatalogError, match="names no model"):
            CATALOG.for_tag(tag)
    fork = catalog_of({"only": {"tag_prefix": ""}})
    assert fork.for_tag("v2.0.0")[0].name == "only"  # type: ignore[attr-defined]


def test_selection_by_name_keeps_the_list_order() -> None:
    assert [e.name for e in CATALOG.select("breast-cancer digits")] == ["digits", "breast-cancer"]
    assert [e.name for e in CATALOG.select("")] == CATALOG.names
    with pytest.raises(CatalogError, match="no model 'nope'"):
        CATALOG.select("nope")
    assert CATALOG.by_app("breast-cancer").name == "breast-cancer"
    assert CATALOG.by_folder(REPO / "models" / "digits").name == "digits"


BOTH = ["digits", "breast-cancer"]


@pytest.mark.parametrize(
    ("paths", "train", "deliver"),
    [
        (["models/digits/params.yaml"], ["digits"], ["digits"]),
        (["models/digits/dvc.lock", "apps/breast-cancer/base/x.yaml"], ["digits"], BOTH),
        (["apps/breast-cancer/overlays/staging/replicas.yaml"], [], ["breast-cancer"]),
        (["ml/stages/train.py"], BOTH, BOTH),
        (["params.yaml"], BOTH, BOTH),
        (["rollouts/analysis/x.yaml"], [], BOTH),
        (["scripts/mr_report.py"], [], BOTH),
        (["README.md", "docs/MODELS.md", "models/digits/NOTES.md", "ml/README.md"], [], []),
        (["tests/unit/test_config.py", "clusters/staging/root.yaml"], [], []),
    ],
)
def test_a_change_touches_the_models_its_paths_belong_to(
    paths: list[str], train: list[str], deliver: list[str]
) -> None:
    found = models.affected_models(paths, CATALOG)
    assert (found.train, found.deliver) == (train, deliver)


def test_an_entry_of_the_list_touches_that_model_only() -> None:
    before = CATALOG
    after = parse_catalog(
        {
            "models": {
                **yaml.safe_load((REPO / "models.yaml").read_text())["models"],
                "wine": {},
            }
        },
        REPO / "models.yaml",
    )
    found = models.affected_models(["models.yaml"], after, before)
    assert found.train == ["wine"] and found.deliver == ["wine"]


def test_ci_reads_the_plan_from_the_environment_or_the_plan_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAIN_MODELS", raising=False)
    monkeypatch.delenv("CI_PLAN_FILE", raising=False)
    assert [e.name for e in models.selected(CATALOG, None, "TRAIN_MODELS")] == CATALOG.names
    plan = tmp_path / "plan.env"
    plan.write_text("TRAIN_MODELS=\nDELIVER_MODELS=digits\n")
    monkeypatch.setenv("CI_PLAN_FILE", str(plan))  # Jenkins: the stashed plan file
    assert models.selected(CATALOG, None, "TRAIN_MODELS") == []
    assert [e.name for e in models.selected(CATALOG, None, "DELIVER_MODELS")] == ["digits"]
    monkeypatch.setenv("DELIVER_MODELS", "breast-cancer")  # GitLab: the plan's dotenv wins
    assert [e.name for e in models.selected(CATALOG, None, "DELIVER_MODELS")] == ["breast-cancer"]
    assert [e.name for e in models.selected(CATALOG, "digits", "DELIVER_MODELS")] == ["digits"]


def test_a_fresh_clones_unregistered_models_are_found(tmp_path: Path) -> None:
    shutil.copy(REPO / "models.yaml", tmp_path / "models.yaml")
    for name in CATALOG.names:
        folder = tmp_path / "models" / name
        folder.mkdir(parents=True)
        shutil.copy(REPO / "models" / name / "registration.json", folder)
    catalog = load_catalog(tmp_path / "models.yaml")
    stages = models.unregistered(catalog, list(catalog.entries))
    assert stages == ["models/digits/dvc.yaml:register", "models/breast-cancer/dvc.yaml:register"]
    record = json.loads((tmp_path / "models/digits/registration.json").read_text())
    local = tmp_path / "models/digits/registration.local.json"
    local.write_text(json.dumps({**record, "version": "1"}))
    assert models.unregistered(catalog, list(catalog.entries)) == [
        "models/breast-cancer/dvc.yaml:register"
    ]


def test_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert models.main(["names"]) == 0 and capsys.readouterr().out.split() == CATALOG.names
    assert models.main(["field", "breast-cancer", "trainer_image"]) == 0
    assert capsys.readouterr().out.strip() == "breast-cancer-trainer"
    assert models.main(["field", "digits", "colour"]) == 1
    assert "no field 'colour'" in capsys.readouterr().err
    assert models.main(["tag", "nope/v1.0.0"]) == 1
