"""The orchestrator's parts without Prometheus: process handling, config, load splitting, CLI
errors. (The live rehearsal is in test_rehearsal_live.py.)"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from ml.data import Split, save_split
from scripts.rehearsal import __main__ as cli
from scripts.rehearsal.orchestrator import (
    RehearsalOptions,
    LoadGenerator,
    ManagedProcess,
    RehearsalSetupError,
    ScrapeTarget,
    load_rows_from_split,
    free_port,
    pod_template_hash,
    prometheus_binary,
    prometheus_config,
    wait_until,
)


def test_prometheus_config_carries_the_pod_labels() -> None:
    targets = [
        ScrapeTarget("stable", 1001, {"namespace": "ns", "rollouts_pod_template_hash": "aaa"}),
        ScrapeTarget("canary", 1002, {"namespace": "ns", "rollouts_pod_template_hash": "bbb"}),
    ]
    config = json.loads(prometheus_config(targets, 1.0))
    assert config["global"]["scrape_interval"] == "1000ms"
    static = config["scrape_configs"][0]["static_configs"]
    assert static[0] == {
        "targets": ["127.0.0.1:1001"],
        "labels": {"namespace": "ns", "rollouts_pod_template_hash": "aaa"},
    }
    assert static[1]["targets"] == ["127.0.0.1:1002"]


def test_pod_template_hashes_differ_by_role_and_are_stable() -> None:
    stable = pod_template_hash("stable", "m.onnx", {})
    assert stable == pod_template_hash("stable", "m.onnx", {})
    assert stable != pod_template_hash("canary", "m.onnx", {})
    assert len(stable) == 10


@pytest.fixture
def split_file(tmp_path: Path) -> Path:
    """A model's test split as prepare writes it: 3 classes, 4 rows each, 5 features."""
    rows = np.arange(60, dtype=np.float32).reshape(12, 5)
    labels = np.array([2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1], dtype=np.int64)
    path = tmp_path / "split" / "test.npz"
    path.parent.mkdir()
    save_split(path, Split(rows, labels))
    return path


def test_the_load_is_the_models_test_split_interleaved_by_class(split_file: Path) -> None:
    rows = load_rows_from_split(split_file)
    assert len(rows) == 12 and len(rows[0]) == 5
    first_of = {0: 20.0, 1: 40.0, 2: 0.0}  # the first feature of each class's first row
    assert [rows[i][0] for i in range(3)] == [first_of[0], first_of[1], first_of[2]]


def test_a_missing_split_cannot_be_rehearsed(tmp_path: Path) -> None:
    with pytest.raises(RehearsalSetupError, match="missing .*the model's test split"):
        load_rows_from_split(tmp_path / "test.npz")


def test_the_cli_takes_the_models_paths_from_models_yaml(split_file: Path) -> None:
    args = cli.build_parser().parse_args(["--name", "breast-cancer", "--load", str(split_file)])
    cli.resolve_model(args)
    assert args.overlay == cli.REPO_ROOT / "apps/breast-cancer/overlays/staging"
    assert args.model == str(cli.REPO_ROOT / "models/breast-cancer/model.onnx")
    assert args.out == cli.REPO_ROOT / "reports/rehearsal/breast-cancer"
    assert cli.main(["--name", "nope"]) == 3


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_managed_process_stops_with_sigterm(tmp_path: Path) -> None:
    process = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log"
    )
    process.start()
    assert process.alive() and process.pid is not None
    assert process.stop(grace_seconds=5) == -15
    assert not process.alive()
    assert process.stop() == -15  # stopping twice is harmless


def test_managed_process_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    log = tmp_path / "log"
    process = ManagedProcess("stubborn", [sys.executable, "-c", code], log)
    process.start()
    wait_until(lambda: "ready" in log.read_text(), 10, "the child to ignore SIGTERM", process)
    assert process.stop(grace_seconds=0.2) == -9
    assert ManagedProcess("never", ["true"], log).stop() is None


def test_wait_until_reports_a_dead_process_with_its_log(tmp_path: Path) -> None:
    process = ManagedProcess(
        "crasher",
        [sys.executable, "-c", "import sys; print('bad config'); sys.exit(2)"],
        tmp_path / "log",
    )
    process.start()
    with pytest.raises(RehearsalSetupError, match="(?s)crasher exited .*bad config"):
        wait_until(lambda: False, 10, "readiness", process)


def test_wait_until_times_out() -> None:
    with pytest.raises(RehearsalSetupError, match="timed out after 0.1 s waiting for godot"):
        wait_until(lambda: False, 0.1, "godot")


def test_missing_prometheus_points_at_the_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REHEARSAL_PROMETHEUS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RehearsalSetupError, match="make bootstrap"):
        prometheus_binary()


class _Counter(BaseHTTPRequestHandler):
    counts: dict[int, int] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            port = int(self.headers["host"].rsplit(":", 1)[1])
            self.counts[port] = self.counts.get(port, 0) + 1
        status = 503 if self.path == "/fail" else 200
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def two_servers() -> Iterator[tuple[ThreadingHTTPServer, ThreadingHTTPServer]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Counter) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers[0], servers[1]
    for server in servers:
        server.shutdown()
        server.server_close()


def test_load_follows_the_weight(two_servers: tuple[ThreadingHTTPServer, ...]) -> None:
    stable, canary = (s.server_address[1] for s in two_servers)
    load = LoadGenerator(
        {"stable": f"http://127.0.0.1:{stable}/ok", "canary": f"http://127.0.0.1:{canary}/fail"},
        [[0.0] * 64],
        rps=200,
    )
    load.start()
    try:
        wait_until(lambda: load.stats["stable"].sent >= 40, 20, "stable traffic")
        assert load.stats["canary"].sent == 0  # weight 0: the canary gets nothing
        load.set_weight(50)
        wait_until(lambda: load.stats["canary"].sent >= 20, 20, "canary traffic")
        assert load.rate("canary") == load.rate("stable") == 100
        load.set_weight(100)
        assert load.rate("stable") == 0
    finally:
        load.stop()
    assert load.stats["canary"].failed == load.stats["canary"].sent  # 503s are counted
    assert load.stats["stable"].failed == 0
    assert _Counter.counts[canary] == load.stats["canary"].sent


def test_cli_exits_3_without_prometheus(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    split_file: Path,
) -> None:
    monkeypatch.delenv("REHEARSAL_PROMETHEUS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert cli.main(["--out", str(tmp_path), "--load", str(split_file)]) == 3
    assert "cannot rehearse: the `prometheus` binary was not found" in capsys.readouterr().err


def test_cli_exits_3_for_a_missing_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, split_file: Path
) -> None:
    argv = ["--model", str(tmp_path / "none.onnx"), "--out", str(tmp_path)]
    code = cli.main([*argv, "--load", str(split_file)])
    assert code == 3
    assert "does not exist: run `make pipeline` first" in capsys.readouterr().err


def test_cli_rejects_bad_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--time-factor", "0"]) == 3
    assert "must be > 0" in capsys.readouterr().err


def test_cli_maps_fault_options(split_file: Path) -> None:
    args = cli.build_parser().parse_args(
        ["--canary-error-rate", "0.1", "--canary-degrade", "shuffle", "--stable-latency-ms", "5"]
        + ["--load", str(split_file)]
    )
    cli.resolve_model(args)
    options = cli.options_from(args)
    assert options.canary_faults == {"FAULT_ERROR_RATE": "0.1", "FAULT_DEGRADE": "shuffle"}
    assert options.stable_faults == {"FAULT_LATENCY_MS": "5.0"}
    assert options.time_factor == 60 and options.manual_gates == "pass"


def test_cli_writes_reports_and_counts_repeats(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    split_file: Path,
) -> None:
    from rehearsal_fakes import ScriptedPrometheus, metric, template

    from scripts.rehearsal.analysis import FakeClock, vector
    from scripts.rehearsal.canary import CanaryRehearsal

    answers = iter([vector(0.999), vector(0.5)])
    calls: list[RehearsalOptions] = []

    def fake_run(options: RehearsalOptions, on_event: Any = None) -> tuple[Any, dict[str, Any]]:
        calls.append(options)
        clock = FakeClock()
        rollout = {
            "kind": "Rollout",
            "metadata": {"name": "r"},
            "spec": {
                "strategy": {
                    "canary": {"steps": [{"analysis": {"templates": [{"templateName": "t"}]}}]}
                }
            },
        }
        result = CanaryRehearsal(
            rollout,
            [template(metric(successCondition="result[0] >= 0.99"))],
            ScriptedPrometheus(clock, [next(answers)]),
            clock,
            on_event=lambda event: on_event(event, None),
        ).run()
        facts = {"total_seconds": 1.0, "setup_seconds": 0.5, "rollout_seconds": 0.5}
        return result, {**facts, "requests": {"stable": 1, "canary": 1}}

    monkeypatch.setattr(cli, "run_rehearsal", fake_run)
    argv = ["--repeat", "2", "--out", str(tmp_path), "--canary-latency-ms", "30"]
    code = cli.main([*argv, "--load", str(split_file)])
    assert code == 1  # the last run's verdict
    out = capsys.readouterr().out
    assert "run 2 of 2" in out and "verdicts over 2 runs" in out
    summary = json.loads((tmp_path / "rehearsal.json").read_text())
    assert summary["repeats"]["verdicts"] == {
        "Promoted": 1,
        "Aborted at step 0 (success-rate: Failed: failed (1) > failureLimit (0))": 1,
    }
    assert summary["exit_code"] == 1 and summary["metric"] == "success-rate"
    assert (tmp_path / "rehearsal.md").read_text().startswith("### Canary rehearsal: ❌ Aborted")
    assert "<testsuite" in (tmp_path / "rehearsal-junit.xml").read_text()
    assert (tmp_path / ".gitignore").read_text() == "*\n"
    assert calls[0].canary_faults == {"FAULT_LATENCY_MS": "30.0"}


def test_cli_reports_interrupts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    split_file: Path,
) -> None:
    def interrupted(options: RehearsalOptions, on_event: Any = None) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_rehearsal", interrupted)
    assert cli.main(["--out", str(tmp_path), "--load", str(split_file)]) == 130
    assert "interrupted; every process was stopped" in capsys.readouterr().err
