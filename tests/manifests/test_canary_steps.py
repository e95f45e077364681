"""`make manifests` and the canary rehearsal read a Rollout's canary steps through one reader
(`scripts.rehearsal.canary.read_steps`): every rendered Rollout gives both the same steps."""

from __future__ import annotations

import pytest

from scripts.manifests.analysis import analysis_refs, check_steps
from scripts.manifests.render import discover_targets, render_overlay
from scripts.manifests.vocabulary import REPO_ROOT, Obj
from scripts.rehearsal.canary import parse_steps, read_steps


def _rollouts() -> list[tuple[str, Obj]]:
    found = []
    for target in discover_targets():
        for obj in render_overlay(target):
            if obj.get("kind") == "Rollout":
                found.append((target.relative_to(REPO_ROOT).as_posix(), obj))
    return found


ROLLOUTS = _rollouts()


def test_every_app_overlay_has_a_rollout() -> None:
    assert len(ROLLOUTS) >= 6


@pytest.mark.parametrize(("target", "rollout"), ROLLOUTS, ids=[t for t, _ in ROLLOUTS])
def test_manifests_and_rehearsal_see_the_same_steps(target: str, rollout: Obj) -> None:
    rehearsed = parse_steps(rollout)
    assert [(s.index, s.kind, s.body) for s in rehearsed] == [
        (s.index, s.kind, s.body) for s in read_steps(rollout)
    ]
    assert list(check_steps([rollout])) == []
    inline = [r for r in analysis_refs(rollout) if r.field != "spec.strategy.canary.analysis"]
    analysis_steps = [s for s in rehearsed if s.kind == "analysis"]
    assert analysis_steps, f"{target}: no analysis step"
    assert [r.field for r in inline] == [f"{s.field}.analysis" for s in analysis_steps]
    for ref, step in zip(inline, analysis_steps):
        assert [name for name, _ in ref.templates] == [
            t["templateName"] for t in step.body["templates"]
        ]
        assert ref.args == step.body.get("args", [])


def _rollout(*steps: object) -> Obj:
    return {"kind": "Rollout", "spec": {"strategy": {"canary": {"steps": list(steps)}}}}


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ({"setWeight": 20, "pause": {}}, "exactly one step kind"),
        ({"analysis": {"templates": [{"templateName": "t"}]}, "setWeight": 5}, "exactly one"),
        ({"setWeight": 101}, "setWeight must be an int in 0..100"),
        ({"pause": {"duration": "5x"}}, "invalid pause duration"),
        ({"pause": 30}, "pause must be a mapping"),
        ({"analysis": {"templates": []}}, "analysis step without templates"),
    ],
)
def test_a_step_the_rehearsal_refuses_is_a_manifests_finding(step: object, problem: str) -> None:
    rollout = _rollout({"setWeight": 10}, step)
    (finding,) = check_steps([rollout])
    assert finding.field == "spec.strategy.canary.steps[1]" and problem in finding.message
    # neither tool reads an analysis out of a step the controller refuses
    assert analysis_refs(rollout) == []
    with pytest.raises(ValueError, match=problem):
        parse_steps(rollout)
