"""The FastAPI application: built by `create_app`, model loaded once in the lifespan.

uvicorn app.main:create_app --factory
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.errors import install_error_handlers
from app.inference import Batcher, DirectPredictor, ModelHolder, ServingModel
from app.middleware import BodySizeLimit
from app.routes import health, model, predict, testset
from app.routes.web import mount_web
from app.state import Predictor, ServiceState
from model_store.mnist_data import DatasetError, load_split
from model_store.store import ModelStore

log = logging.getLogger("app")


def configure_tensorflow(threads: int) -> None:
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def start_service(settings: Settings) -> ServiceState:
    """Load and warm up the model, open the test set, start the batcher. Raises if no model."""
    configure_tensorflow(settings.tf_threads)
    store = ModelStore(settings.model_store, settings.model_name)
    loaded = store.load(settings.model_version)
    holder = ModelHolder(ServingModel.compile(loaded, warmup_batch_sizes=(1, settings.batch_max_size)))
    predictor: Predictor
    if settings.batching_enabled:
        predictor = Batcher(
            holder,
            max_batch=settings.batch_max_size,
            max_delay_seconds=settings.batch_max_delay_ms / 1000,
            max_queued_images=settings.batch_queue_size,
        )
    else:
        predictor = DirectPredictor(holder)
    test_set, test_set_error = None, None
    try:
        test_set = load_split(settings.data_dir, "test")
    except DatasetError as exc:
        test_set_error = str(exc)
        log.warning("test-set routes disabled: %s", exc)
    log.info("serving %s version %s from %s (pid %s)", loaded.name, loaded.version, loaded.path, os.getpid())
    return ServiceState(settings, holder, predictor, test_set, test_set_error)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A missing or broken model raises here: uvicorn logs it and exits non-zero.
        state = start_service(settings)
        app.state.service = state
        yield
        state.predictor.close()

    app = FastAPI(
        title="mnist-serve",
        version="0.1.0",
        summary="Handwritten-digit recognition over HTTP: a Keras model trained on MNIST.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    for router in (predict.router, testset.router, model.router, health.router):
        app.include_router(router)
    mount_web(app)
    return app
