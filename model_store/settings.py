"""The settings every entry point shares, read from `MNIST_*` variables or a `.env` file.

The service (`app.config.Settings`) extends this class; `mnist-train` and `python -m model_store`
take their defaults from it, so all three find the same store and data.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store.store import DEFAULT_MODEL_NAME, DEFAULT_STORE_ROOT, check_model_name

ENV_PREFIX = "MNIST_"


class StoreSettings(BaseSettings):
    # An empty variable means "not set": compose and ConfigMaps list every setting, most of them blank.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", env_ignore_empty=True
    )

    # Where versions live: <model_store>/<model_name>/<version>/.
    model_store: Path = DEFAULT_STORE_ROOT
    model_name: str = DEFAULT_MODEL_NAME
    # The four MNIST .gz files: training reads them all, the service's /test routes the test split.
    data_dir: Path = Path("data/mnist")

    @field_validator("model_name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str) -> str:
        return check_model_name(value)


def describe_settings_error(exc: ValidationError) -> str:
    """One line naming each `MNIST_*` variable that is wrong and why (never its value: it may be secret)."""
    problems = []
    for error in exc.errors():
        variable = ENV_PREFIX + "_".join(str(part) for part in error["loc"]).upper()
        problems.append(f"{variable}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(problems) + " (fix it in the environment or in .env)"
