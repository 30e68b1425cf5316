"""Dynamic batching in front of the model: concurrent requests share forward passes.

Concurrent requests are queued and run through the model together, the way Triton and TF Serving
batch: whatever is waiting (up to `max_batch` images, optionally waiting up to `max_delay` for
more) goes in one forward pass, on a thread of its own: a pass can take milliseconds, which the
event loop must spend on other requests. The one exception is a lone image at an idle service
whose version's single-image pass is measured to take microseconds (`INLINE_PASS_SECONDS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from app.serving.model import ModelHolder, ServingModel
from model_store.preprocessing import NUM_CLASSES
from model_store.trust import VERDICTS, Verdict

log = logging.getLogger(__name__)

# A lone image that finds the service idle is answered on the event loop when its version's
# single-image forward pass is measured to take at most this long, far from a millisecond. The hop
# to the forward thread and back costs more than such a pass: about 65 us of wall time around an
# ONNX Runtime pass of 34 us for the fixture's `cnn` on 2 cores. Measured with `python -m bench.ab
# --scenario predict`, 5 alternating rounds against every pass on the thread: /predict answers
# 0.057 ms sooner at the p50 at one connection (0.560 ms against 0.617 ms) for 5.4 % less of the
# server's CPU per request; at 64 connections, where requests overlap and are batched, the rounds
# showed no clear difference.
INLINE_PASS_SECONDS = 0.0002
# How much a new single-image pass moves a version's estimate: a slow pass (a collection, a busy
# core) sends the next lone images to the thread until fast passes bring the estimate back down.
PASS_ESTIMATE_WEIGHT = 0.2


class OverloadedError(Exception):
    """The queue is full; the caller should retry later (503 with Retry-After)."""


@dataclass(frozen=True)
class ForwardPass:
    """One forward pass a request's images took part in (for tracing): its size and wall time."""

    images: int
    started_ns: int
    ended_ns: int


@dataclass(frozen=True)
class BatchResult:
    rows: np.ndarray  # (N, 12), as `ServingModel.answer` returns them
    model: ServingModel
    passes: tuple[ForwardPass, ...] = ()
    ids: tuple[str, ...] = ()  # each image's prediction id, given by `ServiceState.predict`

    @property
    def probabilities(self) -> np.ndarray:
        return self.rows[:, :NUM_CLASSES]

    @property
    def calibrated_confidence(self) -> np.ndarray:
        return self.rows[:, NUM_CLASSES]

    @property
    def verdicts(self) -> list[Verdict]:
        return [VERDICTS[int(code)] for code in self.rows[:, NUM_CLASSES + 1]]

    def verdict(self, index: int) -> Verdict:
        return VERDICTS[int(self.rows[index, NUM_CLASSES + 1])]


@dataclass(eq=False)
class _Job:
    """One request's images, answered by the model that was current when it arrived. A large job
    is cut into slices of at most `max_batch` images, which share forward passes with other jobs."""

    images: np.ndarray
    model: ServingModel
    future: asyncio.Future[BatchResult]
    enqueued: float
    dispatched: int = 0  # images handed to forward passes so far
    completed: int = 0
    rows: np.ndarray | None = None  # what `ServingModel.answer` gives, filled slice by slice
    passes: list[ForwardPass] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return len(self.images) - self.dispatched

    def fill(self, start: int, rows: np.ndarray) -> None:
        if len(rows) == len(self.images):
            self.rows = rows  # the whole job in one pass: no copy
        else:
            if self.rows is None:
                self.rows = np.empty((len(self.images), rows.shape[1]), rows.dtype)
            self.rows[start : start + len(rows)] = rows
        self.completed += len(rows)
        if self.completed == len(self.images) and not self.future.done():  # the client may be gone
            self.future.set_result(BatchResult(self.rows, self.model, tuple(self.passes)))


@dataclass(frozen=True)
class _Slice:
    job: _Job
    start: int
    stop: int

    @property
    def images(self) -> np.ndarray:
        return self.job.images[self.start : self.stop]


BatchObserver = Callable[[int, float], None]  # (images in the forward pass, seconds queued)


class Batcher:
    """Requests wait in a queue on the event loop; one task takes what is waiting as a batch and
    runs it on the single forward-pass thread. While a batch computes, the next one gathers, so
    under load batches grow by themselves, and one thread hop is paid per batch, not per request.

    A forward pass holds at most `max_batch` images, and every waiting job gets a fair share of
    each pass: a 10,000-image request moves on in slices while single images slip in beside it,
    so they wait for at most the pass in flight, never for the whole large request.

    A single image that finds the service idle is answered on the event loop itself when its
    version's single-image pass is measured to be fast (`INLINE_PASS_SECONDS`): the two thread hops
    would cost it more than its forward pass. Idle means no pass in flight, nothing waiting, and no
    other request reaching the batcher in the same turn of the loop (it yields once to find out),
    so under load, when requests overlap, they are still batched. A version's first single-image
    pass runs on the thread, which measures it.
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
        self._busy = False  # a forward pass is in flight on the forward thread
        self._idle_arrivals = 0  # single images deciding whether they are alone (see `_alone`)
        self._lone_pass_seconds: dict[tuple[str, int], float] = {}  # per version, see `_note_pass`

    @property
    def queued_images(self) -> int:
        """Images waiting for a forward pass (not counting the one running)."""
        return self._queued_images

    def _weight(self, images: int) -> int:
        """What a job weighs on the queue: its images, but at most one full pass, since it moves in
        fair slices and cannot hold up the jobs behind it for longer than that."""
        return min(images, self._max_batch)

    async def predict(self, images: np.ndarray, model: ServingModel | None = None) -> BatchResult:
        """Run `images` through `model` (default: the holder's current one), batched with others'."""
        # The bound protects latency; a request larger than the bound is still taken when the
        # queue is empty. A job weighs at most its images, so the exact sum is needed only near it.
        if self._queued_images + len(images) > self._max_queued:
            waiting = sum(self._weight(job.pending) for job in self._waiting)
            if waiting and waiting + self._weight(len(images)) > self._max_queued:
                raise OverloadedError(f"{self._queued_images} images are already queued")
        loop = asyncio.get_running_loop()
        model = model or self._holder.current
        if not len(images):
            return BatchResult(np.empty((0, NUM_CLASSES + 2), np.float32), model)
        if len(images) == 1 and not self._max_delay and self._fast_pass(model) and await self._alone():
            return self._answer_inline(images, model)
        if self._task is None:
            self._task = loop.create_task(self._run(), name="batcher")
        job = _Job(images, model, loop.create_future(), time.perf_counter())
        self._waiting.append(job)
        self._queued_images += len(images)
        self._work.set()
        return await job.future

    def _fast_pass(self, model: ServingModel) -> bool:
        estimate = self._lone_pass_seconds.get((model.name, model.version))
        return estimate is not None and estimate <= INLINE_PASS_SECONDS

    def _note_pass(self, model: ServingModel, images: int, seconds: float) -> None:
        """A moving estimate of the version's single-image pass, from the passes it runs."""
        if images != 1:
            return
        key = (model.name, model.version)
        estimate = self._lone_pass_seconds.get(key)
        self._lone_pass_seconds[key] = (
            seconds if estimate is None else estimate + PASS_ESTIMATE_WEIGHT * (seconds - estimate)
        )

    def _idle(self) -> bool:
        return not self._busy and not self._waiting

    async def _alone(self) -> bool:
        """Whether this image is the only work in sight. Requests that arrived together run one
        after another in the same turn of the loop; yielding once lets them all reach this point."""
        if not self._idle():
            return False
        self._idle_arrivals += 1
        try:
            await asyncio.sleep(0)
            return self._idle_arrivals == 1 and self._idle()
        finally:
            self._idle_arrivals -= 1

    def _answer_inline(self, images: np.ndarray, model: ServingModel) -> BatchResult:
        started_ns = time.time_ns()
        try:
            rows = model.answer(images)
        except Exception as exc:
            log.exception("forward pass failed")
            raise RuntimeError("the model failed on this input") from exc
        forward_pass = ForwardPass(1, started_ns, time.time_ns())
        self._note_pass(model, 1, (forward_pass.ended_ns - forward_pass.started_ns) / 1e9)
        if self._observer is not None:
            self._observer(1, 0.0)
        return BatchResult(rows, model, (forward_pass,))

    def close(self) -> None:
        """Stop taking batches and wait for the forward pass in flight to finish."""
        if self._task is not None:
            self._task.cancel()
        self._forward_thread.shutdown(wait=True, cancel_futures=False)

    def _drop(self, job: _Job) -> None:
        self._waiting.remove(job)
        self._queued_images -= job.pending
        job.dispatched = len(job.images)

    def _take_batch(self) -> list[_Slice]:
        """Up to max_batch images of the oldest job's model: first a fair share for every waiting
        job, oldest first, then what room is left to the oldest ones."""
        for job in [job for job in self._waiting if job.future.done()]:
            self._drop(job)  # its client went away
        if not self._waiting:
            return []
        model = self._waiting[0].model
        jobs = [job for job in self._waiting if job.model is model]
        room = self._max_batch
        share = max(1, room // len(jobs))
        taken: dict[_Job, int] = {}
        for limit in (share, room):
            for job in jobs:
                count = min(job.pending - taken.get(job, 0), limit, room)
                if count > 0:
                    taken[job] = taken.get(job, 0) + count
                    room -= count
        slices = []
        for job, count in taken.items():
            slices.append(_Slice(job, job.dispatched, job.dispatched + count))
            job.dispatched += count
            self._queued_images -= count
            if not job.pending:
                self._waiting.remove(job)
        return slices

    async def _hold_open(self) -> None:
        """Optionally hold the batch open for requests about to arrive, until it is full."""
        while self._waiting and self._queued_images < self._max_batch:
            remaining = self._waiting[0].enqueued + self._max_delay - time.perf_counter()
            if remaining <= 0:
                return
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), remaining)

    async def _run(self) -> None:
        while True:
            await self._work.wait()
            self._work.clear()
            while self._waiting:
                if self._max_delay:
                    await self._hold_open()
                slices = self._take_batch()
                if slices:
                    await self._execute(slices)

    async def _execute(self, slices: list[_Slice]) -> None:
        model = slices[0].job.model
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            parts = [piece.images for piece in slices]
            batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
            started_ns = time.time_ns()
            self._busy = True
            try:
                rows, seconds = await loop.run_in_executor(self._forward_thread, timed_answer, model, batch)
            finally:
                self._busy = False
            forward_pass = ForwardPass(len(batch), started_ns, time.time_ns())
            self._note_pass(model, len(batch), seconds)
        except Exception:
            if len(slices) > 1:
                # One bad job must not fail its neighbours: run each on its own.
                for piece in slices:
                    if not piece.job.future.done():
                        await self._execute([piece])
                return
            log.exception("forward pass failed")
            job = slices[0].job
            if job in self._waiting:
                self._drop(job)
            if not job.future.done():
                job.future.set_exception(RuntimeError("the model failed on this input"))
            return
        if self._observer is not None:
            self._observer(len(rows), started - min(piece.job.enqueued for piece in slices))
        offset = 0
        for piece in slices:
            piece.job.passes.append(forward_pass)
            size = piece.stop - piece.start
            piece.job.fill(piece.start, rows[offset : offset + size])
            offset += size


def timed_answer(model: ServingModel, images: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's answer and the seconds its forward pass took, timed on the forward thread: the
    wall time seen from the event loop would count the hop there and back too."""
    started = time.perf_counter()
    rows = model.answer(images)
    return rows, time.perf_counter() - started


class DirectPredictor:
    """Batching turned off: each request runs its own forward passes (at most `max_batch` images
    each) in the thread pool."""

    def __init__(self, holder: ModelHolder, max_batch: int) -> None:
        self._holder = holder
        self._max_batch = max_batch

    async def predict(self, images: np.ndarray, model: ServingModel | None = None) -> BatchResult:
        model = model or self._holder.current
        rows = await asyncio.to_thread(self._answer_in_slices, model, images)
        return BatchResult(rows, model)

    def _answer_in_slices(self, model: ServingModel, images: np.ndarray) -> np.ndarray:
        step = self._max_batch
        return np.concatenate([model.answer(images[i : i + step]) for i in range(0, len(images), step)])

    def close(self) -> None:
        pass
