"""Issue 18, the MLflow side, with the real MLflow: the store holds no absolute path (a moved
workspace writes into its own folder), an interrupted register never leaves a half-tagged
version nor causes a duplicate, Ctrl-C is held through the registry section, and the registered
model is our pyfunc over the ONNX file, so `mlflow models serve` answers `dataframe_split`."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper

from ml.catalog import load_catalog
from ml.serving.registry import fetch_registered_model
from ml.stages import register
from ml.tracking import at_store_root, tracking_uri
from tests.conftest import REPO

FEATURES, CLASSES = 3, 3
NAMES = ["radius", "texture", "area"]  # the input schema's feature names
KINDS = ["benign", "malignant", "unsure"]


def tiny_onnx(path: Path) -> str:
    """The served graph's shape (input -> probabilities, label) without training anything."""
    graph = helper.make_graph(
        [
            helper.make_node("Softmax", ["input"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, FEATURES])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, CLASSES]),
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
        ],
    )
    # Softmax over the 3 inputs gives the 3 class columns
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "repo"
    (root / "models/breast-cancer").mkdir(parents=True)
    shutil.copy(REPO / "models.yaml", root / "models.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(root / "models/breast-cancer")  # where DVC runs the stages
    return root


def _register(root: Path, onnx_path: Path, sha: str) -> tuple[str, str]:
    entry = load_catalog(root / "models.yaml").get("breast-cancer")
    return register.register_model(
        entry,
        root,
        "candidate",
        onnx_path,
        "c" * 64,
        {"onnx_sha256": sha, "git_commit": "abc"},
        NAMES,
        KINDS,
    )


def _db_text(root: Path) -> str:
    with sqlite3.connect(root / "mlflow.db") as db:
        return "\n".join(line for line in db.iterdump())


def test_the_store_holds_no_absolute_path_and_a_moved_copy_writes_into_itself(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = tiny_onnx(repo / "models/breast-cancer/model.onnx")
    _register(repo, repo / "models/breast-cancer/model.onnx", sha)
    assert any((repo / "mlartifacts").rglob("model.onnx"))
    assert not (repo / "models/breast-cancer/mlartifacts").exists()
    assert not (repo / "mlruns").exists()
    assert str(tmp_path) not in _db_text(repo)  # no absolute path frozen in mlflow.db
    moved = tmp_path / "moved"
    shutil.move(repo, moved)
    # a new process, as the next stage would be (this one's MLflow keeps the old file open)
    script = (
        "import mlflow, sys\n"
        "from pathlib import Path\n"
        "from ml.tracking import at_store_root, start_tracking\n"
        "root = Path(sys.argv[1])\n"
        "experiment = start_tracking('breast-cancer', root)\n"
        "(root / 'note.txt').write_text('x')\n"
        "with at_store_root(root), mlflow.start_run(experiment_id=experiment) as run:\n"
        "    mlflow.log_artifact(str(root / 'note.txt'))\n"
        "print(run.info.run_id)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", script, str(moved)],
        cwd=moved / "models/breast-cancer",
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    assert (moved / "mlartifacts" / run_id / "artifacts/note.txt").is_file()
    assert not repo.exists()  # nothing recreated the original's folder


@pytest.mark.parametrize(
    "crash_at",
    [
        "mlflow.MlflowClient.set_model_version_tag",  # the old code tagged a version after it
        "mlflow.MlflowClient.set_registered_model_alias",
        "mlflow.register_model",
    ],
)
def test_an_interrupted_register_never_duplicates_a_version(
    repo: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    sha = tiny_onnx(repo / "models/breast-cancer/model.onnx")
    with monkeypatch.context() as patch:

        def killed(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt  # as a hard kill would stop the process right there

        patch.setattr(crash_at, killed)
        try:
            _register(repo, repo / "models/breast-cancer/model.onnx", sha)
        except KeyboardInterrupt:
            pass
    version, _ = _register(repo, repo / "models/breast-cancer/model.onnx", sha)
    client = MlflowClient(tracking_uri(repo))
    versions = client.search_model_versions("name = 'breast-cancer'")
    assert [str(v.version) for v in versions] == [version] == ["1"]
    assert versions[0].tags["onnx_sha256"] == sha
    assert str(client.get_model_version_by_alias("breast-cancer", "candidate").version) == "1"


def test_ctrl_c_is_held_until_the_registry_section_completes() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with register.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(True)  # still runs: the signal waits for the block
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


SPLIT = {"dataframe_split": {"columns": NAMES, "data": [[1, 2, 3], [3.5, 2, 1]]}}


def _check_answer(predictions: list[dict[str, Any]]) -> None:
    """Two rows of label, class and one probability per class, as the ONNX graph computes them."""
    assert [p["label"] for p in predictions] == [2, 0]
    assert [p["class"] for p in predictions] == ["unsure", "benign"]
    assert sorted(predictions[0]) == sorted(
        ["label", "class", *(f"probability_{k}" for k in KINDS)]
    )
    assert abs(sum(float(predictions[1][f"probability_{k}"]) for k in KINDS) - 1) < 1e-5


def test_the_registered_model_answers_dataframe_split_through_its_signature(
    repo: Path, tmp_path: Path
) -> None:
    """What `mlflow models serve` does with a pandas `dataframe_split` request (integers
    included), in process: the ONNX flavour failed it, flattening outputs of two widths."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    onnx_path = repo / "models/breast-cancer/model.onnx"
    sha = tiny_onnx(onnx_path)
    _register(repo, onnx_path, sha)
    with at_store_root(repo):
        mlflow.set_tracking_uri(tracking_uri(repo))
        model = mlflow.pyfunc.load_model("models:/breast-cancer@candidate")
        assert model.metadata.signature.inputs.input_names() == NAMES
        client = TestClient(scoring_server.init(model))
        reply = client.post("/invocations", json=SPLIT)
        wrong = client.post(
            "/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}}
        )
    assert reply.status_code == 200, reply.text
    _check_answer(reply.json()["predictions"])
    assert wrong.status_code == 400 and "radius" in wrong.text  # the schema names what it needs
    # the version's ONNX file is the exported one, byte for byte, and the service finds it there
    logged = list((repo / "mlartifacts").rglob("model.onnx"))
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in logged] == [sha]
    with at_store_root(repo):
        fetched, _ = fetch_registered_model("models:/breast-cancer@candidate", tmp_path / "got")
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == sha


@pytest.mark.e2e
def test_mlflow_models_serve_answers_dataframe_split(repo: Path, tmp_path: Path) -> None:
    """The real `mlflow models serve --env-manager local` of the venv, on a free loopback port,
    against the version registered in a temporary store."""
    import json
    import urllib.request

    from scripts.processes import ManagedProcess, free_port, wait_until
    from scripts.repo_copy import tool_env

    onnx_path = repo / "models/breast-cancer/model.onnx"
    _register(repo, onnx_path, tiny_onnx(onnx_path))
    port = free_port()
    # the venv's bin first on PATH: MLflow starts `uvicorn` by name
    env = tool_env(MLFLOW_TRACKING_URI=tracking_uri(repo))
    serve = ManagedProcess(
        "mlflow models serve",
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/breast-cancer@candidate",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        tmp_path / "serve.log",
        env,
        repo,  # MLflow resolves the store's relative artifact location from the root
    )
    serve.start()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_until(ready, 120, f"mlflow models serve on {url}", serve)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(SPLIT).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            _check_answer(json.loads(reply.read())["predictions"])
    finally:
        serve.stop(grace_seconds=10, group=True)
