"""The settings every entry point shares, read from `MNIST_*` variables or a `.env` file.

The service (`app.config.Settings`) extends this class; `mnist-train` and `python -m model_store`
take their defaults from it, so all three find the same store, data and prediction log.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.storage import parse_location
from model_store.store import DEFAULT_MODEL_NAME, DEFAULT_STORE_ROOT, ModelStore, check_model_name

ENV_PREFIX = "MNIST_"


class StoreSettings(BaseSettings):
    # An empty variable means "not set": compose and ConfigMaps list every setting, most of them blank.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True
    )

    model_store: Path | str = Field(
        DEFAULT_STORE_ROOT,
        description="The model store: a folder, or `s3://BUCKET/PREFIX` in S3 or an S3-compatible store "
        "(endpoint from `AWS_ENDPOINT_URL`, credentials from the standard AWS variables). Versions live "
        "in `<store>/<name>/<version>/`. Read by the service, `mnist-train` and `python -m model_store`.",
        examples=[Path("/srv/models"), "s3://mnist-models/store"],
    )
    model_cache_dir: Path | None = Field(
        None,
        description="Where the versions of a store in a bucket are downloaded to be loaded (default: a "
        "folder per store under the system's temporary folder). Unused for a store in a folder.",
        examples=[Path("/var/cache/mnist-models")],
    )
    model_name: str = Field(
        DEFAULT_MODEL_NAME,
        description="The model's folder in the store, and its name in the KServe v2 routes.",
        examples=["digits"],
    )
    data_dir: Path = Field(
        Path("data/mnist"),
        description="Folder of the four MNIST `.gz` files: training reads them all (and downloads them "
        "there when missing), the service's /test routes read the test split.",
        examples=[Path("/data/mnist")],
    )
    database_url: str = Field(
        "sqlite:///data/mnist-serve.db",
        description="The prediction log's database (SQLAlchemy URL): a SQLite file by default (relative to "
        "the working directory), PostgreSQL (`postgresql+psycopg://...`) for several replicas. `mnist-train "
        "--feedback` reads the users' corrections from it.",
        examples=["postgresql+psycopg://mnist:secret@postgres:5432/mnist"],
    )

    @field_validator("model_store", mode="before")
    @classmethod
    def _folder_or_bucket(cls, value: object) -> object:
        return parse_location(value) if isinstance(value, str | Path) else value

    @field_validator("model_name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_a_url(cls, value: str) -> str:
        # Imported here: `python -m model_store` reads these settings and needs no database.
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL; e.g. sqlite:///data/mnist-serve.db or "
                "postgresql+psycopg://user:password@host:5432/name"
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend} is not supported: use sqlite or postgresql")
        return value

    def open_store(self) -> ModelStore:
        """The store these settings name."""
        return ModelStore(self.model_store, self.model_name, self.model_cache_dir)


def add_store_arguments(parser: argparse.ArgumentParser, settings: StoreSettings) -> None:
    """A command's `--store` and `--name`, defaulting to MNIST_MODEL_STORE and MNIST_MODEL_NAME."""
    parser.add_argument(
        "--store", type=parse_location, default=settings.model_store, help="env MNIST_MODEL_STORE"
    )
    parser.add_argument("--name", default=settings.model_name, help="env MNIST_MODEL_NAME")


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each `MNIST_*` variable that is wrong and why (never its value: it may be secret)."""
    problems = []
    for error in exc.errors():
        variable = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{variable}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems) + " (fix it in the environment or in .env)"
