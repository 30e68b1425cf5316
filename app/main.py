"""The FastAPI application: built by `create_app`, model loaded once in the lifespan.

uvicorn app.main:create_app --factory

`create_app` changes nothing in the process that outlives its lifespan, so tests and other programs
can embed it; `mnist-serve` starts its workers through `app.cli.worker_app`, which also tunes the
process for serving alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from threadpoolctl import threadpool_limits

from app import __version__
from app.api.deps import require_api_key
from app.api.errors import install_error_handlers
from app.api.routes import (
    admin,
    feedback,
    health,
    kserve_v1,
    model,
    monitoring,
    ops,
    predict,
    rollouts,
    testset,
    v2,
)
from app.api.routes.web import mount_web
from app.config import Settings, get_settings
from app.grpc.server import GrpcServer
from app.operations.api_keys import ApiKeys
from app.operations.body_limit import BodySizeLimit
from app.operations.logs import configure_logging, flush_logs
from app.operations.metrics import Metrics
from app.operations.rate_limit import RateLimiter
from app.operations.request_observer import RequestObserver
from app.operations.rollout_metrics import RolloutMetrics
from app.operations.tracing import TracingMiddleware, otlp_provider, tracer_of
from app.records.lifecycle import open_prediction_log
from app.serving.batcher import Batcher, DirectPredictor
from app.serving.drift import DriftMonitor
from app.serving.explain import ExplainService
from app.serving.model import ModelHolder, ServingModel
from app.serving.rollout import RolloutController
from app.serving.state import Predictor, ServiceState
from app.serving.versions import VersionManager, described, load_serving_model, serving_policy
from app.startup import record_startup_failure
from model_store.forward import keras_installed
from model_store.mnist_data import DatasetError, MnistSplit, load_split
from model_store.store import ModelStore, ModelStoreError

log = logging.getLogger("app")

# Allocations between collections of the garbage collector's youngest generation while the service
# runs. Python's 700 walks the objects of every request in flight several times per request, objects
# that reference counting frees anyway (docs/performance.md); 20,000 measured no slower anywhere.
GC_THRESHOLD = 20_000
# How long a batch waits for more requests: not at all. The next forward pass starts as soon as the
# runtime is free, and the requests that arrive meanwhile share it, so waiting only adds latency.
BATCH_MAX_DELAY_SECONDS = 0.0


def configure_tensorflow(settings: Settings) -> None:
    """TensorFlow gets the threads ONNX Runtime gets (one per core this worker may use), where the
    settings ask for it: serving on ONNX Runtime with occlusion never imports it."""
    wanted = settings.runtime == "tensorflow" or settings.explain_method == "integrated_gradients"
    if not wanted or not keras_installed():
        return
    import tensorflow as tf

    threads = settings.runtime_choice().threads
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a program embedding the app ran TensorFlow before: its pools stay as they are
        log.info("TensorFlow already initialised; its thread pools keep their size")


def start_service(settings: Settings, metrics: Metrics) -> ServiceState:
    """Load and warm up the model, open the test set, start the batcher. Raises if no model."""
    configure_tensorflow(settings)
    store = settings.open_store()
    started = time.perf_counter()
    serving = load_default_version(settings, store, metrics)
    holder = ModelHolder(serving)
    drift = DriftMonitor(metrics)
    drift.track(serving.loaded)
    manager = VersionManager(
        store,
        holder,
        metrics,
        drift,
        settings.model_version,
        settings.batch_max_size,
        keep_versions=tuple(settings.loaded_versions),
        runtime=settings.runtime_choice(),
    )
    manager.note_loaded(serving, time.perf_counter() - started)
    predictor = start_predictor(settings, holder, metrics)
    test_set, test_set_error = open_test_set(settings)
    log.info(
        "serving %s %s from %s (pid %s)", serving.name, described(serving), serving.loaded.path, os.getpid()
    )
    explainer = start_explainer(settings, serving)
    state = ServiceState(
        settings, holder, predictor, manager, metrics, explainer, drift, test_set, test_set_error
    )
    if settings.prediction_log:
        state.records = open_prediction_log(settings, metrics)
    if settings.api_keys_file is not None:
        state.api_keys = ApiKeys(settings.api_keys_file)
        if settings.api_key_rate_per_second:
            state.rate_limiter = RateLimiter(settings.api_key_rate_per_second, settings.api_key_rate_burst)
    return state


def load_default_version(settings: Settings, store: ModelStore, metrics: Metrics) -> ServingModel:
    """The version the policy serves, loaded, compiled and warmed up; counted if it fails."""
    try:
        policy = serving_policy(store, settings.model_version)
        serving = load_serving_model(
            store, policy.version, settings.batch_max_size, settings.runtime_choice()
        )
    except ModelStoreError:
        metrics.load_failures.inc()
        raise
    metrics.set_model(serving.name, serving.version)
    metrics.runtime_threads.set(settings.runtime_choice().threads)
    return serving


def start_predictor(settings: Settings, holder: ModelHolder, metrics: Metrics) -> Predictor:
    """The batcher, or one forward pass per request when batching is off."""
    if not settings.batching_enabled:
        return DirectPredictor(holder, settings.batch_max_size)
    return Batcher(
        holder,
        max_batch=settings.batch_max_size,
        max_delay_seconds=BATCH_MAX_DELAY_SECONDS,
        max_queued_images=settings.batch_queue_size,
        observer=metrics.observe_batch,
    )


def open_test_set(settings: Settings) -> tuple[MnistSplit | None, str | None]:
    """The MNIST test split for the `/test` routes, or why they are off."""
    try:
        return load_split(settings.data_dir, "test"), None
    except DatasetError as exc:
        log.warning("test-set routes disabled: %s", exc)
        return None, str(exc)


def start_explainer(settings: Settings, serving: ServingModel) -> ExplainService:
    explainer = ExplainService(settings.explain_concurrency, settings.explain_method)
    if settings.explain_method == "integrated_gradients":
        # Imports TensorFlow and traces the gradients before ready, not during a user's first
        # explanation (seconds); occlusion runs on the warmed forward pass and needs nothing.
        explainer.explainer(serving).explain(np.zeros((1, *serving.loaded.metadata.input.shape), np.float32))
    return explainer


def start_rollout(settings: Settings, state: ServiceState, metrics: Metrics) -> RolloutController:
    """The automatic rollout's controller, on the prediction log's database."""
    assert state.records is not None
    return RolloutController(
        state.manager,
        state.records.engine,
        RolloutMetrics(metrics.registry),
        state.tracer,
        settings.rollout_canary_percent,
        settings.rollout_min_feedback,
        settings.rollout_max_feedback,
    )


def create_app(settings: Settings | None = None, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The app; `tracer_provider` replaces the OTLP export that MNIST_OTLP_ENDPOINT turns on."""
    settings = settings or get_settings()
    configure_logging(settings.log_json, settings.log_level)
    metrics = Metrics()
    if tracer_provider is None and settings.otlp_endpoint:
        tracer_provider = otlp_provider(settings.otlp_endpoint)
    tracer = tracer_of(tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The verdict's matrix products are small: BLAS threads would only fight the runtime's
        # threads and the other workers for the cores (docs/performance.md, "Measured"). The limit
        # is the process's, so it holds while the service runs and the previous one comes back after.
        with threadpool_limits(1, user_api="blas"):
            async with serving(app, settings, metrics, tracer):
                yield
            if tracer_provider is not None:
                tracer_provider.force_flush()
            await asyncio.to_thread(flush_logs)

    app = FastAPI(
        title="mnist-serve",
        version=__version__,
        summary="Handwritten-digit recognition over HTTP: a Keras model trained on MNIST.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    add_middleware(app, settings, metrics, tracer)
    include_routers(app, settings)
    mount_web(app)
    return app


@asynccontextmanager
async def serving(
    app: FastAPI, settings: Settings, metrics: Metrics, tracer: Tracer | None
) -> AsyncIterator[None]:
    """The service state on `app.state` while the app runs, with its gRPC server and background
    tasks; everything stopped and closed, in order, when it ends."""
    # A missing or broken model raises here: uvicorn logs it and exits non-zero.
    try:
        state = await asyncio.to_thread(start_service, settings, metrics)
    except Exception as exc:
        record_startup_failure(exc)
        raise
    # The versions loaded beside the default, before the port opens.
    await state.manager.reconcile()
    state.tracer = tracer
    app.state.service = state
    collector_thresholds = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, *collector_thresholds[1:])
    grpc_server = None
    if settings.grpc_port:
        # In every worker, on its event loop: the same versions and batcher as HTTP.
        grpc_server = GrpcServer(state, settings.host, settings.grpc_port)
        await grpc_server.start()
    tasks = start_background_tasks(state, settings)
    if settings.rollout == "auto":  # the settings refuse auto without the prediction log
        state.rollout = start_rollout(settings, state, metrics)
        await state.rollout.tick()  # before the port opens: the stable version is pinned
        tasks.append(asyncio.create_task(state.rollout.run(settings.reload_poll_seconds)))
    yield
    if grpc_server is not None:
        # uvicorn has drained HTTP by now; the gRPC calls in flight get the same grace.
        await grpc_server.stop(settings.graceful_shutdown_seconds)
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    gc.set_threshold(*collector_thresholds)
    state.predictor.close()
    state.explainer.close()
    if state.records is not None:
        # What is still queued gets the same grace as the requests in flight.
        await asyncio.to_thread(state.records.close, settings.graceful_shutdown_seconds)


def start_background_tasks(state: ServiceState, settings: Settings) -> list[asyncio.Task[None]]:
    """Polling the store for new versions (unless one is pinned) and the drift statistic."""
    tasks = []
    if settings.reload_poll_seconds and settings.model_version is None:
        tasks.append(asyncio.create_task(state.manager.poll(settings.reload_poll_seconds)))
    if settings.drift_interval_seconds:
        tasks.append(asyncio.create_task(state.drift.run(settings.drift_interval_seconds)))
    return tasks


def add_middleware(app: FastAPI, settings: Settings, metrics: Metrics, tracer: Tracer | None) -> None:
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    if tracer is not None:
        app.add_middleware(TracingMiddleware, tracer=tracer)  # inside the observer: sees the request id
    app.add_middleware(RequestObserver, metrics=metrics)
    if settings.cors_origins:
        # Outermost: preflights are answered before the key check, and errors carry the headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-Id"],
            expose_headers=["X-Model-Version", "X-Request-Id", "Retry-After"],
            max_age=600,
        )


def include_routers(app: FastAPI, settings: Settings) -> None:
    # The inference routes; v2 puts the key check on its infer routes itself. Without a keys file
    # there is nothing to check, and the hot routes are spared the dependency.
    keyed = [Depends(require_api_key)] if settings.api_keys_file is not None else []
    for router in (predict.router, testset.router, kserve_v1.router):
        app.include_router(router, dependencies=keyed)
    for router in (model.router, health.router, ops.router, v2.router):
        app.include_router(router)
    if settings.prediction_log:
        app.include_router(feedback.router, dependencies=keyed)
        app.include_router(monitoring.router)
    if settings.admin_token is not None:
        app.include_router(admin.router)
        app.include_router(rollouts.router)
