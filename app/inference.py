"""The inference path: a compiled forward pass and a dynamic batcher in front of it.

Concurrent requests are queued and a single worker thread runs them through the model together, the
way Triton and TF Serving batch: whatever is waiting (up to `max_batch` images, optionally waiting
up to `max_delay` for more) goes in one forward pass. Inference never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model_store.preprocessing import IMAGE_SIDE, to_model_input
from model_store.store import LoadedModel

log = logging.getLogger(__name__)


class OverloadedError(Exception):
    """The queue is full; the caller should retry later (503 with Retry-After)."""


@dataclass(frozen=True)
class ServingModel:
    """A loaded store version with its compiled forward pass."""

    loaded: LoadedModel
    forward_float: Callable[[tf.Tensor], tf.Tensor]

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> int:
        return self.loaded.version

    @classmethod
    def compile(cls, loaded: LoadedModel, warmup_batch_sizes: tuple[int, ...] = (1, 64)) -> ServingModel:
        model = loaded.model
        shape = [None, *loaded.metadata.input.shape]

        # One graph for every batch size: the signature's None dimension means no retracing.
        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def forward_float(x: tf.Tensor) -> tf.Tensor:
            return model(x, training=False)

        serving = cls(loaded=loaded, forward_float=forward_float)
        for size in warmup_batch_sizes:
            serving.forward(np.zeros((size, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))
        return serving

    def forward(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28) in MNIST polarity -> softmax probabilities (N, 10), float32."""
        batch = to_model_input(images, self.loaded.metadata.input)
        return self.forward_float(tf.constant(batch)).numpy()


class ModelHolder:
    """The version being served. Swapping it is one reference assignment, so it is atomic:
    a batch already running finishes on the model it started with."""

    def __init__(self, serving: ServingModel) -> None:
        self.current = serving


@dataclass(frozen=True)
class BatchResult:
    probabilities: np.ndarray  # (N, 10)
    model: ServingModel


@dataclass
class _Job:
    images: np.ndarray
    future: concurrent.futures.Future[BatchResult]
    enqueued: float


BatchObserver = Callable[[int, float], None]  # (images in the forward pass, seconds queued)


class Batcher:
    def __init__(
        self,
        holder: ModelHolder,
        max_batch: int,
        max_delay_seconds: float,
        max_queued_images: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self._holder = holder
        self._max_batch = max_batch
        self._max_delay = max_delay_seconds
        self._max_queued = max_queued_images
        self._observer = observer
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._queued_images = 0
        self._lock = threading.Lock()
        self._carry: _Job | None = None
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    async def predict(self, images: np.ndarray) -> BatchResult:
        return await asyncio.wrap_future(self.submit(images))

    def submit(self, images: np.ndarray) -> concurrent.futures.Future[BatchResult]:
        count = len(images)
        with self._lock:
            # A request larger than the whole queue is still taken when the queue is empty.
            if self._queued_images and self._queued_images + count > self._max_queued:
                raise OverloadedError(f"{self._queued_images} images are already queued")
            self._queued_images += count
        job = _Job(images, concurrent.futures.Future(), time.perf_counter())
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _next_job(self, timeout: float | None) -> _Job | None:
        if self._carry is not None:
            job, self._carry = self._carry, None
            return job
        if timeout is not None and timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def _gather(self, first: _Job) -> list[_Job]:
        """Take the jobs waiting now (and, with a delay set, those arriving soon) up to max_batch."""
        jobs, count = [first], len(first.images)
        deadline = first.enqueued + self._max_delay
        while count < self._max_batch:
            try:
                job = self._next_job(deadline - time.perf_counter())
            except queue.Empty:
                break
            if job is None:  # close() was called: finish this batch, then stop
                self._queue.put(None)
                break
            if count + len(job.images) > self._max_batch:
                self._carry = job
                break
            jobs.append(job)
            count += len(job.images)
        return jobs

    def _run(self) -> None:
        while True:
            first = self._next_job(None)
            if first is None:
                return
            jobs = self._gather(first)
            with self._lock:
                self._queued_images -= sum(len(job.images) for job in jobs)
            self._execute(jobs)

    def _execute(self, jobs: list[_Job]) -> None:
        model = self._holder.current
        started = time.perf_counter()
        try:
            probabilities = model.forward(np.concatenate([job.images for job in jobs]))
        except Exception:
            if len(jobs) > 1:
                # One bad job must not fail its neighbours: run each on its own.
                for job in jobs:
                    self._execute([job])
                return
            log.exception("forward pass failed")
            jobs[0].future.set_exception(RuntimeError("the model failed on this input"))
            return
        if self._observer is not None:
            self._observer(len(probabilities), started - jobs[0].enqueued)
        offset = 0
        for job in jobs:
            size = len(job.images)
            job.future.set_result(BatchResult(probabilities[offset : offset + size], model))
            offset += size


class DirectPredictor:
    """Batching turned off: each request runs its own forward pass in the thread pool."""

    def __init__(self, holder: ModelHolder) -> None:
        self._holder = holder

    async def predict(self, images: np.ndarray) -> BatchResult:
        model = self._holder.current
        probabilities = await asyncio.to_thread(model.forward, images)
        return BatchResult(probabilities, model)

    def close(self, timeout: float = 0.0) -> None:
        pass
