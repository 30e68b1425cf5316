"""Every knob of the service, read from `MNIST_*` environment variables (or a `.env` file).

The store, model name and data folder come from `StoreSettings`, which training reads too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from model_store.settings import StoreSettings
from model_store.store import parse_version

MIB = 1024 * 1024


class Settings(StoreSettings):
    # Serve the newest version of MODEL_NAME in MODEL_STORE, or the pinned MODEL_VERSION. Without the
    # MNIST files in DATA_DIR the /test/... routes answer 503.
    model_version: int | None = None

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    # Seconds in-flight requests get to finish after SIGTERM.
    graceful_shutdown_seconds: int = Field(20, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    # Limits on what a request may carry.
    max_upload_bytes: int = Field(4 * MIB, ge=1024)
    max_image_pixels: int = Field(16_000_000, ge=784)
    max_batch_images: int = Field(256, ge=1, description="files in one multipart batch request")
    max_array_images: int = Field(10_000, ge=1, description="images in one binary (.npy/raw) batch")
    max_random_count: int = Field(100, ge=1)

    # Dynamic batching of concurrent requests into one forward pass.
    batching_enabled: bool = True
    batch_max_size: int = Field(128, ge=1)
    batch_max_delay_ms: float = Field(0.0, ge=0.0)
    batch_queue_size: int = Field(
        2048, ge=1, description="queued images before 503; a large request weighs as one full batch"
    )
    # Threads TensorFlow may use per worker; 0 lets it decide.
    tf_threads: int = Field(0, ge=0)

    # Explanations (integrated gradients) computed at once; more get 503 at once, not a queue.
    explain_concurrency: int = Field(1, ge=1)

    # Follow the store: seconds between looks for a newer version (0 = never; ignored when pinned).
    reload_poll_seconds: float = Field(10.0, ge=0.0)
    # Bearer token for /admin routes; unset means the admin routes are disabled.
    admin_token: SecretStr | None = None
    # One JSON object per log line (for log shippers); plain text otherwise.
    log_json: bool = True

    @field_validator("admin_token")
    @classmethod
    def _token_must_be_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 24)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model_version", mode="before")
    @classmethod
    def _blank_version_means_newest(cls, value: object) -> object:
        if value in ("", None, "latest"):
            return None
        return parse_version(value)  # type: ignore[arg-type]


@lru_cache
def get_settings() -> Settings:
    return Settings()
