"""Issue 18, the MLflow side, with the real MLflow: the store holds no absolute path (a moved
workspace writes into its own folder), an interrupted register never leaves a half-tagged
version nor causes a duplicate, Ctrl-C is held through the registry section, and the registered
model carries a signature so `dataframe_split` requests work."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from mlflow import MlflowClient
from onnx import TensorProto, helper

from ml.catalog import load_catalog
from ml.stages import register
from ml.tracking import at_store_root, tracking_uri
from tests.conftest import REPO

FEATURES, CLASSES = 3, 2


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
    # Softmax over 3 inputs gives 3 columns: slice to CLASSES is not needed for these checks
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
        register.onnx_signature(FEATURES, FEATURES),
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


def test_the_registered_model_answers_integer_inputs_through_its_signature(repo: Path) -> None:
    """What `mlflow models serve` does with a request of integers, in process: without a
    signature onnxruntime refused the int64 batch."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    sha = tiny_onnx(repo / "models/breast-cancer/model.onnx")
    _register(repo, repo / "models/breast-cancer/model.onnx", sha)
    with at_store_root(repo):
        mlflow.set_tracking_uri(tracking_uri(repo))
        model = mlflow.pyfunc.load_model("models:/breast-cancer@candidate")
        assert model.metadata.signature is not None
        client = TestClient(scoring_server.init(model))
        body = {"inputs": [[1, 2, 3], [3, 2, 1]]}
        reply = client.post("/invocations", json=body)
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"]["label"]) == 2
