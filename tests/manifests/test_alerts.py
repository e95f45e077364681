"""Alert rules pass `promtool check rules` and their unit tests; the tests are tight enough that
moving a threshold breaks them; every alert has a severity P0-P3 and a runbook."""

from __future__ import annotations

import copy
from pathlib import Path

from scripts.manifests import alerts
from scripts.manifests.vocabulary import Obj
from tests.manifests.conftest import only

TARGET = "apps/digits-classifier/overlays/staging"


def _rule(rendered: dict[str, list[Obj]]) -> Obj:
    return only(rendered[TARGET], "PrometheusRule")


def test_rules_check_and_unit_tests_pass(rendered: dict[str, list[Obj]]) -> None:
    assert (
        alerts.promtool_binary() is not None
    ), "promtool missing: scripts/bootstrap.sh installs it"
    assert list(alerts.check_rules([_rule(rendered)])) == []


def test_moved_threshold_fails_the_unit_tests(rendered: dict[str, list[Obj]]) -> None:
    rule = copy.deepcopy(_rule(rendered))
    expr = rule["spec"]["groups"][0]["rules"][1]["expr"]
    rule["spec"]["groups"][0]["rules"][1]["expr"] = expr.replace("0.05", "0.052")
    findings = list(alerts.check_rules([rule]))
    assert findings and "promtool test rules" in findings[0].message


def test_broken_rule_fails_promtool_check(rendered: dict[str, list[Obj]]) -> None:
    rule = copy.deepcopy(_rule(rendered))
    rule["spec"]["groups"][0]["rules"][0]["expr"] = "sum(rate(x[5m]) by"
    findings = list(alerts.check_rules([rule]))
    assert findings and "promtool check rules" in findings[0].message


def test_untested_alert_and_missing_tests_are_reported(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    rule = copy.deepcopy(_rule(rendered))
    rule["spec"]["groups"][0]["rules"].append({"alert": "Untested", "expr": "vector(1)"})
    messages = [f.message for f in alerts.check_rules([rule])]
    assert "Untested has no promtool test" in messages
    no_tests = [f.message for f in alerts.check_rules([_rule(rendered)], tests_dir=tmp_path)]
    assert any("no promtool unit test" in m for m in no_tests)


def test_every_alert_has_severity_and_runbook(rendered: dict[str, list[Obj]]) -> None:
    rules = [r for g in _rule(rendered)["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert {r["labels"]["severity"] for r in rules} == {"P0", "P1", "P2", "P3"}
    assert all(r["annotations"]["runbook_url"].startswith("https://") for r in rules)
    names = {r["alert"] for r in rules}
    assert {"ModelServiceNoReadyReplicas", "ModelServiceErrorRateCritical"} <= names
