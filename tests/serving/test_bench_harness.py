"""A short smoke run of `make bench-serving` (scripts/bench_serving.py) and its verdict logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import bench_serving
from scripts.bench_serving import LoadResult, Scenario, ServerResult
from scripts.serving_attacks import CASES

from .conftest import digits_rows


def test_a_short_run_measures_our_servers_and_reports_missing_peers(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serving.json"
    code = bench_serving.main(
        [
            "--model", str(model_dir / "model.onnx"),
            "--registration", str(model_dir / "registration.json"),
            "--test-split", str(tmp_path / "absent.npz"),
            "--servers",
            "ml-serving,ml-serving-v2,ml-serving-v2-binary,own-constant,bare-asgi,mlflow,kserve",
            "--peers-venv", str(tmp_path / "no-venv"),
            "--no-install",
            "--duration", "1",
            "--passes", "1",
            "--concurrency", "1,64",
            "--batch-concurrency", "2",
            "--batch-rows", "8",
            "--server-env", "INFERENCE_THREADS=1",
            "--attack-servers", "",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert document["settings"]["server_env"] == {"INFERENCE_THREADS": "1"}
    loads = {
        "ml-serving": {"c1", "c64", "batch8-c2"},
        "ml-serving-v2": {"c1", "c64", "batch8-c2"},
        "ml-serving-v2-binary": {"c64", "batch8-c2"},  # the main loads only
        "own-constant": {"c64"},  # a ceiling: the target load only
        "bare-asgi": {"c64"},
    }
    for name, expected in loads.items():
        server = document["servers"][name]
        assert server["available"], server["reason"]
        assert set(server["medians"]) == expected
        assert all(m["requests_per_s"] > 0 for m in server["medians"].values())
        assert server["cold_start_s"][0] < 30 and server["rss_mb"][0] > 10
        assert all(r["errors"] == 0 for runs in server["loads"].values() for r in runs)
    batch = document["servers"]["ml-serving"]["medians"]["batch8-c2"]
    assert batch["rows_per_s"] == pytest.approx(8 * batch["requests_per_s"])
    for peer in ("mlflow", "kserve"):
        assert not document["servers"][peer]["available"]
        assert "not installed" in document["servers"][peer]["reason"]
    targets = {c["target"] for c in document["targets"]}
    assert "64-row batches rows/s, binary tensors vs JSON (v2)" in targets
    assert "c=64 /predict share of the own-layer constant ceiling" in targets
    printed = capsys.readouterr().out
    assert "wrk -t1, INFERENCE_THREADS=1:" in printed
    assert "| kserve | - | not installed" in printed and "| ml-serving | c64 |" in printed
    assert out.with_suffix(".md").read_text().startswith("| server | load |")
    # where one 8-row request's time goes, in process: every stage measured, shares consistent
    costs = document["request_costs"]
    stages = costs["decode_us"], costs["onnxruntime_us"], costs["encode_us"]
    assert all(0 < us < 50_000 for us in stages)
    assert costs["onnxruntime_share"] == pytest.approx(costs["onnxruntime_us"] / sum(stages))
    assert "One 8-row /predict request in process (medians): decode " in printed
    assert costs["decode_two_threads_speedup"] > 0 and "from two threads at once: " in printed


def result(name: str, rps: float, p99: float, rows_per_s: float = 0.0) -> ServerResult:
    server = ServerResult(name, name, cold_start_s=[0.3], rss_mb=[80.0])
    server.loads["c64"] = [LoadResult(rps, rps, 1.0, p99, 0)]
    server.loads["batch64-c16"] = [LoadResult(rows_per_s / 64, rows_per_s, 1.0, p99, 0)]
    return server


def test_targets_compare_against_the_fastest_peer_and_the_ceiling() -> None:
    results = {
        "ml-serving": result("ml-serving", 20_000, 2.0, 400_000),
        "ml-serving-v2": result("ml-serving-v2", 16_000, 2.0, 250_000),
        "ml-serving-v2-binary": result("ml-serving-v2-binary", 6_000, 2.0, 400_000),
        "own-constant": result("own-constant", 40_000, 1.0),
        "mlflow": result("mlflow", 1_000, 50.0, 10_000),
        "kserve": result("kserve", 2_000, 20.0, 50_000),
    }
    # three passes, paired: ours over the fastest peer of the same pass
    results["ml-serving"].loads["c64"] += [LoadResult(18_000, 18_000, 1.0, 2.0, 0)] * 2
    results["kserve"].loads["c64"] += [
        LoadResult(1_500, 1_500, 1.0, 20.0, 0),
        LoadResult(3_000, 3_000, 1.0, 20.0, 0),
    ]
    results["mlflow"].loads["c64"] += [
        LoadResult(2_000, 2_000, 1.0, 50.0, 0),
        LoadResult(1_000, 1_000, 1.0, 50.0, 0),
    ]
    checks = {c["target"]: c for c in bench_serving.evaluate_targets(results, "batch64-c16")}
    speed = checks["c=64 /predict req/s vs fastest peer (kserve)"]
    # passes: 20000/2000, 18000/2000 (mlflow was the faster peer), 18000/3000
    assert speed["measured"] == 9.0 and speed["passed"] and speed["spread"] == "6.00-10.00"
    assert checks["c=64 v2 infer req/s vs fastest peer (kserve)"]["measured"] == 8.0
    assert checks["c=64 p99 vs kserve's"]["measured"] == 0.1
    assert checks["64-row batches rows/s, JSON, vs fastest peer (kserve)"]["measured"] == 8.0
    binary = checks["64-row batches rows/s, binary tensors vs JSON (v2)"]
    assert binary["measured"] == pytest.approx(1.6) and binary["passed"]
    own = checks["c=64 /predict share of the own-layer constant ceiling"]
    assert own["measured"] == pytest.approx(0.5) and own["passed"]
    assert all(c["passed"] for c in checks.values())
    results["ml-serving"].rss_mb = [250.0]
    checks = {c["target"]: c for c in bench_serving.evaluate_targets(results, "batch64-c16")}
    assert not checks["resident memory under load (MB)"]["passed"]
    table = bench_serving.render_table(results, [Scenario("c64", 64, 1)])
    assert "| kserve | c64 | 2000 | 1500-3000 | 2000 | 1.00 | 20.00 | 0 | 80 | 0.30 |" in table
    assert "| ml-serving | c64 | 18000 | 18000-20000 |" in table


def test_bad_arguments_and_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench_serving.main(["--servers", "ml-serving,triton"])
    assert bench_serving.main(["--model", str(tmp_path / "none.onnx")]) == 2


def test_server_env_reaches_this_service_only_and_is_checked(tmp_path: Path) -> None:
    env = {"INFERENCE_THREADS": "1", "PORT": "1"}  # PORT cannot be overridden: the harness owns it
    by_name = {
        s.name: s for s in bench_serving.specs(tmp_path / "m.onnx", 8123, Path("python"), None, env)
    }
    for ours in bench_serving.OURS:
        assert by_name[ours].env["INFERENCE_THREADS"] == "1"
        assert by_name[ours].env["PORT"] == "8123"
    for other in ("own-constant", "nginx-constant", "bare-asgi", "mlflow", "mlserver", "kserve"):
        assert "INFERENCE_THREADS" not in by_name[other].env
    args = bench_serving.parse_args(["--server-env", "A=1", "--server-env", "B=x=y"])
    assert args.server_env == {"A": "1", "B": "x=y"}
    for bad in ("NOVALUE", "=1", " A=1"):
        with pytest.raises(SystemExit):
            bench_serving.parse_args(["--server-env", bad])


def test_the_attack_and_drain_sections_measure_the_real_server(
    model_dir: Path, tmp_path: Path
) -> None:
    chosen = [c for c in CASES if c.name in ("one-byte", "missing-host", "huge-shape")]
    run = bench_serving.run_attacks(model_dir / "model.onnx", 64, "builtin", tmp_path, chosen)
    assert [o.case for o in run.outcomes] == ["one-byte", "huge-shape", "missing-host"]
    assert all(o.strict for o in run.outcomes), run.outcomes
    assert run.health_probes > 0 and run.health_failures == 0
    assert 10 < run.rss_start_mb <= run.rss_peak_mb
    drain = bench_serving.measure_drain(
        model_dir / "model.onnx", "builtin", bench_serving.instances(digits_rows(1)), tmp_path
    )
    assert drain["requests"] > 0 and drain["read"] == 0 and drain["exit_code"] == 0
    table = bench_serving.render_attacks({"builtin": run}, {"builtin": drain})
    assert "| builtin | 3/3 | none |" in table and "| uvicorn | - |" in table
    checks = {c["target"]: c for c in bench_serving.attack_checks(run)}
    assert checks["under attack: connections held past their timeout + 1 s"]["measured"] == 0


def test_nginx_is_reported_when_it_cannot_be_unpacked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_serving, "NGINX_DIR", tmp_path / "nginx")
    binary, reason = bench_serving.ensure_nginx(install=False)
    assert binary is None and "not unpacked" in reason
    bench_serving.write_nginx_config(tmp_path / "conf", 8123)
    config = (tmp_path / "conf" / "nginx.conf").read_text()
    assert "listen 127.0.0.1:8123;" in config and "return 200 '{\"predictions\":[0]}'" in config
