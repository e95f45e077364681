"""Issue 18 against the real DVC and MLflow, in the session's trained workspace: bad params are
refused before any stage runs and delete nothing, experiments neither release nor fail at the
gate and show in `dvc exp show`, the serving image's user can read what the pipeline wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import REPO, run

pytestmark = pytest.mark.e2e

MODEL = "models/breast-cancer"
PARAMS = f"{MODEL}/params.yaml"


def _fingerprint(workspace: Path) -> dict[str, str]:
    """sha256 of every file of both models' folders (outputs, lock, records)."""
    found = {}
    for path in sorted((workspace / "models").rglob("*")):
        if path.is_file():
            found[str(path.relative_to(workspace))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _versions(workspace: Path, name: str) -> list[str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    return sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))


def _alias(workspace: Path, name: str) -> str:
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    return str(client.get_model_version_by_alias(name, "candidate").version)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # a misspelt key beside the real one: DVC tracks no such key, so it said "up to date"
        ("  test_size: 0.2\n", "  test_size: 0.2\n  test_szie: 0.3\n", "data.test_szie: unknown"),
        ("seed: 42", "seed: 42\nseeed: 7", "seeed: unknown key (did you mean seed?)"),
        # DVC removed train's outputs before train refused this one
        ("epochs: 200", "epochs: 0", "train.epochs: Input should be greater than or equal to 1"),
        ("amp: true", "amp: yes", "train.amp: Input should be a valid boolean"),
    ],
)
def test_bad_params_are_refused_first_and_delete_nothing(
    pipeline_workspace: Path, old: str, new: str, message: str
) -> None:
    params = pipeline_workspace / PARAMS
    original = params.read_text()
    before = _fingerprint(pipeline_workspace)
    try:
        params.write_text(original.replace(old, new, 1))
        venv = f"VENV={Path(sys.executable).parent.parent}"
        make = ["make", "--no-print-directory", "pipeline", venv, "READY="]
        for command in (["dvc", "repro"], make):
            result = run(command, pipeline_workspace, check=False)
            assert result.returncode != 0, result.stdout
            assert "params.yaml:" in result.stderr and message in result.stderr, result.stderr
            assert "Running stage 'models/breast-cancer/dvc.yaml:prepare'" not in result.stdout
            after = _fingerprint(pipeline_workspace)
            after.pop(PARAMS)  # the edit itself
            before.pop(PARAMS, None)
            assert after == before  # nothing deleted, nothing rewritten
    finally:
        params.write_text(original)
    # git checkout of params.yaml is all it takes: nothing to restore, nothing reruns
    assert "up to date" in run(["dvc", "status"], pipeline_workspace).stdout


def test_an_experiment_neither_releases_nor_fails_at_the_gate(pipeline_workspace: Path) -> None:
    """The README's example: 3 epochs miss the accuracy gate. The experiment completes, shows in
    `dvc exp show` with its gate verdict, registers nothing and leaves the alias alone."""
    name = "breast-cancer"
    versions, alias = _versions(pipeline_workspace, name), _alias(pipeline_workspace, name)
    before = _fingerprint(pipeline_workspace)
    result = run(
        [
            "dvc",
            "exp",
            "run",
            "--temp",
            f"{MODEL}/dvc.yaml",
            "-S",
            f"{PARAMS}:train.epochs=3",
            "-n",
            "three-epochs",
        ],
        pipeline_workspace,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert _versions(pipeline_workspace, name) == versions
    assert _alias(pipeline_workspace, name) == alias
    assert _fingerprint(pipeline_workspace) == before  # --temp: the workspace is untouched
    shown = json.loads(run(["dvc", "exp", "show", "--json"], pipeline_workspace).stdout)
    text = json.dumps(shown)
    assert "three-epochs" in text and '"released": false' in text, text[:2000]
    # its training run is in the repository's store, tagged with the experiment's name
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`mlops.dvc_experiment` = 'three-epochs'"
    )
    assert runs


def test_the_serving_entrypoint_reads_the_pipelines_files_as_a_non_root_user(
    pipeline_workspace: Path,
) -> None:
    """The image copies model.onnx and registration.json (modes kept) and runs as UID 10001."""
    folder = pipeline_workspace / "models/digits"
    for name in ("model.onnx", "registration.json", "model_card.md", "metrics/metrics.json"):
        mode = stat.S_IMODE((folder / name).stat().st_mode)
        assert mode & stat.S_IROTH, f"{name} is {oct(mode)}"
    image = Path(tempfile.mkdtemp(prefix="image-"))
    try:
        os.chmod(image, 0o755)
        models = image / "models"
        models.mkdir(mode=0o755)
        for name in ("model.onnx", "registration.json"):
            shutil.copy(folder / name, models / name)  # COPY keeps the mode bits
        if os.geteuid() != 0:
            return  # cannot switch user here: the mode bits above are what another user needs
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        # the venv's interpreter may live under root's home (pyenv), which UID 10001 cannot
        # enter: the system interpreter of the same version with the venv's packages is what
        # the image's /opt/venv amounts to
        system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
        python = str(system) if system.is_file() else sys.executable
        packages = sysconfig.get_paths()["purelib"]
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": os.pathsep.join([str(REPO), packages]),
            "MODEL_URI": str(models / "model.onnx"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DEPLOY_ENV": "production",
            "HOME": str(image),
        }
        server = subprocess.Popen(
            [python, "-m", "ml.serving"],
            cwd=image,
            env=env,
            user=10001,
            group=10001,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline, body = time.monotonic() + 60, b""
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/metadata", timeout=2
                    ) as r:
                        body = r.read()
                        break
                except OSError:
                    time.sleep(0.3)
            assert body, (
                server.stdout.read() if server.stdout and server.poll() is not None else b""
            )
            record = json.loads((folder / "registration.json").read_text())
            assert json.loads(body)["data_hash"] == record["data_hash"]  # the record was read
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(image)


def test_no_metric_name_repeats_its_prefix(pipeline_workspace: Path) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits-classifier")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    names = {name for r in runs for name in r.data.metrics}
    assert "test_accuracy" in names
    assert not [n for n in names if n.startswith("test_test_")], names


def test_dvc_plots_output_is_ignored_by_git(pipeline_workspace: Path) -> None:
    run(["dvc", "plots", "show"], pipeline_workspace)
    assert (pipeline_workspace / "dvc_plots/index.html").is_file()
    assert run(["git", "status", "--porcelain"], pipeline_workspace).stdout == ""
