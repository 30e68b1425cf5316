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

from app.serving.runtimes import Precision, Runtime, RuntimeChoice
from model_store.forward import INSTALL_KERAS_HINT, keras_installed
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
    loaded_versions: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Also load these versions (comma-separated or a JSON list), each answering on "
        "`?version=` and on `/v2/models/<name>/versions/<v>/infer`. The default version is always loaded.",
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

    batching_enabled: bool = Field(
        True,
        description="Gather concurrent requests into one forward pass (dynamic batching).",
        examples=[False],
    )
    batch_max_size: int = Field(128, ge=1, description="Images in one forward pass at most.", examples=[64])
    batch_queue_size: int = Field(
        2048,
        ge=1,
        description="Images waiting for a forward pass before new requests get 503 with Retry-After; a "
        "large request weighs as one full batch.",
        examples=[512],
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
        description="ONNX Runtime's threads per worker, and TensorFlow's where it runs; 0 shares the cores "
        "this process may use among the workers.",
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

    rollout: Literal["manual", "auto"] = Field(
        "manual",
        description="`auto`: a new version becomes a canary for `MNIST_ROLLOUT_CANARY_PERCENT` % of clients "
        "and is promoted or rolled back by itself, from the live accuracy its answers' feedback shows "
        "against the default version's (docs/loop.md, Automatic rollout); needs the prediction log. "
        "`manual`: the newest version is served at once, canaries are the operator's.",
        examples=["auto"],
    )
    rollout_canary_percent: float = Field(
        10.0,
        gt=0.0,
        le=50.0,
        description="Share of clients an automatic canary answers (by a hash of the API key or request id).",
        examples=[5],
    )
    rollout_min_feedback: int = Field(
        200,
        ge=1,
        description="Feedback on a canary's answers before it may be promoted.",
        examples=[500],
    )
    rollout_max_feedback: int = Field(
        2000,
        ge=1,
        description="Feedback on a canary's answers after which, not yet proven no worse than the default "
        "version, it is rolled back.",
        examples=[5000],
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

    @field_validator("rollout")
    @classmethod
    def _auto_rollout_can_run(cls, value: str, info: ValidationInfo) -> str:
        """Auto needs the feedback it decides from, and a store it may change what is served from."""
        if value != "auto":
            return value
        if info.data.get("prediction_log") is False:
            raise ValueError(
                "auto needs the prediction log: set MNIST_PREDICTION_LOG=on, or MNIST_ROLLOUT=manual"
            )
        if info.data.get("model_version") is not None:
            raise ValueError(
                "auto cannot change what MNIST_MODEL_VERSION pins: unset it, or MNIST_ROLLOUT=manual"
            )
        if not info.data.get("reload_poll_seconds"):
            raise ValueError("auto decides at each look at the store: set MNIST_RELOAD_POLL_SECONDS above 0")
        return value

    @field_validator("rollout_max_feedback")
    @classmethod
    def _max_feedback_above_min(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("rollout_min_feedback")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be at least MNIST_ROLLOUT_MIN_FEEDBACK ({minimum})")
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

    @field_validator("log_level", "runtime", "precision", "explain_method", "rollout", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model_version", mode="before")
    @classmethod
    def _blank_version_means_newest(cls, value: object) -> object:
        if value in ("", None, "latest"):
            return None
        return parse_version(value)  # type: ignore[arg-type]


# The service's settings by purpose: the order and headings of docs/configuration.md. A new setting
# joins one of them (a test fails until it does).
SETTING_GROUPS: dict[str, tuple[str, ...]] = {
    "Model and versions": ("model_version", "loaded_versions", "reload_poll_seconds"),
    "Network and processes": ("host", "port", "grpc_port", "workers", "graceful_shutdown_seconds"),
    "Serving and batching": (
        "runtime",
        "precision",
        "runtime_threads",
        "batching_enabled",
        "batch_max_size",
        "batch_queue_size",
        "explain_method",
        "explain_concurrency",
    ),
    "Request limits": ("max_upload_bytes", "max_image_pixels", "max_batch_images", "max_array_images"),
    "Security": (
        "admin_token",
        "api_keys_file",
        "api_key_rate_per_second",
        "api_key_rate_burst",
        "cors_origins",
    ),
    "Observability": ("log_level", "log_json", "otlp_endpoint", "drift_interval_seconds"),
    "Prediction log": (
        "prediction_log",
        "database_migrate",
        "prediction_log_queue_size",
        "prediction_log_retention_days",
        "prediction_log_max_rows",
    ),
    "Automatic rollout": (
        "rollout",
        "rollout_canary_percent",
        "rollout_min_feedback",
        "rollout_max_feedback",
    ),
}


@lru_cache
def get_settings() -> Settings:
    return Settings()
