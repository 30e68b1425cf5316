"""Dynamic batching: correctness under concurrency, isolation of failures, and back-pressure.
Speed is measured by bench/run.py, not here."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from app.serving.batcher import Batcher, DirectPredictor, OverloadedError
from app.serving.model import ModelHolder, ServingModel
from model_store.mnist_data import MnistSplit
from model_store.store import ModelStore


@pytest.fixture(scope="module")
def serving(fixture_store: Path) -> ServingModel:
    return ServingModel.compile(ModelStore(fixture_store).load())


class GatedModel:
    """The real model behind a gate, so a test decides when a forward pass may finish, and
    with a poison pill: a batch containing an all-white image fails, as a broken input might."""

    def __init__(self, real: ServingModel) -> None:
        self.real = real
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)  # released once per forward pass started
        self.batch_sizes: list[int] = []
        self.batches: list[np.ndarray] = []
        self.name, self.version = real.name, real.version

    def answer(self, images: np.ndarray) -> np.ndarray:
        self.entered.release()
        self.gate.wait(30)
        self.batch_sizes.append(len(images))
        self.batches.append(images)
        if (images == 255).all(axis=(1, 2)).any():
            raise ValueError("poisoned input")
        return self.real.answer(images)


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the event loop run until `condition` holds (the batcher is a task on this loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def forward_started(gated: GatedModel) -> None:
    assert await asyncio.to_thread(gated.entered.acquire, True, 30), "no forward pass started"


def first_pass_holding(gated: GatedModel, image: np.ndarray) -> int:
    """The index of the first forward pass whose batch held `image`."""
    return next(i for i, batch in enumerate(gated.batches) if (batch == image).all(axis=(1, 2)).any())


def test_concurrent_requests_each_get_their_own_answer(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0, max_queued_images=10_000)  # type: ignore[arg-type]
    indices = np.random.default_rng(0).permutation(10_000)[:300]
    expected = serving.forward(test_split.images[indices])

    async def scenario() -> list[np.ndarray]:
        gated.gate.clear()  # hold the first batch so that the rest pile up behind it
        tasks = [asyncio.ensure_future(batcher.predict(test_split.images[i : i + 1])) for i in indices]
        await forward_started(gated)  # every request was queued before the first pass took 64
        await until(lambda: batcher.queued_images == 300 - 64)
        gated.gate.set()
        results = await asyncio.gather(*tasks)
        return [result.probabilities[0] for result in results]

    got = asyncio.run(scenario())
    batcher.close()
    np.testing.assert_allclose(np.array(got), expected, atol=1e-5)
    assert max(gated.batch_sizes) == 64, "requests were not batched"
    assert sum(gated.batch_sizes) == 300


def test_mixed_sizes_keep_their_order(serving: ServingModel, test_split: MnistSplit) -> None:
    batcher = Batcher(ModelHolder(serving), max_batch=32, max_delay_seconds=0.01, max_queued_images=10_000)
    chunks = [(0, 5), (5, 6), (6, 40), (40, 41), (41, 100)]

    async def scenario() -> list[np.ndarray]:
        results = await asyncio.gather(*(batcher.predict(test_split.images[a:b]) for a, b in chunks))
        return [r.probabilities for r in results]

    got = np.concatenate(asyncio.run(scenario()))
    batcher.close()
    np.testing.assert_allclose(got, serving.forward(test_split.images[:100]), atol=1e-5)


def test_a_failing_item_does_not_poison_the_batch(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0, max_queued_images=10_000)  # type: ignore[arg-type]
    poison = np.full((1, 28, 28), 255, dtype=np.uint8)
    inputs = [test_split.images[i : i + 1] for i in range(10)]
    inputs.insert(4, poison)

    async def scenario() -> list[object]:
        gated.gate.clear()
        tasks = [asyncio.ensure_future(batcher.predict(x)) for x in inputs]
        await forward_started(gated)  # all eleven were queued before the pass took them
        gated.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    batcher.close()
    assert isinstance(results[4], RuntimeError)
    good = [r for i, r in enumerate(results) if i != 4]
    predictions = [int(r.probabilities.argmax()) for r in good]  # type: ignore[attr-defined]
    assert predictions == serving.forward(test_split.images[:10]).argmax(axis=1).tolist()


def test_full_queue_is_refused(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=8, max_delay_seconds=0, max_queued_images=16)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, int]:
        gated.gate.clear()
        first = asyncio.ensure_future(batcher.predict(test_split.images[:8]))  # taken into the forward pass
        await forward_started(gated)
        queued = [asyncio.ensure_future(batcher.predict(test_split.images[:10])) for _ in range(2)]
        await until(lambda: batcher.queued_images == 20)
        with pytest.raises(OverloadedError):
            await batcher.predict(test_split.images[:1])
        gated.gate.set()
        done = await asyncio.gather(first, *queued)
        return len(done), sum(len(r.probabilities) for r in done)

    assert asyncio.run(scenario()) == (3, 28)
    batcher.close()


def test_max_delay_holds_the_batch_open_until_it_is_full(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    gated = GatedModel(serving)
    # A window far longer than the test: the batch leaves because it is full, not because time passed.
    batcher = Batcher(ModelHolder(gated), max_batch=2, max_delay_seconds=60, max_queued_images=100)  # type: ignore[arg-type]

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.predict(test_split.images[:1]))
        await until(lambda: batcher.queued_images == 1)
        assert not first.done()
        second = asyncio.ensure_future(batcher.predict(test_split.images[1:2]))
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    batcher.close()
    assert gated.batch_sizes == [2]


def test_max_delay_window_ends_by_itself(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0.01, max_queued_images=100)  # type: ignore[arg-type]
    result = asyncio.run(batcher.predict(test_split.images[:1]))
    batcher.close()
    assert gated.batch_sizes == [1] and result.probabilities.shape == (1, 10)


def test_a_large_job_is_sliced_and_a_single_image_overtakes_it(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0, max_queued_images=20_000)  # type: ignore[arg-type]

    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        gated.gate.clear()
        large = asyncio.ensure_future(batcher.predict(test_split.images[:3000]))
        await forward_started(gated)  # the first pass holds part of the large job
        single = asyncio.ensure_future(batcher.predict(test_split.images[5000:5001]))
        await until(lambda: batcher.queued_images == 3000 - 64 + 1)
        gated.gate.set()
        return (await large).probabilities, (await single).probabilities

    large, single = asyncio.run(scenario())
    batcher.close()
    assert max(gated.batch_sizes) == 64, "a forward pass held more than max_batch images"
    assert sum(gated.batch_sizes) == 3001
    # The very next pass after the one in flight takes the single image (47 passes in all).
    assert first_pass_holding(gated, test_split.images[5000]) == 1
    np.testing.assert_allclose(large, serving.forward(test_split.images[:3000]), atol=1e-5)
    np.testing.assert_allclose(single, serving.forward(test_split.images[5000:5001]), atol=1e-5)


def test_a_large_job_does_not_lock_single_images_out_of_the_queue(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    # A 2,000-image job is far over the queue bound, but it moves in fair slices: it weighs on the
    # queue as one full pass, so single images are still admitted (not answered 503) beside it.
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=8, max_delay_seconds=0, max_queued_images=20)  # type: ignore[arg-type]

    async def scenario() -> None:
        gated.gate.clear()
        large = asyncio.ensure_future(batcher.predict(test_split.images[:2000]))
        await forward_started(gated)
        singles = [
            asyncio.ensure_future(batcher.predict(test_split.images[i : i + 1])) for i in range(5000, 5010)
        ]
        await until(lambda: batcher.queued_images == 2000 - 8 + 10)
        with pytest.raises(OverloadedError):  # 8 for the large job + 10 + 3 > 20
            await batcher.predict(test_split.images[:3])
        gated.gate.set()
        await asyncio.gather(large, *singles)

    asyncio.run(scenario())
    batcher.close()
    # Eight images a pass, a fair share each: the ten singles go in passes 1 and 2, not after 250.
    assert max(first_pass_holding(gated, test_split.images[i]) for i in range(5000, 5010)) <= 2


def test_batching_off_slices_large_requests_too(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    direct = DirectPredictor(ModelHolder(gated), max_batch=64)  # type: ignore[arg-type]
    result = asyncio.run(direct.predict(test_split.images[:300]))
    assert max(gated.batch_sizes) == 64 and sum(gated.batch_sizes) == 300
    np.testing.assert_allclose(result.probabilities, serving.forward(test_split.images[:300]), atol=1e-5)


def test_batching_off_gives_the_same_answers(serving: ServingModel, test_split: MnistSplit) -> None:
    direct = DirectPredictor(ModelHolder(serving), max_batch=8)

    async def scenario() -> np.ndarray:
        results = await asyncio.gather(*(direct.predict(test_split.images[i : i + 1]) for i in range(20)))
        return np.concatenate([r.probabilities for r in results])

    np.testing.assert_allclose(asyncio.run(scenario()), serving.forward(test_split.images[:20]), atol=1e-5)


class ThreadRecordingModel:
    """The real model, noting the thread of each forward pass."""

    def __init__(self, real: ServingModel) -> None:
        self.real = real
        self.threads: list[str] = []
        self.name, self.version = real.name, real.version

    def answer(self, images: np.ndarray) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return self.real.answer(images)


def one_at_a_time(model: ThreadRecordingModel, images: np.ndarray) -> np.ndarray:
    """Each image sent alone, after the previous one's answer, through a batcher of `model`."""
    batcher = Batcher(ModelHolder(model), max_batch=64, max_delay_seconds=0, max_queued_images=100)  # type: ignore[arg-type]

    async def scenario() -> list[np.ndarray]:
        return [(await batcher.predict(images[i : i + 1])).probabilities[0] for i in range(len(images))]

    try:
        return np.stack(asyncio.run(scenario()))
    finally:
        batcher.close()


def test_a_lone_image_is_answered_on_the_event_loop_once_its_version_is_measured_fast(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    serving.warm_up((1,))
    recording = ThreadRecordingModel(serving)
    got = one_at_a_time(recording, test_split.images[:20])
    assert recording.threads[0].startswith("forward"), "a version's first lone pass is measured on the thread"
    assert threading.main_thread().name in recording.threads[1:], recording.threads
    np.testing.assert_allclose(got, serving.forward(test_split.images[:20]), atol=1e-5)


class SlowModel(ThreadRecordingModel):
    """The real model, with a single-image pass of a millisecond or more."""

    def answer(self, images: np.ndarray) -> np.ndarray:
        time.sleep(0.001)  # the pass's own cost, not a wait for a condition
        return super().answer(images)


def test_a_lone_image_of_a_version_with_a_slow_pass_never_runs_on_the_event_loop(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    slow = SlowModel(serving)
    one_at_a_time(slow, test_split.images[:10])
    assert len(slow.threads) == 10
    assert all(name.startswith("forward") for name in slow.threads), slow.threads


def test_images_arriving_together_are_batched_not_answered_one_by_one(
    serving: ServingModel, test_split: MnistSplit
) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0, max_queued_images=100)  # type: ignore[arg-type]

    async def together() -> list[object]:
        # Requests of one turn of the event loop, as uvicorn starts them when they arrive together.
        return await asyncio.gather(*(batcher.predict(test_split.images[i : i + 1]) for i in range(20)))

    results = asyncio.run(together())
    batcher.close()
    assert gated.batch_sizes == [20]
    assert len(results) == 20
