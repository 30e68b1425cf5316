"""`mnist-serve` refuses a bad setting or argument with one line naming it, before starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli

PROG = "mnist-serve"
SHORT_TOKEN = "short-secret"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MNIST_ADMIN_TOKEN", SHORT_TOKEN, "MNIST_ADMIN_TOKEN: must be at least 16 characters"),
        ("MNIST_LOG_LEVEL", "verbose", "MNIST_LOG_LEVEL: Input should be 'critical', 'error'"),
        ("MNIST_PORT", "eighty", "MNIST_PORT: Input should be a valid integer"),
        ("MNIST_RUNTIME", "tflite", "MNIST_RUNTIME: Input should be 'onnxruntime' or 'tensorflow'"),
        ("MNIST_WORKERS", "0", "MNIST_WORKERS: Input should be greater than or equal to 1"),
        ("MNIST_MODEL_VERSION", "../1", "MNIST_MODEL_VERSION: version must be a positive integer"),
        ("MNIST_MODEL_NAME", "a/b", "MNIST_MODEL_NAME: invalid model name 'a/b'"),
    ],
)
def test_bad_setting_is_one_line_naming_the_variable(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    result = run_cli("app.cli", cwd=tmp_path, env={variable: value})
    line = assert_one_line_error(result, PROG, expected)
    assert "fix it in the environment or in .env" in line
    assert SHORT_TOKEN not in result.stderr  # a secret is named, never printed


def test_bad_setting_in_dotenv_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MNIST_LOG_LEVEL=loud\n")
    assert_one_line_error(run_cli("app.cli", cwd=tmp_path), PROG, "MNIST_LOG_LEVEL")


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--port", "0"], "--port: 0 is not a port"), (["--workers", "0"], "--workers: 0 is not")],
)
def test_bad_argument_is_one_line(tmp_path: Path, args: list[str], expected: str) -> None:
    assert_one_line_error(run_cli("app.cli", *args, cwd=tmp_path), PROG, expected, status=2)


def test_log_level_is_accepted_in_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import Settings

    monkeypatch.setenv("MNIST_LOG_LEVEL", "DEBUG")
    assert Settings().log_level == "debug"


def test_an_empty_store_is_one_line_saying_how_to_publish(tmp_path: Path) -> None:
    result = run_cli("app.cli", cwd=tmp_path, env={"MNIST_MODEL_STORE": str(tmp_path / "empty")})
    assert_one_line_error(result, PROG, "no published version of model 'mnist'", "mnist-train")


def test_a_pinned_version_that_is_not_there_is_one_line(fixture_store: Path, tmp_path: Path) -> None:
    env = {"MNIST_MODEL_STORE": str(fixture_store), "MNIST_MODEL_VERSION": "7"}
    result = run_cli("app.cli", cwd=tmp_path, env=env)
    assert_one_line_error(result, PROG, "version 7 of model 'mnist' not found", "available: [1]")


def test_auto_rollout_without_the_prediction_log_is_refused_in_one_line(tmp_path: Path) -> None:
    result = run_cli("app.cli", cwd=tmp_path, env={"MNIST_ROLLOUT": "auto", "MNIST_PREDICTION_LOG": "off"})
    assert_one_line_error(result, PROG, "MNIST_ROLLOUT: auto needs the prediction log")
