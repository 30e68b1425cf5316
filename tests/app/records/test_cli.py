"""`python -m app.records` and `mnist-serve` with the prediction log's database: one line on error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from app.records.database import create_database_engine, prepare_schema
from app.records.feedback import record_contribution
from model_store.feedback_file import read_feedback_file
from model_store.mnist_data import MnistSplit
from tests.conftest import assert_one_line_error, run_cli

PROG = "python -m app.records"


def newer_schema(url: str) -> None:
    engine = create_database_engine(url)
    prepare_schema(engine, migrate=True)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()


def test_upgrade_then_check(tmp_path: Path) -> None:
    env = {"MNIST_DATABASE_URL": f"sqlite:///{tmp_path / 'log.db'}"}
    refused = run_cli("app.records", "check", cwd=tmp_path, env=env)
    assert_one_line_error(refused, PROG, "python -m app.records upgrade")
    assert run_cli("app.records", "upgrade", cwd=tmp_path, env=env).returncode == 0
    checked = run_cli("app.records", "check", cwd=tmp_path, env=env)
    assert checked.returncode == 0 and "this code's" in checked.stdout


def test_the_default_database_is_a_file_under_the_working_directory(tmp_path: Path) -> None:
    assert run_cli("app.records", "upgrade", cwd=tmp_path).returncode == 0
    assert (tmp_path / "data" / "mnist-serve.db").is_file()


def test_export_writes_the_labelled_examples(tmp_path: Path, digits: MnistSplit) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = create_database_engine(url)
    prepare_schema(engine, migrate=True)
    stored = [
        record_contribution(engine, digits.images[i], int(digits.labels[i]), "mnist", 2, None)
        for i in range(3)
    ]
    engine.dispose()
    result = run_cli(
        "app.records", "export", "--out", "feedback.npz", cwd=tmp_path, env={"MNIST_DATABASE_URL": url}
    )
    assert result.returncode == 0, result.stderr
    assert "3 labelled examples" in result.stdout
    examples = read_feedback_file(tmp_path / "feedback.npz")
    assert examples.prediction_ids.tolist() == [item.prediction_id for item in stored]
    assert np.array_equal(examples.images, digits.images[:3])
    assert examples.labels.tolist() == digits.labels[:3].tolist()
    assert examples.versions.tolist() == [2, 2, 2]
    later = run_cli(
        "app.records", "export", "--out", "none.npz", "--since", "2999-01-01", cwd=tmp_path,
        env={"MNIST_DATABASE_URL": url},
    )  # fmt: skip
    assert later.returncode == 0 and len(read_feedback_file(tmp_path / "none.npz")) == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["export", "--out", "missing/feedback.npz"], "missing is not a folder"),
        (["check"], "newer than this code"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    if args == ["check"]:
        newer_schema(url)
    else:
        run_cli("app.records", "upgrade", cwd=tmp_path, env={"MNIST_DATABASE_URL": url})
    assert_one_line_error(
        run_cli("app.records", *args, cwd=tmp_path, env={"MNIST_DATABASE_URL": url}), PROG, fragment
    )


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"MNIST_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    assert_one_line_error(run_cli("app.records", "upgrade", cwd=tmp_path, env=env), PROG, "does not answer")


def test_a_database_url_that_is_not_one_is_refused(tmp_path: Path) -> None:
    env = {"MNIST_DATABASE_URL": "mysql://x@y/z"}
    assert_one_line_error(run_cli("app.records", "check", cwd=tmp_path, env=env), PROG, "MNIST_DATABASE_URL")


@pytest.mark.slow
def test_mnist_serve_refuses_a_newer_schema_in_one_line(trained_store: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    newer_schema(url)
    env = {"MNIST_MODEL_STORE": str(trained_store), "MNIST_DATABASE_URL": url}
    assert_one_line_error(run_cli("app.cli", cwd=tmp_path, env=env), "mnist-serve", "revision f00d", "newer")
