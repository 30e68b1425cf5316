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
from threadpoolctl import threadpool_limits

from app import __version__
from app.api.deps import require_api_key
from app.api.errors import install_error_handlers
from app.api.routes import admin, feedback, health, kserve_v1, model, monitoring, ops, predict, testset, v2
from app.api.routes.web import mount_web
from app.config import Settings, get_settings
from app.grpc.server import GrpcServer
from app.operations.api_keys import ApiKeys
from app.operations.body_limit import BodySizeLimit
from app.operations.logs import configure_logging
from app.operations.metrics import Metrics
from app.operations.rate_limit import RateLimiter
from app.operations.request_observer import RequestObserver
from app.operations.tracing import TracingMiddleware, otlp_provider, tracer_of
from app.records.lifecycle import open_prediction_log
from app.serving.batcher import Batcher, DirectPredictor
from app.serving.drift import DriftMonitor
from app.serving.explain import ExplainService
from app.serving.model import ModelHolder
from app.serving.state import Predictor, ServiceState
from app.serving.versions import VersionManager, described, load_serving_model, serving_policy
from app.startup import record_startup_failure
from model_store.mnist_data import DatasetError, load_split
from model_store.runtimes import keras_installed
from model_store.store import ModelStoreError

log = logging.getLogger("app")


def configure_tensorflow(threads: int) -> None:
    if not threads or not keras_installed():
        return  # not imported for nothing: serving on ONNX Runtime needs no TensorFlow
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def start_service(settings: Settings, metrics: Metrics) -> ServiceState:
    """Load and warm up the model, open the test set, start the batcher. Raises if no model."""
    configure_tensorflow(settings.tf_threads)
    store = settings.open_store()
    started = time.perf_counter()
    try:
        policy = serving_policy(store, settings.model_version)
        serving = load_serving_model(
            store, policy.version, settings.batch_max_size, settings.runtime_choice()
        )
    except ModelStoreError:
        metrics.load_failures.inc()
        raise
    holder = ModelHolder(serving)
    metrics.set_model(serving.name, serving.version)
    metrics.runtime_threads.set(settings.runtime_choice().threads)
    drift = DriftMonitor(metrics)
    drift.track(serving.loaded)
    manager = VersionManager(
        store,
        holder,
        metrics,
        drift,
        settings.model_version,
        settings.batch_max_size,
        keep_newest=settings.loaded_newest,
        keep_versions=tuple(settings.loaded_versions),
        runtime=settings.runtime_choice(),
    )
    manager.note_loaded(serving, time.perf_counter() - started)
    predictor: Predictor
    if settings.batching_enabled:
        predictor = Batcher(
            holder,
            max_batch=settings.batch_max_size,
            max_delay_seconds=settings.batch_max_delay_ms / 1000,
            max_queued_images=settings.batch_queue_size,
            observer=metrics.observe_batch,
        )
    else:
        predictor = DirectPredictor(holder, settings.batch_max_size)
    test_set, test_set_error = None, None
    try:
        test_set = load_split(settings.data_dir, "test")
    except DatasetError as exc:
        test_set_error = str(exc)
        log.warning("test-set routes disabled: %s", exc)
    log.info(
        "serving %s %s from %s (pid %s)", serving.name, described(serving), serving.loaded.path, os.getpid()
    )
    explainer = ExplainService(settings.explain_concurrency, settings.explain_method)
    if settings.explain_warmup:
        explainer.explainer(serving).explain(np.zeros((1, *serving.loaded.metadata.input.shape), np.float32))
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
            async with serving(app):
                yield

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
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
        gc.set_threshold(settings.gc_threshold, *collector_thresholds[1:])
        grpc_server = None
        if settings.grpc_port:
            # In every worker, on its event loop: the same versions and batcher as HTTP.
            grpc_server = GrpcServer(state, settings.grpc_host or settings.host, settings.grpc_port)
            await grpc_server.start()
        polling = None
        if settings.reload_poll_seconds and settings.model_version is None:
            polling = asyncio.create_task(state.manager.poll(settings.reload_poll_seconds))
        drift_updates = None
        if settings.drift_interval_seconds:
            drift_updates = asyncio.create_task(state.drift.run(settings.drift_interval_seconds))
        yield
        if grpc_server is not None:
            # uvicorn has drained HTTP by now; the gRPC calls in flight get the same grace.
            await grpc_server.stop(settings.graceful_shutdown_seconds)
        for task in (polling, drift_updates):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        gc.set_threshold(*collector_thresholds)
        state.predictor.close()
        state.explainer.close()
        if state.records is not None:
            # What is still queued gets the same grace as the requests in flight.
            await asyncio.to_thread(state.records.close, settings.graceful_shutdown_seconds)
        if tracer_provider is not None:
            tracer_provider.force_flush()

    app = FastAPI(
        title="mnist-serve",
        version=__version__,
        summary="Handwritten-digit recognition over HTTP: a Keras model trained on MNIST.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
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
    mount_web(app)
    return app
