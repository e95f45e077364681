"""The performance regression gate: the comparison rule and a real (short) measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import perf_gate

BASE = {"predict_p50_ratio": 2.0, "predict_p99_ratio": 4.0, "pipeline_ratio": 1.5}


@pytest.mark.parametrize(
    ("measured", "failed"),
    [
        ({"predict_p50_ratio": 2.2, "predict_p99_ratio": 4.0, "pipeline_ratio": 1.5}, []),  # +10%
        (
            {"predict_p50_ratio": 2.21, "predict_p99_ratio": 4.0, "pipeline_ratio": 1.5},
            ["predict_p50_ratio"],
        ),
        ({"predict_p50_ratio": 1.0, "predict_p99_ratio": 2.0, "pipeline_ratio": 1.0}, []),  # faster
        (
            {"predict_p50_ratio": 2.0, "predict_p99_ratio": 4.0, "pipeline_ratio": 1.8},
            ["pipeline_ratio"],
        ),
    ],
)
def test_more_than_ten_percent_slower_fails(measured: dict[str, float], failed: list[str]) -> None:
    checks = perf_gate.compare(BASE, measured)
    assert [c.name for c in checks if not c.passed] == failed
    assert "REGRESSED" in perf_gate.table(checks, measured) if failed else True


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
        perf_gate.compare({"predict_p50_ratio": 1.0}, BASE)


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
    common = [
        "--model",
        str(pipeline_workspace / "models/model.onnx"),
        "--pipeline-json",
        str(bench),
    ]
    common += ["--baseline", str(baseline), "--passes", "2", "--requests", "100"]
    assert perf_gate.main([*common, "--update"]) == 0
    recorded = json.loads(baseline.read_text())
    assert recorded["pipeline_ratio"] == 2.0 and recorded["predict_p50_ms"] > 0
    recorded["pipeline_ratio"] = 1.0  # pretend the pipeline used to be twice as fast
    baseline.write_text(json.dumps(recorded))
    assert perf_gate.main(common) == 1
    assert "pipeline_ratio" in capsys.readouterr().err
    recorded["predict_p99_ratio"] /= 10  # and the service ten times faster: confirmed, then fails
    baseline.write_text(json.dumps(recorded))
    assert perf_gate.main(common) == 1
    captured = capsys.readouterr()
    assert "measuring the service again to confirm" in captured.out
    assert "predict_p99_ratio" in captured.err
