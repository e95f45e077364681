"""The Jenkinsfile, run by JenkinsPipelineUnit (tests/ci/jenkins: a Maven project whose every
artifact comes from Maven Central) for a training merge request, a docs-only one, main, a
release tag and a retraining build: stages, make targets, agents, environment and credentials,
stash/unstash across agents, the input outside any agent and the 90-minute limit, and the same
commands as .gitlab-ci.yml. Maven comes from system-packages.txt (the bootstrap); its local
repository (~/.m2, or MAVEN_OPTS=-Dmaven.repo.local=... in CI) is the cache: cold, the
dependencies (~37 MB) took 25 s to fetch here."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

from scripts.repo_copy import REPO

PROJECT = REPO / "tests" / "ci" / "jenkins"
EXPECTED = {
    "a_merge_request_that_trains_reports_after_the_rehearsal",
    "a_docs_only_merge_request_allocates_no_gpu",
    "main_builds_and_scans_with_the_registry_credential_and_the_commit",
    "a_tag_fetches_builds_releases_in_ci_mode_and_promotes_holding_no_executor",
    "the_automatic_stages_have_ninety_minutes",
    "a_retraining_build_trains_the_named_model_and_proposes_it",
    "every_stage_that_runs_make_has_the_plan_and_model_it_reads",
    "an_unstash_with_no_stash_before_it_fails_the_build",
    "a_stage_that_forgets_an_unstash_is_caught",
    "an_input_inside_an_agent_is_caught",
    "an_environment_block_with_unknown_syntax_is_caught",
    "jenkins_runs_the_commands_gitlab_runs",
}


def test_the_jenkinsfile_under_jenkins_pipeline_unit() -> None:
    mvn = shutil.which("mvn")
    assert mvn, "mvn missing: run scripts/bootstrap.sh (system-packages.txt installs maven)"
    reports = PROJECT / "target" / "surefire-reports"
    shutil.rmtree(reports, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "test"], cwd=PROJECT, capture_output=True, text=True, timeout=1800
    )
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, tail
    suite = ET.parse(reports / "TEST-JenkinsfileTest.xml").getroot()
    ran = {case.get("name") for case in suite.iter("testcase")}
    assert ran == EXPECTED, tail
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    assert suite.get("skipped") == "0"
