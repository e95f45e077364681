"""`make seed-sweep`: real training over seeds on fast params; a bad override stops it, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import seed_sweep
from tests.unit.conftest import model_workspace


def sweep_args(tmp_path: Path, model: str = "digits", **overrides: object) -> list[str]:
    """A temporary repository holding the model (its params overridden); the sweep's options."""
    model_workspace(tmp_path, model, **overrides)
    return ["--catalog", str(tmp_path / "models.yaml"), "--model", model]


def test_sweep_trains_each_seed_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep.json"
    argv = [*sweep_args(tmp_path, train__epochs=5), "--seeds", "3,3,7", "--set", "train.epochs=2"]
    assert seed_sweep.main([*argv, "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    seeds = document["seeds"]
    assert [s["seed"] for s in seeds] == [3, 3, 7]
    assert all(s["epochs_run"] == 2 for s in seeds)  # the --set override won over the file
    assert seeds[0]["test_accuracy"] == seeds[1]["test_accuracy"]  # a seed is reproducible
    scores = [s["test_accuracy"] for s in seeds]
    assert document["min"] == min(scores) and document["mean"] == pytest.approx(sum(scores) / 3)
    assert all(0.1 < score <= 1.0 for score in scores)
    assert all(0.9 < s["logistic_regression"] <= 1.0 and s["majority"] < 0.2 for s in seeds)
    printed = capsys.readouterr().out
    assert f"min {min(scores):.3f}" in printed and "(gate min_accuracy 0.95)" in printed
    assert "logistic regression min" in printed


def test_a_binary_tabular_model_sweeps_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_args(tmp_path, "breast-cancer", train__epochs=3)
    assert seed_sweep.main([*argv, "--seeds", "0"]) == 0
    assert "breast-cancer: model {'family': 'mlp'" in capsys.readouterr().out


def test_a_model_variant_is_one_override(tmp_path: Path) -> None:
    argv = sweep_args(tmp_path)
    raw = {"model": {"channels": [16, 32]}, "train": {}}
    seed_sweep.override(raw, "model.channels=[8, 16]")
    seed_sweep.override(raw, "train.learning_rate=0.01")
    assert raw == {"model": {"channels": [8, 16]}, "train": {"learning_rate": 0.01}}
    args = seed_sweep.parse_args([*argv, "--set", "model.channels=[4]"])
    params, folder = seed_sweep.load(args)
    assert params.model.channels == [4] and folder == tmp_path / "models" / "digits"


@pytest.mark.parametrize(
    ("assignment", "reason"),
    [
        ("model.chanels=[8]", "chanels: unknown key"),
        ("model.channels=[]", "model.channels"),
        ("model.dropout=2", "model.dropout"),
        ("train.epochs", "expected section.key=value"),
        ("nosuch.key=1", "params has no section 'nosuch'"),
        ("seed.x=1", "params has no section 'seed'"),
        ("model.channels=[8, 16", "value is not YAML"),
    ],
)
def test_bad_override_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], assignment: str, reason: str
) -> None:
    argv = sweep_args(tmp_path)
    params = tmp_path / "models" / "digits" / "params.yaml"
    before = params.read_text()
    assert seed_sweep.main([*argv, "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seed-sweep: error:") and reason in err
    assert params.read_text() == before  # the file is never edited


def test_bad_data_source_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_args(tmp_path, data__source="missing.csv")
    assert seed_sweep.main(argv) == 2
    assert "missing.csv: data.source file not found" in capsys.readouterr().err
    header = "label," + ",".join(f"p{i}" for i in range(64))
    rows = [f"{label}," + ",".join(["0"] * 64) for label in (0, 1, 2)]
    (tmp_path / "models/digits/tiny.csv").write_text("\n".join([header, *rows]) + "\n")
    assert seed_sweep.main([*argv, "--set", "data.source=tiny.csv"]) == 2
    assert "tiny.csv: only 3 rows; need at least 10" in capsys.readouterr().err


def test_unreadable_params_and_bad_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = sweep_args(tmp_path)
    params = tmp_path / "models" / "digits" / "params.yaml"
    params.unlink()
    assert seed_sweep.main(argv) == 2
    assert "params.yaml: cannot read params file" in capsys.readouterr().err
    params.write_text("- 1\n")
    assert seed_sweep.main(argv) == 2
    assert "top level must be a mapping of sections, got list" in capsys.readouterr().err
    assert seed_sweep.main([*argv[:2], "--model", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        seed_sweep.main(["--seeds", "1,x"])
    assert (
        exit_info.value.code == 2 and "expected comma-separated integers" in capsys.readouterr().err
    )
