"""scripts.engines: where programs come from, and when a pin means a new build."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from scripts import engines
from scripts.engines import ENGINES, EngineError, engine_of, env_name, program_path


def test_every_engine_reads_its_version_from_its_go_mod() -> None:
    versions = {engine.name: engine.version() for engine in ENGINES}
    assert versions["kubernetes"].startswith("v1.")
    assert versions["rollouts"] == "v1.8.3"
    for engine in ENGINES:
        assert engine.version() in (engine.folder / "go.mod").read_text()


def test_a_variable_points_at_a_prebuilt_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = tmp_path / "kube-apiserver"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("KUBE_APISERVER", str(binary))
    with pytest.raises(EngineError, match="KUBE_APISERVER=.*not an executable"):
        program_path("kube-apiserver")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert program_path("kube-apiserver") == binary


def test_a_missing_build_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINES_CACHE", str(tmp_path))
    monkeypatch.delenv("ROLLOUTS_CONTROLLER", raising=False)
    with pytest.raises(EngineError, match=r"make engines.*ROLLOUTS_CONTROLLER"):
        program_path("rollouts-controller")


def test_the_cache_key_follows_every_file_of_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "kubeconform"
    folder.mkdir()
    (folder / "go.mod").write_text("module x\n\nrequire github.com/yannh/kubeconform v0.7.0\n")
    monkeypatch.setattr(engines, "ENGINES_ROOT", tmp_path)
    engine = engine_of("kubeconform")
    before = engine.key()
    assert before.startswith("kubeconform-v0.7.0-")
    (folder / "go.sum").write_text("changed\n")
    assert engine.key() != before


def test_without_go_the_build_names_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINES_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EngineError, match="install Go"):
        engines.build(engine_of("kubeconform"))


def test_env_names_follow_the_program() -> None:
    assert env_name("kube-controller-manager") == "KUBE_CONTROLLER_MANAGER"
    assert {name for engine in ENGINES for name, _ in engine.programs} >= {
        "kube-apiserver",
        "etcd",
        "rollouts-controller",
        "kubeconform",
    }


def test_the_built_programs_report_the_pinned_versions() -> None:
    """The real binaries (built by the bootstrap) say the versions the go.mod files pin."""
    import subprocess

    apiserver = subprocess.run(
        [str(program_path("kube-apiserver")), "--version"], capture_output=True, text=True
    )
    assert apiserver.stdout.strip() == f"Kubernetes {engine_of('kube-apiserver').version()}"
    kubeconform = subprocess.run(
        [str(program_path("kubeconform")), "-v"], capture_output=True, text=True
    )
    assert kubeconform.stdout.strip() == engine_of("kubeconform").version()
    assert os.access(program_path("etcd"), os.X_OK)
