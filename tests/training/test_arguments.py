"""`mnist-train` checks every argument and setting before loading TensorFlow or the data.

The commands run in subprocesses, as a user runs them; a mistake ends in one `mnist-train: error:`
line and a non-zero status, never a traceback.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_store.mnist_data import MNIST_FILES
from model_store.store import ModelStore
from tests.conftest import REPO_ROOT, assert_one_line_error, run_cli

PROG = "mnist-train"
TRAIN = "training.train"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--name", "a/b"], "invalid model name 'a/b'"),
        (["--limit", "-100"], "--limit: -100 is not a number of images from 1 to 60000"),
        (["--limit", "0"], "--limit: 0 is not"),
        (["--limit", "60001"], "--limit: 60001 is not"),
        (["--holdout", "-1"], "--holdout: -1 is not a number of images"),
        (["--holdout", "60000"], "--holdout: 60000 is not a number of images"),
        (["--epochs", "0"], "--epochs: 0 is not a whole number of at least 1"),
        (["--epochs", "two"], "--epochs: 'two' is not a whole number"),
        (["--batch-size", "0"], "--batch-size: 0 is not"),
        (["--learning-rate", "0"], "--learning-rate: 0 is not a number above 0"),
        (["--learning-rate", "-0.1"], "--learning-rate: -0.1 is not"),
        (["--seed", "-1"], "--seed: -1 is not"),
        (["--corrupted", "1.5"], "--corrupted: 1.5 is not a share from 0 to 1"),
        (["--outliers", "-2"], "--outliers: -2 is not a whole number of at least 0"),
        (["--precision", "float16"], "--precision: invalid choice: 'float16' (choose from"),
        (["--weight-average", "1"], "--weight-average: 1 is not a momentum from 0 up to, not including, 1"),
        (["--weight-average", "high"], "--weight-average: 'high' is not a momentum"),
        (["--min-new-corrections", "0"], "--min-new-corrections: 0 is not a whole number of at least 1"),
        (["--feedback", "--feedback-file", "c.npz"], "--feedback-file: not allowed with argument --feedback"),
        (
            ["--fine-tune-from", "served"],
            "--fine-tune-from: 'served' is neither a version number nor 'serving'",
        ),
    ],
)
def test_bad_argument_is_one_line_error(tmp_path: Path, args: list[str], expected: str) -> None:
    result = run_cli(TRAIN, *args, "--store", str(tmp_path / "store"), cwd=tmp_path)
    assert_one_line_error(result, PROG, expected, status=2)


def test_store_that_is_a_file_is_refused_before_training(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    result = run_cli(TRAIN, "--store", "store", "--no-download", cwd=tmp_path)
    assert_one_line_error(result, PROG, "--store (or MNIST_MODEL_STORE)", "store is a file", status=2)


def test_store_under_a_file_is_refused_as_unwritable(tmp_path: Path) -> None:
    # Root ignores permission bits, but nobody can create a folder inside a file.
    (tmp_path / "blocker").write_text("")
    result = run_cli(TRAIN, "--no-download", cwd=tmp_path, env={"MNIST_MODEL_STORE": "blocker/models"})
    assert_one_line_error(result, PROG, "blocker is a file", status=2)
    assert not (tmp_path / "blocker").is_dir()


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    result = run_cli(TRAIN, "--data-dir", "data", "--store", "store", cwd=tmp_path)
    assert_one_line_error(result, PROG, "--data-dir (or MNIST_DATA_DIR): data is a file", status=2)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MNIST_MODEL_NAME", "a/b", "MNIST_MODEL_NAME: invalid model name 'a/b'"),
        ("MNIST_MODEL_NAME", ".hidden", "MNIST_MODEL_NAME: invalid model name"),
    ],
)
def test_bad_setting_names_the_variable(tmp_path: Path, variable: str, value: str, expected: str) -> None:
    result = run_cli(TRAIN, "--help", cwd=tmp_path, env={variable: value})
    line = assert_one_line_error(result, PROG, expected)
    assert "(fix it in the environment or in .env)" in line


def test_bad_setting_in_dotenv_names_the_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MNIST_MODEL_NAME=x/y\n")
    result = run_cli(TRAIN, "--download-only", cwd=tmp_path)
    assert_one_line_error(result, PROG, "MNIST_MODEL_NAME: invalid model name 'x/y'")


def test_missing_data_without_download_names_the_file_and_the_setting(tmp_path: Path) -> None:
    result = run_cli(TRAIN, "--no-download", "--data-dir", "nothing-here", "--store", "store", cwd=tmp_path)
    assert_one_line_error(
        result, PROG, "train-images-idx3-ubyte.gz", "missing", "MNIST_DATA_DIR", "--data-dir"
    )
    assert ModelStore(tmp_path / "store").versions() == []


@pytest.mark.slow  # mnist-train imports TensorFlow before it reads the damaged file
def test_corrupt_data_file_names_the_file(tmp_path: Path, mnist_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for spec in MNIST_FILES.values():
        shutil.copyfile(mnist_dir / spec.name, data / spec.name)
    labels = data / MNIST_FILES["test", "labels"].name
    labels.write_bytes(labels.read_bytes()[:-100])
    result = run_cli(TRAIN, "--no-download", "--data-dir", "data", "--store", "store", cwd=tmp_path)
    assert_one_line_error(result, PROG, "t10k-labels-idx1-ubyte.gz", "MNIST_DATA_DIR")
    assert ModelStore(tmp_path / "store").versions() == []


HEAVY_PROBE = """
import json, sys
from training.train import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(json.dumps({"status": status, "loaded": [m for m in ("tensorflow", "keras") if m in sys.modules]}))
"""


@pytest.mark.parametrize("mode", ["--help", "--download-only", "bad-argument"])
def test_help_download_only_and_bad_arguments_do_not_import_tensorflow(
    tmp_path: Path, mnist_dir: Path, mode: str
) -> None:
    argv = {
        "--help": ["--help"],
        "--download-only": ["--download-only", "--data-dir", str(mnist_dir)],
        "bad-argument": ["--epochs", "0"],
    }[mode]
    (tmp_path / "probe.py").write_text(HEAVY_PROBE)
    result = run_cli("probe", *argv, cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"})
    report = json.loads(result.stdout.splitlines()[-1])
    assert report == {"status": {"--help": 0, "--download-only": 0, "bad-argument": 2}[mode], "loaded": []}
