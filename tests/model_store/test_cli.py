"""`python -m model_store` reports a bad store, name or version in one line."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import assert_one_line_error, run_cli

PROG = "python -m model_store"


def test_store_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "models").write_text("")
    result = run_cli("model_store", "versions", cwd=tmp_path)
    assert_one_line_error(result, PROG, "model store models is a file, not a folder", "MNIST_MODEL_STORE")


def test_bad_model_name_setting_is_one_line(tmp_path: Path) -> None:
    result = run_cli("model_store", "versions", cwd=tmp_path, env={"MNIST_MODEL_NAME": "../up"})
    assert_one_line_error(result, PROG, "MNIST_MODEL_NAME: invalid model name '../up'")


def test_bad_name_flag_is_one_line(tmp_path: Path) -> None:
    result = run_cli("model_store", "--name", "a/b", "versions", cwd=tmp_path)
    assert_one_line_error(result, PROG, "invalid model name 'a/b'")


def test_missing_version_is_one_line(tmp_path: Path) -> None:
    result = run_cli("model_store", "show", "4", cwd=tmp_path)
    assert_one_line_error(result, PROG, "version 4 of model 'mnist' not found in models/mnist")


def test_empty_default_store_lists_nothing(tmp_path: Path) -> None:
    result = run_cli("model_store", "versions", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert not (tmp_path / "models").exists()  # looking creates nothing
