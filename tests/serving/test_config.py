"""Environment configuration: defaults, validation messages, and no faults in production."""

from __future__ import annotations

import pytest

from ml.serving.config import ConfigError, FaultConfig, ServingConfig


def test_defaults_are_safe() -> None:
    config = ServingConfig.from_env({})
    assert config == ServingConfig()
    assert config.host == "127.0.0.1" and config.port == 8080
    assert config.admin_token is None and not config.faults.active
    assert config.intra_op_threads == 1
    assert config.batch_merge_rows == 256 and config.inference_threads == 1


def test_every_variable_is_read() -> None:
    env = {
        "MODEL_URI": "models:/digits-classifier@champion",
        "MODEL_REGISTRATION": "/m/registration.json",
        "MODEL_NAME": "digits",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "MAX_BODY_BYTES": "2048",
        "MAX_BATCH": "32",
        "ADMIN_TOKEN": "x" * 16,
        "ORT_INTRA_OP_THREADS": "2",
        "BATCH_MERGE_ROWS": "0",
        "INFERENCE_THREADS": "0",
        "LOG_LEVEL": "DEBUG",
        "DEPLOY_ENV": "staging",
        "GRACEFUL_TIMEOUT_S": "5",
        "HTTP_SERVER": "uvicorn",
        "KEEP_ALIVE_S": "30",
        "FAULT_ERROR_RATE": "0.1",
        "FAULT_LATENCY_MS": "250",
        "FAULT_DEGRADE": "Shuffle",
        "HEADER_TIMEOUT_S": "2",
        "BODY_TIMEOUT_S": "3",
        "BODY_MIN_RATE": "1000",
        "SEND_TIMEOUT_S": "4",
        "MAX_HEADER_BYTES": "4096",
        "MAX_HEADERS": "20",
        "MAX_URL_BYTES": "1024",
        "MAX_CONNECTIONS": "10",
        "MAX_BUFFERED_BYTES": "4096",
        "MAX_TENSOR_ELEMENTS": "5000",
        "MAX_TENSOR_DIMS": "4",
        "MODEL_DIR": "/models",
        "RELOAD_TIMEOUT_S": "5",
    }
    config = ServingConfig.from_env(env)
    limits = (
        config.header_timeout_s,
        config.body_timeout_s,
        config.body_min_rate,
        config.send_timeout_s,
        config.max_header_bytes,
        config.max_headers,
        config.max_url_bytes,
        config.max_connections,
        config.max_buffered_bytes,
        config.max_tensor_elements,
        config.max_tensor_dims,
        config.reload_timeout_s,
    )
    assert limits == (2.0, 3.0, 1000, 4.0, 4096, 20, 1024, 10, 4096, 5000, 4, 5.0)
    assert config.model_dir == "/models" and config.reload_dir == "/models"
    assert config.model_uri == "models:/digits-classifier@champion"
    assert config.registration_path == "/m/registration.json" and config.model_name == "digits"
    assert (config.host, config.port, config.max_body_bytes, config.max_batch) == (
        "0.0.0.0",
        9000,
        2048,
        32,
    )
    assert config.admin_token == "x" * 16 and config.intra_op_threads == 2
    assert config.batch_merge_rows == 0 and config.inference_threads == 0
    assert config.log_level == "debug" and config.deploy_env == "staging"
    assert config.graceful_timeout_s == 5.0
    assert config.http_server == "uvicorn" and config.keep_alive_s == 30.0
    assert config.faults == FaultConfig(error_rate=0.1, latency_ms=250.0, degrade="shuffle")
    assert config.faults.describe() == {
        "error_rate": 0.1,
        "latency_ms": 250.0,
        "degrade": "shuffle",
    }


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"PORT": "http"}, "PORT='http': expected an integer"),
        ({"PORT": "70000"}, "PORT='70000': expected a value in [0, 65535]"),
        ({"MAX_BATCH": "0"}, "MAX_BATCH='0'"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES='10'"),
        ({"FAULT_ERROR_RATE": "1.5"}, "FAULT_ERROR_RATE='1.5': expected a value in [0.0, 1.0]"),
        ({"FAULT_ERROR_RATE": "nan"}, "FAULT_ERROR_RATE='nan'"),
        ({"FAULT_LATENCY_MS": "-1"}, "FAULT_LATENCY_MS='-1'"),
        ({"FAULT_LATENCY_MS": "soon"}, "expected a number"),
        ({"FAULT_DEGRADE": "random"}, "FAULT_DEGRADE='random': expected one of shuffle, constant"),
        ({"DEPLOY_ENV": "prod"}, "DEPLOY_ENV='prod'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud'"),
        (
            {"HTTP_SERVER": "gunicorn"},
            "HTTP_SERVER='gunicorn': expected one of builtin, uvicorn, granian",
        ),
        ({"HEADER_TIMEOUT_S": "30"}, "HEADER_TIMEOUT_S='30': expected a value in [0.1, 10.0]"),
        ({"MAX_CONNECTIONS": "0"}, "MAX_CONNECTIONS='0'"),
        ({"MAX_TENSOR_DIMS": "33"}, "MAX_TENSOR_DIMS='33'"),
        ({"MAX_HEADER_BYTES": "100"}, "MAX_HEADER_BYTES='100'"),
        ({"BODY_MIN_RATE": "fast"}, "BODY_MIN_RATE='fast': expected an integer"),
        (
            {"MAX_BUFFERED_BYTES": "2048", "MAX_BODY_BYTES": "4096"},
            "MAX_BUFFERED_BYTES=2048 is below MAX_BODY_BYTES=4096",
        ),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN must be at least 16 characters"),
        ({"BATCH_MERGE_ROWS": "-1"}, "BATCH_MERGE_ROWS='-1': expected a value in [0, 65536]"),
        ({"INFERENCE_THREADS": "two"}, "INFERENCE_THREADS='two': expected an integer"),
        ({"INFERENCE_THREADS": "-1"}, "INFERENCE_THREADS='-1': expected a value in [0, 64]"),
        ({"INFERENCE_THREAD": "true"}, "INFERENCE_THREAD was replaced by INFERENCE_THREADS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        ServingConfig.from_env(env)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "fault",
    [{"FAULT_ERROR_RATE": "0.1"}, {"FAULT_LATENCY_MS": "100"}, {"FAULT_DEGRADE": "constant"}],
)
def test_faults_are_refused_in_production(fault: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as error:
        ServingConfig.from_env({"DEPLOY_ENV": "production", **fault})
    assert "fault injection is refused when DEPLOY_ENV=production" in str(error.value)
    # the same faults are accepted in staging (the rehearsal's environment)
    assert ServingConfig.from_env({"DEPLOY_ENV": "staging", **fault}).faults.active


def test_production_without_faults_is_fine() -> None:
    env = {"DEPLOY_ENV": "production", "FAULT_ERROR_RATE": "0", "FAULT_DEGRADE": ""}
    assert not ServingConfig.from_env(env).faults.active


def test_reloads_read_from_the_model_files_directory_by_default() -> None:
    assert ServingConfig(model_uri="/models/model.onnx").reload_dir == "/models"
    assert ServingConfig(model_uri="models:/digits-classifier@champion").reload_dir is None
    registry = ServingConfig(model_uri="models:/digits-classifier@champion", model_dir="/m")
    assert registry.reload_dir == "/m"
