"""The inference path: a compiled forward pass and a dynamic batcher in front of it.

Concurrent requests are queued and run through the model together, the way Triton and TF Serving
batch: whatever is waiting (up to `max_batch` images, optionally waiting up to `max_delay` for
more) goes in one forward pass, on a thread of its own. Inference never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model_store.metadata import ModelMetadata
from model_store.preprocessing import IMAGE_SIDE, NUM_CLASSES, to_model_input
from model_store.store import LoadedModel
from model_store.trust import (
    TRUST_STATISTICS_FILE,
    UNCALIBRATED,
    VERDICTS,
    ClassStatistics,
    TrustRule,
    Verdict,
    judge,
    penultimate,
)

log = logging.getLogger(__name__)


class OverloadedError(Exception):
    """The queue is full; the caller should retry later (503 with Retry-After)."""


Forward = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class ServingModel:
    """A loaded store version with its compiled forward pass and the rule for its verdicts."""

    loaded: LoadedModel
    forward_float: Forward  # model input -> (probabilities, logits, penultimate features)
    rule: TrustRule
    statistics: ClassStatistics | None

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
        features_model, last = penultimate(model)

        # One graph for every batch size: the signature's None dimension means no retracing. The
        # features come out of the same pass; the logits are the last layer before its softmax.
        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def forward_float(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            features = features_model(x, training=False)
            logits = tf.matmul(features, last.kernel) + last.bias
            return tf.nn.softmax(logits), logits, features

        rule, statistics = trust_rule(loaded)
        serving = cls(loaded=loaded, forward_float=forward_float, rule=rule, statistics=statistics)
        for size in warmup_batch_sizes:
            serving.answer(np.zeros((size, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8))
        return serving

    def forward(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28) in MNIST polarity -> softmax probabilities (N, 10), float32."""
        batch = to_model_input(images, self.loaded.metadata.input)
        return self.forward_float(tf.constant(batch))[0].numpy()

    def answer(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28) -> rows (N, 12): the 10 probabilities, the calibrated confidence
        and the index of the verdict in VERDICTS. One array, so a batch splits by plain slicing."""
        batch = to_model_input(images, self.loaded.metadata.input)
        probabilities, logits, features = (t.numpy() for t in self.forward_float(tf.constant(batch)))
        judgement = judge(images, logits, features, self.rule, self.statistics)
        return np.column_stack([probabilities, judgement.confidence, judgement.codes]).astype(np.float32)


def trust_rule(loaded: LoadedModel) -> tuple[TrustRule, ClassStatistics | None]:
    """The version's verdict rule; a version published without one gets `UNCALIBRATED`."""
    metadata: ModelMetadata = loaded.metadata
    if metadata.trust is None:
        return UNCALIBRATED, None
    statistics = None
    if metadata.trust.method == "mahalanobis":
        statistics = ClassStatistics.load(loaded.path / TRUST_STATISTICS_FILE)
    return TrustRule.model_validate(
        metadata.trust.model_dump(include=set(TrustRule.model_fields))
    ), statistics


class ModelHolder:
    """The version being served. Swapping it is one reference assignment, so it is atomic:
    a batch already running finishes on the model it started with."""

    def __init__(self, serving: ServingModel) -> None:
        self.current = serving


@dataclass(frozen=True)
class BatchResult:
    rows: np.ndarray  # (N, 12), as `ServingModel.answer` returns them
    model: ServingModel

    @property
    def probabilities(self) -> np.ndarray:
        return self.rows[:, :NUM_CLASSES]

    @property
    def calibrated_confidence(self) -> np.ndarray:
        return self.rows[:, NUM_CLASSES]

    @property
    def verdicts(self) -> list[Verdict]:
        return [VERDICTS[int(code)] for code in self.rows[:, NUM_CLASSES + 1]]


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued: float


BatchObserver = Callable[[int, float], None]  # (images in the forward pass, seconds queued)


class Batcher:
    """Requests wait in a queue on the event loop; one task takes what is waiting as a batch and
    runs it on the single forward-pass thread. While a batch computes, the next one gathers, so
    under load batches grow by themselves, and one thread hop is paid per batch, not per request.
    """

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
        self._waiting: deque[_Job] = deque()
        self._queued_images = 0
        self._work = asyncio.Event()
        self._forward_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._task: asyncio.Task[None] | None = None

    async def predict(self, images: np.ndarray) -> BatchResult:
        # A request larger than the whole queue is still taken when the queue is empty.
        if self._queued_images and self._queued_images + len(images) > self._max_queued:
            raise OverloadedError(f"{self._queued_images} images are already queued")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")
        job = _Job(images, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._waiting.append(job)
        self._queued_images += len(images)
        self._work.set()
        return await job.future

    def close(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            self._task.cancel()
        self._forward_thread.shutdown(wait=True, cancel_futures=False)

    def _take_batch(self) -> list[_Job]:
        """The oldest job, plus following ones while they fit in max_batch images."""
        jobs = [self._waiting.popleft()]
        count = len(jobs[0].images)
        while self._waiting and count + len(self._waiting[0].images) <= self._max_batch:
            job = self._waiting.popleft()
            jobs.append(job)
            count += len(job.images)
        self._queued_images -= count
        return jobs

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._waiting:
                if self._max_delay and self._queued_images < self._max_batch:
                    # Optionally hold the batch open a little for requests about to arrive.
                    remaining = self._waiting[0].enqueued + self._max_delay - time.perf_counter()
                    if remaining > 0:
                        await asyncio.sleep(remaining)
                await self._execute(self._take_batch())

    async def _execute(self, jobs: list[_Job]) -> None:
        model = self._holder.current
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            batch = jobs[0].images if len(jobs) == 1 else np.concatenate([job.images for job in jobs])
            probabilities = await loop.run_in_executor(self._forward_thread, model.answer, batch)
        except Exception:
            if len(jobs) > 1:
                # One bad job must not fail its neighbours: run each on its own.
                for job in jobs:
                    await self._execute([job])
                return
            log.exception("forward pass failed")
            if not jobs[0].future.done():
                jobs[0].future.set_exception(RuntimeError("the model failed on this input"))
            return
        if self._observer is not None:
            self._observer(len(probabilities), started - jobs[0].enqueued)
        offset = 0
        for job in jobs:
            size = len(job.images)
            if not job.future.done():  # the client may have gone away
                job.future.set_result(BatchResult(probabilities[offset : offset + size], model))
            offset += size


class DirectPredictor:
    """Batching turned off: each request runs its own forward pass in the thread pool."""

    def __init__(self, holder: ModelHolder) -> None:
        self._holder = holder

    async def predict(self, images: np.ndarray) -> BatchResult:
        model = self._holder.current
        rows = await asyncio.to_thread(model.answer, images)
        return BatchResult(rows, model)

    def close(self, timeout: float = 0.0) -> None:
        pass
