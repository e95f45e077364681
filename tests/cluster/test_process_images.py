"""Process images: a Dockerfile's final stage as the process the node agent runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.cluster.images import ImageError, build_image, load_image

REPO = Path(__file__).resolve().parents[2]


def test_the_serving_dockerfile_becomes_its_entrypoint_env_and_files(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx")
    (model / "registration.json").write_text("{}")
    image = build_image(
        REPO / "ml" / "serving" / "Dockerfile",
        REPO,
        "registry.example.com/x:1",
        tmp_path / "store",
        {"MODEL_DIR": str(model)},
        extra_env={"FAULT_ERROR_RATE": "0.1"},
    )
    assert image.entrypoint == ("python", "-m", "ml.serving")
    assert image.env["MODEL_URI"] == "/models/model.onnx"
    assert image.env["FAULT_ERROR_RATE"] == "0.1"
    assert image.user == "10001:10001"
    # files are a snapshot, mapped to where the image has them
    local = image.host_path("/models/model.onnx")
    assert local is not None and Path(local).read_bytes() == b"onnx"
    (model / "model.onnx").write_bytes(b"changed")
    assert Path(local).read_bytes() == b"onnx"
    # the build stage's virtualenv is this machine's
    python = image.host_path("/opt/venv/bin/python")
    assert python is not None and Path(python).exists()
    assert load_image(tmp_path / "store", "registry.example.com/x:1") == image
    assert any("HEALTHCHECK" in note for note in image.notes)


def test_a_file_outside_the_context_is_refused(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY missing.txt /x\n")
    with pytest.raises(ImageError, match=r"Dockerfile:2: missing.txt is not in the build context"):
        build_image(dockerfile, tmp_path, "x:1", tmp_path / "store")


def test_shell_form_and_legacy_env(tmp_path: Path) -> None:
    (tmp_path / "app.sh").write_text("echo hi\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM scratch AS build\nRUN true\nFROM scratch\nARG WHERE=/srv\nENV GREETING hello world\n"
        "WORKDIR $WHERE\nCOPY app.sh ./\nCMD sh app.sh\n"
    )
    image = build_image(dockerfile, tmp_path, "x:2", tmp_path / "store")
    assert image.cmd == ("/bin/sh", "-c", "sh app.sh")
    assert image.env["GREETING"] == "hello world"
    assert image.workdir == "/srv"
    assert image.host_path("/srv/app.sh") is not None
    assert image.notes == ()  # the build stage's RUN is not the final stage's
