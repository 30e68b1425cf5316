"""Every knob of the service, read from `MNIST_*` environment variables (or a `.env` file).

The store, model name and data folder come from `StoreSettings`, which training reads too.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from model_store.runtimes import INSTALL_KERAS_HINT, Runtime, RuntimeChoice, keras_installed
from model_store.settings import StoreSettings
from model_store.store import parse_version

MIB = 1024 * 1024
# scheme://host[:port], no path: what a browser sends in the Origin header.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class Settings(StoreSettings):
    # Serve the newest version of MODEL_NAME in MODEL_STORE, or the pinned MODEL_VERSION. Without the
    # MNIST files in DATA_DIR the /test/... routes answer 503.
    model_version: int | None = None

    # Versions loaded beside the default one, each answering on ?version= and on
    # /v2/models/<name>/versions/<v>/infer (TF Serving's version policy): the LOADED_VERSIONS listed
    # (`3,5`), else the newest LOADED_NEWEST. The default (newest, or pinned) is always loaded, so the
    # defaults load only that one.
    loaded_newest: int = Field(0, ge=0)
    loaded_versions: Annotated[list[int], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1)
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="port of the Open Inference Protocol over gRPC, shared by every worker; 0 turns it off",
        examples=[8081],
    )
    grpc_host: str | None = Field(
        None,
        description="address the gRPC server listens on; unset: the HTTP host",
        examples=["0.0.0.0"],
    )
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
    # Net allocations between collections of the garbage collector's youngest generation. Python's
    # 700 made it walk the objects of every request in flight several times per request (6-8 % of a
    # request's CPU at 64 at once), objects that reference counting frees anyway.
    gc_threshold: int = Field(20_000, ge=700)
    # Threads TensorFlow may use per worker (explanations, and predictions on the tensorflow runtime);
    # 0 lets it decide.
    tf_threads: int = Field(0, ge=0)
    # What runs predictions: ONNX Runtime on the version's model.onnx (written at publish time), or
    # TensorFlow. A version without a usable model.onnx is served by TensorFlow, logged.
    runtime: Runtime = "onnxruntime"
    # ONNX Runtime's threads per worker; 0: the cores this process may use, shared among the workers.
    runtime_threads: int = Field(0, ge=0)

    # How explanations are computed: occlusion (forward passes on the serving runtime only), or
    # integrated gradients (TensorFlow). Occlusion is the more faithful on the default cnn, whose
    # per-image normalisation makes the black-to-image path of integrated gradients degenerate
    # (README, Explanations), and needs no TensorFlow.
    explain_method: Literal["occlusion", "integrated_gradients"] = "occlusion"
    # Explanations computed at once; more get 503 at once, not a queue.
    explain_concurrency: int = Field(1, ge=1)
    # Integrated gradients need TensorFlow, which serving on ONNX Runtime otherwise never imports: the
    # first explanation in a worker then takes a few seconds and ~0.5 GB. True pays that (or, for
    # occlusion, the first explanation's small cost) before ready.
    explain_warmup: bool = False

    # Follow the store: seconds between looks for a newer version (0 = never; ignored when pinned).
    reload_poll_seconds: float = Field(10.0, ge=0.0)
    # Bearer token for /admin routes; unset means the admin routes are disabled.
    admin_token: SecretStr | None = None
    # One JSON object per log line (for log shippers); plain text otherwise.
    log_json: bool = True

    # API keys for the inference routes: a file of `name:key` lines (or a JSON object), re-read when
    # it changes. Unset: the API is open. Health, metrics, docs and the web page are always open.
    api_keys_file: Path | None = None
    # Per key and per worker: requests per second on average (0 = no limit), and the burst allowed.
    api_key_rate_per_second: float = Field(0.0, ge=0.0)
    api_key_rate_burst: int = Field(20, ge=1)

    # OpenTelemetry: export a trace of each request over OTLP/HTTP to this endpoint, e.g.
    # http://collector:4318/v1/traces. Unset: no tracing.
    otlp_endpoint: str | None = None

    # Browser origins allowed to call the API (CORS), as `https://app.example.com,http://localhost:3000`
    # or a JSON list; empty: no cross-origin access. "*" allows any origin.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    def runtime_choice(self) -> RuntimeChoice:
        threads = self.runtime_threads or max(1, len(os.sched_getaffinity(0)) // self.workers)
        return RuntimeChoice(self.runtime, threads)

    @field_validator("runtime", "explain_method")
    @classmethod
    def _keras_where_needed(cls, value: str) -> str:
        if value in ("tensorflow", "integrated_gradients") and not keras_installed():
            raise ValueError(f"{value} needs Keras and TensorFlow, not installed here: {INSTALL_KERAS_HINT}")
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_must_be_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 24)")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins_from_text(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [o.strip() for o in text.split(",") if o.strip()]
            )
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://example.com or http://localhost:3000"
                )
        return value

    @field_validator("log_level", "runtime", "explain_method", mode="before")
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
