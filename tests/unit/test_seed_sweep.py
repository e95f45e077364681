"""`make seed-sweep`: real training over seeds on fast params; a bad override stops it, named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import seed_sweep
from tests.unit.conftest import write_params


def test_sweep_trains_each_seed_and_writes_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, train__epochs=5)
    out = tmp_path / "sweep.json"
    argv = ["--params", str(params), "--seeds", "3,3,7", "--set", "train.epochs=2"]
    assert seed_sweep.main([*argv, "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    seeds = document["seeds"]
    assert [s["seed"] for s in seeds] == [3, 3, 7]
    assert all(s["epochs_run"] == 2 for s in seeds)  # the --set override won over the file
    assert seeds[0]["test_accuracy"] == seeds[1]["test_accuracy"]  # a seed is reproducible
    scores = [s["test_accuracy"] for s in seeds]
    assert document["min"] == min(scores) and document["mean"] == pytest.approx(sum(scores) / 3)
    assert all(0.1 < score <= 1.0 for score in scores)
    printed = capsys.readouterr().out
    assert f"min {min(scores):.3f}" in printed and "(gate min_accuracy 0.95)" in printed


def test_a_model_variant_is_one_override(tmp_path: Path) -> None:
    params = write_params(tmp_path)
    raw = {"model": {"channels": [16, 32]}, "train": {}}
    seed_sweep.override(raw, "model.channels=[8, 16]")
    seed_sweep.override(raw, "train.learning_rate=0.01")
    assert raw == {"model": {"channels": [8, 16]}, "train": {"learning_rate": 0.01}}
    args = seed_sweep.parse_args(["--params", str(params), "--set", "model.channels=[4]"])
    assert seed_sweep.load(args).model.channels == [4]


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
    params = write_params(tmp_path)
    before = params.read_text()
    assert seed_sweep.main(["--params", str(params), "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seed-sweep: error:") and reason in err
    assert params.read_text() == before  # the file is never edited


def test_bad_data_source_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = write_params(tmp_path, data__source="missing.csv")
    assert seed_sweep.main(["--params", str(params)]) == 2
    assert "missing.csv: data.source file not found" in capsys.readouterr().err
    header = "label," + ",".join(f"p{i}" for i in range(64))
    rows = [f"{label}," + ",".join(["0"] * 64) for label in (0, 1, 2)]
    (tmp_path / "tiny.csv").write_text("\n".join([header, *rows]) + "\n")
    assert seed_sweep.main(["--params", str(params), "--set", "data.source=tiny.csv"]) == 2
    assert "tiny.csv: only 3 rows; need at least 10" in capsys.readouterr().err


def test_unreadable_params_and_bad_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert seed_sweep.main(["--params", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read params file" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert seed_sweep.main(["--params", str(tmp_path / "list.yaml")]) == 2
    assert "top level must be a mapping of sections, got list" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        seed_sweep.main(["--seeds", "1,x"])
    assert (
        exit_info.value.code == 2 and "expected comma-separated integers" in capsys.readouterr().err
    )
