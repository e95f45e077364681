"""What a rehearsal leaves behind: markdown for the merge-request report, JUnit XML for CI, and the
plain-text timeline lines the CLI prints."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from scripts.rehearsal.analysis import Phase
from scripts.rehearsal.canary import Event, Outcome, RehearsalResult

STAND_IN_NOTE = (
    "Local stand-in for the Argo Rollouts controller (scripts/rehearsal), reproducing its analysis "
    "semantics; Prometheus and the model service are real."
)
_ICONS = {
    Outcome.PROMOTED: "✅",
    Outcome.ABORTED: "❌",
    Outcome.PAUSED: "⏸️",
    Outcome.INVALID: "⛔",
}


def format_event(event: Event) -> str:
    step = "-" if event.step is None else str(event.step)
    return f"[{event.at:7.2f}s] step {step:>2} weight {event.weight:>3}%  {event.text}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(result: RehearsalResult, title: str = "Canary rehearsal") -> str:
    verdict = result.verdict
    lines = [
        f"### {title}: {_ICONS[verdict.outcome]} {verdict.headline()}",
        "",
        f"_{STAND_IN_NOTE} Durations scaled by 1/{result.time_factor:g} "
        f"(5m -> {300 / result.time_factor:g} s); steps numbered from 0 as in the controller._",
        "",
        "| | |",
        "| --- | --- |",
        f"| verdict | **{_cell(verdict.headline())}** (exit code {verdict.exit_code}) |",
        f"| steps | {_cell(' · '.join(f'{i}: {s}' for i, s in enumerate(result.steps)))} |",
        f"| duration | {result.duration:.1f} s |",
        "",
        "#### Analysis runs",
        "",
        "| run | templates | phase | message |",
        "| --- | --- | --- | --- |",
    ]
    for record in result.runs:
        lines.append(
            f"| {record.label} | {', '.join(record.templates)} | {record.run.phase} | "
            f"{_cell(record.run.message)} |"
        )
    lines += [
        "",
        "#### Measurements",
        "",
        "| t (s) | step | weight | run | metric | value | phase |",
        "| ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for event in result.events:
        if event.kind != "measurement":
            continue
        step = "" if event.step is None else str(event.step)
        lines.append(
            f"| {event.at:.1f} | {step} | {event.weight}% | {event.run} | {event.metric} | "
            f"{_cell(event.value or '-')} | {event.phase} |"
        )
    lines += ["", "<details><summary>Timeline</summary>", "", "```"]
    lines += [format_event(event) for event in result.events]
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def render_junit(result: RehearsalResult) -> str:
    """One testcase per metric of every analysis run, plus the verdict; dry-run metrics are
    reported but never fail."""
    suite = ET.Element("testsuite", name="canary-rehearsal")
    cases = 0
    failures = 0
    for record in result.runs:
        run = record.run
        if not run.metrics:  # the run never started (invalid spec): one case for the run
            cases += 1
            case = ET.SubElement(
                suite, "testcase", classname=f"rehearsal.{record.label}", name="analysis-run"
            )
            if run.phase != Phase.SUCCESSFUL:
                failures += 1
                failure = ET.SubElement(case, "failure", type=str(run.phase), message=run.message)
                failure.text = run.message
            continue
        for metric in run.metrics:
            cases += 1
            result_ = run.results.get(metric.name)
            phase = result_.phase if result_ else Phase.PENDING
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"rehearsal.{record.label.replace(' ', '-')}",
                name=metric.name,
            )
            values = [m.value or m.message for m in (result_.measurements if result_ else [])]
            ET.SubElement(case, "system-out").text = (
                f"phase {phase}; measurements: {', '.join(values) or 'none'}"
            )
            if phase in (Phase.FAILED, Phase.ERROR, Phase.INCONCLUSIVE) and not metric.dry_run:
                failures += 1
                message = result_.message if result_ else ""
                failure = ET.SubElement(case, "failure", type=str(phase), message=message)
                failure.text = message
    cases += 1
    verdict_case = ET.SubElement(suite, "testcase", classname="rehearsal", name="verdict")
    ET.SubElement(verdict_case, "system-out").text = result.verdict.headline()
    if result.verdict.outcome != Outcome.PROMOTED:
        failures += 1
        failure = ET.SubElement(
            verdict_case,
            "failure",
            type=str(result.verdict.outcome),
            message=result.verdict.headline(),
        )
        failure.text = result.verdict.headline()
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("time", f"{result.duration:.3f}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
