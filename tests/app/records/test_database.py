from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text

from app.records.database import SchemaError, create_database_engine, head_revision, prepare_schema


def test_migrations_create_the_tables_from_an_empty_database(database_url: str) -> None:
    engine = create_database_engine(database_url)
    assert "predictions" not in inspect(engine).get_table_names()
    prepare_schema(engine, migrate=True)
    assert {"predictions", "feedback", "alembic_version"} <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    engine.dispose()


def test_a_second_upgrade_finds_it_done(engine: Engine) -> None:
    prepare_schema(engine, migrate=True)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_schema_newer_than_the_code_is_refused(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match=r"revision 9999.* newer than this code"):
        prepare_schema(engine, migrate=True)


def test_a_schema_behind_is_refused_when_migrations_are_off(database_url: str) -> None:
    engine = create_database_engine(database_url)
    with pytest.raises(SchemaError, match=r"python -m app\.records upgrade"):
        prepare_schema(engine, migrate=False)
    assert "predictions" not in inspect(engine).get_table_names()
    engine.dispose()


def test_sqlite_connections_run_in_wal_mode_with_a_busy_timeout(tmp_path: object) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path}/sub/folder/log.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
