"""Every knob of the service, read from `MNIST_*` environment variables (or a `.env` file).

The store, model name, data folder and the prediction log's database come from `StoreSettings`,
which training reads too.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from model_store.runtimes import INSTALL_KERAS_HINT, Precision, Runtime, RuntimeChoice, keras_installed
from model_store.settings import StoreSettings
from model_store.store import parse_version

MIB = 1024 * 1024
# scheme://host[:port], no path: what a browser sends in the Origin header.
ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class Settings(StoreSettings):
    """The service's settings. Each field's description and example become docs/configuration.md."""

    model_version: int | None = Field(
        None,
        description="Serve this version of the model, pinned; unset (or `latest`) serves the newest and "
        "follows the store. The `/test` routes answer 503 without the MNIST files in the data folder.",
        examples=[3],
    )
    loaded_newest: int = Field(
        0,
        ge=0,
        description="Also load the newest N versions, each answering on `?version=` and on "
        "`/v2/models/<name>/versions/<v>/infer` (TF Serving's version policy). The default version is "
        "always loaded.",
        examples=[2],
    )
    loaded_versions: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Also load these versions (comma-separated or a JSON list); overrides "
        "`MNIST_LOADED_NEWEST`.",
        examples=[[3, 5]],
    )

    host: str = Field("127.0.0.1", description="Address the HTTP server binds.", examples=["0.0.0.0"])
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.", examples=[8080])
    workers: int = Field(
        1, ge=1, description="uvicorn worker processes, each with its own copy of the model.", examples=[2]
    )
    grpc_port: int = Field(
        8081,
        ge=0,
        le=65535,
        description="Port of the Open Inference Protocol over gRPC, shared by every worker; "
        "0 turns gRPC off.",
        examples=[8001],
    )
    grpc_host: str | None = Field(
        None,
        description="Address the gRPC server binds; unset, the HTTP host.",
        examples=["0.0.0.0"],
    )
    graceful_shutdown_seconds: int = Field(
        20, ge=0, description="Seconds requests in flight get to finish after SIGTERM.", examples=[30]
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        "info", description="Lowest level logged (any case).", examples=["debug"]
    )
    log_json: bool = Field(
        True,
        description="One JSON object per log line, for log shippers; plain text when false.",
        examples=[False],
    )

    max_upload_bytes: int = Field(
        4 * MIB, ge=1024, description="Largest request body; larger ones get 413.", examples=[1048576]
    )
    max_image_pixels: int = Field(
        16_000_000,
        ge=784,
        description="Largest decoded image (width × height); larger ones get 413 before decoding.",
        examples=[1000000],
    )
    max_batch_images: int = Field(
        256, ge=1, description="Files in one multipart batch request.", examples=[64]
    )
    max_array_images: int = Field(
        10_000, ge=1, description="Images in one binary (.npy or raw) batch request.", examples=[1000]
    )
    max_random_count: int = Field(100, ge=1, description="Largest `count` of `/test/random`.", examples=[20])

    batching_enabled: bool = Field(
        True,
        description="Gather concurrent requests into one forward pass (dynamic batching).",
        examples=[False],
    )
    batch_max_size: int = Field(128, ge=1, description="Images in one forward pass at most.", examples=[64])
    batch_max_delay_ms: float = Field(
        0.0,
        ge=0.0,
        description="Milliseconds a batch may wait for more requests; 0 runs as soon as the runtime is "
        "free (requests that arrive meanwhile still share the next pass).",
        examples=[2.0],
    )
    batch_queue_size: int = Field(
        2048,
        ge=1,
        description="Images waiting for a forward pass before new requests get 503 with Retry-After; a "
        "large request weighs as one full batch.",
        examples=[512],
    )
    gc_threshold: int = Field(
        20_000,
        ge=700,
        description="Allocations between collections of the garbage collector's youngest generation. "
        "Python's default of 700 walks the objects of every request in flight several times per request, "
        "objects that reference counting frees anyway (docs/performance.md).",
        examples=[50000],
    )
    tf_threads: int = Field(
        0,
        ge=0,
        description="Threads TensorFlow may use per worker (integrated gradients, the tensorflow runtime); "
        "0 lets it decide.",
        examples=[2],
    )
    runtime: Runtime = Field(
        "onnxruntime",
        description="What runs predictions: ONNX Runtime on the version's model.onnx, or TensorFlow (needs "
        "the train extra). A version without a usable model.onnx is served by TensorFlow, logged.",
        examples=["tensorflow"],
    )
    precision: Precision = Field(
        "auto",
        description="Which ONNX export ONNX Runtime serves: `auto` the int8 model.int8.onnx where the "
        "version's metadata says its publish-time proof made it the default, else float32 (model.onnx); "
        "`float32` always; `int8` always, refusing to start on a version without the export.",
        examples=["float32"],
    )
    runtime_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime's threads per worker; 0 shares the cores this process may use among the "
        "workers.",
        examples=[1],
    )

    explain_method: Literal["occlusion", "integrated_gradients"] = Field(
        "occlusion",
        description="How `?explain=true` and `/v1/models/{name}:explain` attribute an answer: occlusion "
        "(forward passes on the serving runtime) "
        "or integrated gradients (needs TensorFlow). Occlusion is the more faithful on the cnn, whose "
        "per-image normalisation makes the black-to-image path of integrated gradients degenerate.",
        examples=["integrated_gradients"],
    )
    explain_concurrency: int = Field(
        1, ge=1, description="Explanations computed at once; more get 503 at once, not a queue.", examples=[2]
    )
    explain_warmup: bool = Field(
        False,
        description="Compute one explanation before the service reports ready, so the first user does not "
        "pay for loading TensorFlow (integrated gradients).",
        examples=[True],
    )

    reload_poll_seconds: float = Field(
        10.0,
        ge=0.0,
        description="Seconds between looks at the store for a newer version; 0 never looks. Ignored when "
        "`MNIST_MODEL_VERSION` pins a version.",
        examples=[60],
    )
    drift_interval_seconds: float = Field(
        5.0,
        ge=0.0,
        description="Seconds between two computations of the input-drift statistic of each version's "
        "window of recent digits, in a thread of each worker (docs/drift.md); 0 never computes it.",
        examples=[30],
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for the `/admin` routes (at least 16 characters); unset disables them.",
        examples=["3f9a7c0e5d1b8a2f4e6c9d0b"],
    )

    api_keys_file: Path | None = Field(
        None,
        description="API keys for the inference routes: a file of `name:key` lines or a JSON object, "
        "re-read when it changes. Unset: the API is open. Health, metrics, docs and the page are always "
        "open.",
        examples=[Path("/etc/mnist-serve/api-keys.txt")],
    )
    api_key_rate_per_second: float = Field(
        0.0,
        ge=0.0,
        description="Requests per second each key may make on average, per worker; 0 means no limit.",
        examples=[50],
    )
    api_key_rate_burst: int = Field(
        20, ge=1, description="Requests a key may make at once above its rate.", examples=[100]
    )

    otlp_endpoint: str | None = Field(
        None,
        description="Export a trace of each request over OTLP/HTTP to this endpoint; unset: no tracing.",
        examples=["http://collector:4318/v1/traces"],
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (CORS), comma-separated or a JSON list; "
        "empty: no cross-origin access; `*` allows any origin.",
        examples=[["https://app.example.com", "http://localhost:3000"]],
    )

    prediction_log: bool = Field(
        True,
        description="Keep every answer (the 28x28 input, probabilities, digit, verdict, version, route, API "
        "key name) in the database, for `/feedback`, `/monitoring` and the training export; `off` keeps "
        "nothing and removes those routes.",
        examples=[False],
    )
    database_migrate: bool = Field(
        True,
        description="Bring the database's schema up to date at startup; off, a schema behind this code is "
        "refused and `python -m app.records upgrade` does it.",
        examples=[False],
    )
    prediction_log_queue_size: int = Field(
        10_000,
        ge=1,
        description="Answers a worker holds for the log's writer; beyond, new answers are not logged "
        "(counted in `mnist_prediction_log_dropped_total`). A worker killed outright loses at most these.",
        examples=[50000],
    )
    prediction_log_retention_days: float = Field(
        30.0,
        ge=0.0,
        description="Days an answer (and its feedback) is kept; 0 keeps them until deleted.",
        examples=[7],
    )
    prediction_log_max_rows: int = Field(
        0,
        ge=0,
        description="Answers kept at most, the oldest pruned first; 0 means no limit.",
        examples=[1000000],
    )

    def runtime_choice(self) -> RuntimeChoice:
        threads = self.runtime_threads or max(1, len(os.sched_getaffinity(0)) // self.workers)
        return RuntimeChoice(self.runtime, threads, self.precision)

    @field_validator("runtime", "explain_method")
    @classmethod
    def _keras_where_needed(cls, value: str) -> str:
        if value in ("tensorflow", "integrated_gradients") and not keras_installed():
            raise ValueError(f"{value} needs Keras and TensorFlow, not installed here: {INSTALL_KERAS_HINT}")
        return value

    @field_validator("precision")
    @classmethod
    def _int8_on_onnx_runtime(cls, value: str, info: ValidationInfo) -> str:
        if value == "int8" and info.data.get("runtime") == "tensorflow":
            raise ValueError(
                "int8 runs on ONNX Runtime only: set MNIST_RUNTIME=onnxruntime, or leave this auto"
            )
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_must_be_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (try: openssl rand -hex 24)")
        return value

    @field_validator("cors_origins", "loaded_versions", mode="before")
    @classmethod
    def _list_from_text(cls, value: object) -> object:
        """A list setting as the shell writes it: `a,b` (the form the docs show) or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [item.strip() for item in text.split(",") if item.strip()]
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

    @field_validator("log_level", "runtime", "precision", "explain_method", mode="before")
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
