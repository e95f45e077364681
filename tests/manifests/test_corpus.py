"""The broken-manifest corpus: each case is rejected with a problem naming file, object and field.

Cases live in corpus/<case>/ (kustomization + manifests + expect.yaml); add a folder to add one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scripts.manifests.validate import Checks, validate_target
from tests.manifests.conftest import CORPUS

CASES = sorted(p for p in CORPUS.iterdir() if (p / "expect.yaml").is_file())


def test_corpus_is_substantial() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_case_is_rejected_naming_file_object_field(case: Path, contract_metrics: set[str]) -> None:
    expect = yaml.safe_load((case / "expect.yaml").read_text())
    result = validate_target(case, Checks(contract_metrics, "contract", promtool=False))
    assert result.problems, f"{case.name} ({expect['why']}) was accepted"
    file = f"tests/manifests/corpus/{case.name}/{expect['file']}"
    matching = [
        p
        for p in result.problems
        if p.file == file
        and p.obj == expect["object"]
        and p.field == expect["field"]
        and expect["message"] in p.message
    ]
    assert matching, "\n".join(str(p) for p in result.problems)
    # the message a person reads names all three
    text = str(matching[0])
    assert file in text and expect["object"] in text and expect["field"] in text
