"""The performance regression gate: the comparison rule and a real (short) measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import perf_gate

BASE = {"m/predict_p50_ratio": 2.0, "m/predict_p99_ratio": 4.0, "pipeline_ratio": 1.5}


def measured_as(p50: float, p99: float, pipeline: float) -> dict[str, float]:
    return {"m/predict_p50_ratio": p50, "m/predict_p99_ratio": p99, "pipeline_ratio": pipeline}


@pytest.mark.parametrize(
    ("measured", "failed"),
    [
        (measured_as(2.2, 4.0, 1.5), []),  # +10%
        (measured_as(2.21, 4.0, 1.5), ["m/predict_p50_ratio"]),
        (measured_as(1.0, 2.0, 1.0), []),  # faster
        (measured_as(2.0, 4.0, 1.8), ["pipeline_ratio"]),
    ],
)
def test_more_than_ten_percent_slower_fails(measured: dict[str, float], failed: list[str]) -> None:
    checks = perf_gate.compare(BASE, measured)
    assert [c.name for c in checks if not c.passed] == failed
    assert "REGRESSED" in perf_gate.table(checks, measured) if failed else True


def test_a_model_without_a_baseline_is_measured_not_gated() -> None:
    measured = {**measured_as(2.0, 4.0, 1.5), "new/predict_p50_ratio": 99.0}
    measured["new/predict_p99_ratio"] = 99.0
    checks = perf_gate.compare(BASE, measured)
    assert all(c.passed for c in checks) and len(checks) == 3
    assert perf_gate.ungated(BASE, measured) == ["new"]


def test_a_confirming_measurement_keeps_each_percentile_at_its_better_run() -> None:
    first = perf_gate.with_ratios(
        {"predict_p50_ms": 0.6, "predict_p99_ms": 1.0, "health_p50_ms": 0.3}
    )
    second = {"predict_p50_ms": 0.5, "predict_p99_ms": 1.2, "health_p50_ms": 0.25}
    merged = perf_gate.confirmed(first, perf_gate.with_ratios(second))
    assert merged["predict_p50_ms"] == 0.5 and merged["predict_p99_ms"] == 1.0
    assert merged["predict_p50_ratio"] == pytest.approx(0.5 / 0.25)
    assert merged["predict_p99_ratio"] == pytest.approx(1.0 / 0.25)


def test_missing_metric_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no baseline or measurement"):
        perf_gate.compare({"m/predict_p50_ratio": 1.0}, BASE)


def test_missing_pipeline_bench_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="make bench-pipeline"):
        perf_gate.pipeline_numbers(tmp_path / "nope.json")


@pytest.mark.e2e
def test_gate_measures_the_real_service(
    pipeline_workspace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = tmp_path / "pipeline.json"
    rows = [
        {"case": "full repro", "seconds": 40.0},
        {"case": "peer: same commands, no DVC", "seconds": 20.0},
    ]
    bench.write_text(json.dumps({"rows": rows}))
    baseline = tmp_path / "baseline.json"
    common = ["--root", str(pipeline_workspace), "--models", "digits breast-cancer"]
    common += ["--pipeline-json", str(bench)]
    common += ["--baseline", str(baseline), "--passes", "2", "--requests", "100"]
    assert perf_gate.main([*common, "--update"]) == 0
    recorded = json.loads(baseline.read_text())
    assert recorded["pipeline_ratio"] == 2.0 and recorded["digits/predict_p50_ms"] > 0
    assert recorded["breast-cancer/predict_p99_ratio"] > 0  # each model of the list
    recorded["pipeline_ratio"] = 1.0  # pretend the pipeline used to be twice as fast
    baseline.write_text(json.dumps(recorded))
    assert perf_gate.main(common) == 1
    assert "pipeline_ratio" in capsys.readouterr().err
    recorded["breast-cancer/predict_p99_ratio"] /= 10  # ten times faster: confirmed, then fails
    baseline.write_text(json.dumps(recorded))
    assert perf_gate.main(common) == 1
    captured = capsys.readouterr()
    assert "measuring the service again to confirm" in captured.out
    assert "breast-cancer/predict_p99_ratio" in captured.err
