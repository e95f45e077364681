"""Alert rules through Prometheus' own tool: `promtool check rules` on every PrometheusRule and
`promtool test rules` on the unit tests in tests/manifests/alerts/ (each names `rules.yaml`, the
rules of the rendered PrometheusRule it tests, written next to it in a scratch directory)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import yaml

from scripts.manifests.vocabulary import REPO_ROOT, Finding, Obj
from scripts.manifests.workloads import name_of

ALERT_TESTS = REPO_ROOT / "tests" / "manifests" / "alerts"


def promtool_binary() -> str | None:
    return shutil.which("promtool")


def rules_text(rule: Obj) -> str:
    """A PrometheusRule's spec is exactly a Prometheus rule file (`groups:`)."""
    return yaml.safe_dump({"groups": (rule.get("spec") or {}).get("groups") or []}, sort_keys=False)


def _run(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def check_rules(objects: list[Obj], tests_dir: Path = ALERT_TESTS) -> Iterator[Finding]:
    """promtool check + test per PrometheusRule; a missing promtool is a failure, not a skip."""
    rules = [o for o in objects if o.get("kind") == "PrometheusRule"]
    if not rules:
        return
    promtool = promtool_binary()
    if promtool is None:
        yield Finding(
            "alerts",
            rules[0],
            "spec",
            "promtool not found: run scripts/bootstrap.sh (Debian package `prometheus`)",
        )
        return
    tests = sorted(tests_dir.glob("*.test.yaml")) if tests_dir.is_dir() else []
    for rule in rules:
        mine = tuple(t for t in tests if _tests_rule(t, name_of(rule)))
        for field, message in _promtool(promtool, rules_text(rule), mine):
            yield Finding("alerts", rule, field, message)
        if mine:
            yield from _untested_alerts(rule, list(mine))


_CACHE: dict[tuple[str, str, tuple[Path, ...]], list[tuple[str, str]]] = {}


def _promtool(promtool: str, text: str, tests: tuple[Path, ...]) -> list[tuple[str, str]]:
    """(field, message) problems of one rule file; cached, as every overlay renders the same."""
    key = (promtool, text, tests)
    if key in _CACHE:
        return _CACHE[key]
    out: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="promtool-") as tmp:
        work = Path(tmp)
        (work / "rules.yaml").write_text(text)
        code, log = _run([promtool, "check", "rules", "rules.yaml"], work)
        if code != 0:
            out.append(("spec.groups", f"promtool check rules: {log}"))
        elif not tests:
            out.append(
                ("spec.groups", "no promtool unit test (tests/manifests/alerts) for this rule")
            )
        for test in tests if code == 0 else ():
            shutil.copy(test, work / test.name)
            code, log = _run([promtool, "test", "rules", test.name], work)
            if code != 0:
                out.append(("spec.groups", f"promtool test rules {test.name}: {log}"))
    _CACHE[key] = out
    return out


def _tests_rule(test: Path, rule_name: str) -> bool:
    """A test file declares the PrometheusRule it covers in a `# tests: <suffix>` header line."""
    for line in test.read_text().splitlines()[:5]:
        if line.startswith("# tests:"):
            return rule_name.endswith(line.split(":", 1)[1].strip())
    return False


def _untested_alerts(rule: Obj, tests: list[Path]) -> Iterator[Finding]:
    """Every alert must be exercised by at least one alert_rule_test."""
    tested: set[str] = set()
    for test in tests:
        doc = yaml.safe_load(test.read_text()) or {}
        for case in doc.get("tests") or []:
            for art in (case or {}).get("alert_rule_test") or []:
                tested.add(str((art or {}).get("alertname")))
    for g, group in enumerate((rule.get("spec") or {}).get("groups") or []):
        for r, item in enumerate((group or {}).get("rules") or []):
            alert = (item or {}).get("alert")
            if alert and alert not in tested:
                yield Finding(
                    "alerts",
                    rule,
                    f"spec.groups[{g}].rules[{r}].alert",
                    f"{alert} has no promtool test",
                )
