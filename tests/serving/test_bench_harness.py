"""A short smoke run of `make bench-serving` (scripts/bench_serving.py) and its verdict logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import bench_serving
from scripts.bench_serving import LoadResult, Scenario, ServerResult


def test_a_short_run_measures_our_servers_and_reports_missing_peers(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serving.json"
    code = bench_serving.main(
        [
            "--model", str(model_dir / "model.onnx"),
            "--registration", str(model_dir / "registration.json"),
            "--test-split", str(tmp_path / "absent.npz"),
            "--servers", "ml-serving,ml-serving-v2,bare-asgi,mlflow,kserve",
            "--peers-venv", str(tmp_path / "no-venv"),
            "--no-install",
            "--duration", "1",
            "--passes", "1",
            "--concurrency", "1,4",
            "--batch-concurrency", "2",
            "--batch-rows", "8",
            "--server-env", "INFERENCE_THREADS=1",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert document["settings"]["server_env"] == {"INFERENCE_THREADS": "1"}
    for name in ("ml-serving", "ml-serving-v2", "bare-asgi"):
        server = document["servers"][name]
        assert server["available"], server["reason"]
        assert set(server["medians"]) == {"c1", "c4", "batch8-c2"}
        assert all(m["requests_per_s"] > 0 for m in server["medians"].values())
        assert server["cold_start_s"][0] < 30 and server["rss_mb"][0] > 10
        assert all(r["errors"] == 0 for runs in server["loads"].values() for r in runs)
    batch = document["servers"]["ml-serving"]["medians"]["batch8-c2"]
    assert batch["rows_per_s"] == pytest.approx(8 * batch["requests_per_s"])
    for peer in ("mlflow", "kserve"):
        assert not document["servers"][peer]["available"]
        assert "not installed" in document["servers"][peer]["reason"]
    printed = capsys.readouterr().out
    assert "wrk -t1, INFERENCE_THREADS=1:" in printed
    assert "| kserve | - | not installed" in printed and "| ml-serving | c4 |" in printed
    assert out.with_suffix(".md").read_text().startswith("| server | load |")


def result(name: str, rps: float, p99: float, rows_per_s: float = 0.0) -> ServerResult:
    server = ServerResult(name, name, cold_start_s=[0.3], rss_mb=[80.0])
    server.loads["c64"] = [LoadResult(rps, rps, 1.0, p99, 0)]
    server.loads["batch64-c16"] = [LoadResult(rows_per_s / 64, rows_per_s, 1.0, p99, 0)]
    return server


def test_targets_compare_against_the_fastest_peer_and_the_ceiling() -> None:
    results = {
        "ml-serving": result("ml-serving", 20_000, 2.0, 400_000),
        "bare-asgi": result("bare-asgi", 30_000, 1.0),
        "mlflow": result("mlflow", 1_000, 50.0, 10_000),
        "kserve": result("kserve", 2_000, 20.0, 50_000),
    }
    checks = {c["target"]: c for c in bench_serving.evaluate_targets(results, "batch64-c16")}
    speed = checks["c=64 req/s vs fastest peer (kserve)"]
    assert speed["measured"] == 10.0 and speed["passed"]
    assert checks["c=64 p99 vs kserve's"]["measured"] == 0.1
    assert checks["64-row batches rows/s vs fastest peer"]["measured"] == 8.0
    assert checks["c=64 req/s share of bare-ASGI ceiling"]["measured"] == pytest.approx(0.667)
    assert all(c["passed"] for c in checks.values())
    results["ml-serving"].rss_mb = [250.0]
    checks = {c["target"]: c for c in bench_serving.evaluate_targets(results, "batch64-c16")}
    assert not checks["resident memory (MB)"]["passed"]
    table = bench_serving.render_table(results, [Scenario("c64", 64, 1)])
    assert "| kserve | c64 | 2000 | 2000 | 1.00 | 20.00 | 0 | 80 | 0.30 |" in table


def test_bad_arguments_and_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench_serving.main(["--servers", "ml-serving,triton"])
    assert bench_serving.main(["--model", str(tmp_path / "none.onnx")]) == 2


def test_server_env_reaches_this_service_only_and_is_checked(tmp_path: Path) -> None:
    env = {"INFERENCE_THREADS": "1", "PORT": "1"}  # PORT cannot be overridden: the harness owns it
    by_name = {
        s.name: s for s in bench_serving.specs(tmp_path / "m.onnx", 8123, Path("python"), None, env)
    }
    for ours in ("ml-serving", "ml-serving-v2", "ml-serving-uvicorn"):
        assert by_name[ours].env["INFERENCE_THREADS"] == "1"
        assert by_name[ours].env["PORT"] == "8123"
    for other in ("bare-asgi", "mlflow", "mlserver", "kserve"):
        assert "INFERENCE_THREADS" not in by_name[other].env
    args = bench_serving.parse_args(["--server-env", "A=1", "--server-env", "B=x=y"])
    assert args.server_env == {"A": "1", "B": "x=y"}
    for bad in ("NOVALUE", "=1", " A=1"):
        with pytest.raises(SystemExit):
            bench_serving.parse_args(["--server-env", bad])
