"""The command line: exit codes, the table, JSON and JUnit outputs, render, diff and bench."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scripts.manifests import cli, metric_refs, render_overlay
from scripts.manifests.vocabulary import REPO_ROOT

STAGING = str(REPO_ROOT / "apps/digits-classifier/overlays/staging")
BROKEN = str(REPO_ROOT / "tests/manifests/corpus/privileged-pod")


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics") / "metrics.txt"
    path.write_text(metric_refs.contract_exposition())
    return path


def test_validate_ok_writes_json_and_junit(
    tmp_path: Path, exposition: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "validate",
            STAGING,
            "--metrics-file",
            str(exposition),
            "--json",
            str(tmp_path / "r.json"),
            "--junit",
            str(tmp_path / "r.xml"),
            "--no-promtool",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "OK: 1 target(s)" in out
    data = json.loads((tmp_path / "r.json").read_text())
    # every object of the render is counted (model service, drift monitoring, retraining)
    assert data["ok"] is True
    assert data["targets"][0]["objects"] == len(render_overlay(STAGING)) > 30
    suites = ET.parse(tmp_path / "r.xml").getroot()
    assert suites.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]


def test_validate_broken_exits_1_with_problem_in_all_outputs(
    tmp_path: Path, exposition: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "validate",
            BROKEN,
            "--metrics-file",
            str(exposition),
            "--json",
            str(tmp_path / "r.json"),
            "--junit",
            str(tmp_path / "r.xml"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1 and "FAILED" in out and "securityContext.privileged" in out
    problems = json.loads((tmp_path / "r.json").read_text())["targets"][0]["problems"]
    assert problems[0]["object"] == "Deployment/demo"
    failure = ET.parse(tmp_path / "r.xml").getroot().find(".//failure")
    assert failure is not None and "privileged" in (failure.text or "")


def test_require_live_refuses_a_file(exposition: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", STAGING, "--metrics-file", str(exposition), "--require-live"]) == 1
    assert "--require-live" in capsys.readouterr().err


def test_auto_metrics_source_falls_back_to_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metric_refs, "service_available", lambda root=REPO_ROOT: False)
    args = cli.build_parser().parse_args(["validate"])
    names, source, live = cli.resolve_metrics(args)
    assert "inference_requests_total" in names and not live and "NOT live" in source


def test_metrics_url_is_fetched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metric_refs, "fetch_exposition", lambda url: "# TYPE x_total counter\n")
    args = cli.build_parser().parse_args(
        ["validate", "--metrics-url", "http://127.0.0.1:1/metrics"]
    )
    names, source, live = cli.resolve_metrics(args)
    assert "x_total" in names and live and "http://127.0.0.1:1/metrics" in source


def test_render_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", STAGING]) == 0
    assert "kind: Rollout" in capsys.readouterr().out
    assert cli.main(["render", STAGING, "-o", str(tmp_path)]) == 0
    written = list(tmp_path.glob("*.yaml"))
    assert len(written) == 1 and "kind: Rollout" in written[0].read_text()
    assert (
        cli.main(["render", str(REPO_ROOT / "tests/manifests/corpus/broken-kustomization-yaml")])
        == 1
    )


def test_diff_same_ref_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "diff",
            "HEAD",
            "HEAD",
            "--json",
            str(tmp_path / "d.json"),
            "--patch",
            str(tmp_path / "d.patch"),
        ]
    )
    assert code == 0
    assert {d["status"] for d in json.loads((tmp_path / "d.json").read_text())} == {"unchanged"}
    assert (tmp_path / "d.patch").read_text() == ""


def test_bench_reports_per_target_times(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", STAGING, "--repeat", "2", "--kubectl"]) == 0
    out = capsys.readouterr().out
    assert (
        "apps/digits-classifier/overlays/staging" in out
        and "target <= 10 s for a cold pass: met" in out
    )
    assert "kubectl kustomize render total" in out
