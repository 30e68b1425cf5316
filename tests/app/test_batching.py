"""Dynamic batching: correctness under concurrency, isolation of failures, and back-pressure.
Speed is measured by bench/run.py, not here."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from app.serving.inference import Batcher, DirectPredictor, ModelHolder, OverloadedError, ServingModel
from model_store.mnist_data import MnistSplit
from model_store.store import ModelStore


@pytest.fixture(scope="module")
def serving(trained_store: Path) -> ServingModel:
    return ServingModel.compile(ModelStore(trained_store).load())


class GatedModel:
    """The real model behind a gate, so a test decides when a forward pass may finish, and
    with a poison pill: a batch containing an all-white image fails, as a broken input might."""

    def __init__(self, real: ServingModel) -> None:
        self.real = real
        self.gate = threading.Event()
        self.gate.set()
        self.batch_sizes: list[int] = []
        self.name, self.version = real.name, real.version

    def answer(self, images: np.ndarray) -> np.ndarray:
        self.gate.wait(30)
        self.batch_sizes.append(len(images))
        if (images == 255).all(axis=(1, 2)).any():
            raise ValueError("poisoned input")
        return self.real.answer(images)


def test_concurrent_requests_each_get_their_own_answer(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0, max_queued_images=10_000)  # type: ignore[arg-type]
    indices = np.random.default_rng(0).permutation(10_000)[:300]
    expected = serving.forward(test_split.images[indices])

    async def scenario() -> list[np.ndarray]:
        gated.gate.clear()  # hold the first batch so that the rest pile up behind it
        tasks = [asyncio.ensure_future(batcher.predict(test_split.images[i : i + 1])) for i in indices]
        await asyncio.sleep(0.05)
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
        await asyncio.sleep(0.05)
        gated.gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    batcher.close()
    assert isinstance(results[4], RuntimeError)
    good = [r for i, r in enumerate(results) if i != 4]
    predictions = [int(r.probabilities.argmax()) for r in good]  # type: ignore[union-attr]
    assert predictions == serving.forward(test_split.images[:10]).argmax(axis=1).tolist()


def test_full_queue_is_refused(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=8, max_delay_seconds=0, max_queued_images=20)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, int]:
        gated.gate.clear()
        first = asyncio.ensure_future(batcher.predict(test_split.images[:8]))  # taken into the forward pass
        await asyncio.sleep(0.02)
        queued = [asyncio.ensure_future(batcher.predict(test_split.images[:10])) for _ in range(2)]
        await asyncio.sleep(0.02)
        with pytest.raises(OverloadedError):
            await batcher.predict(test_split.images[:1])
        gated.gate.set()
        done = await asyncio.gather(first, *queued)
        return len(done), sum(len(r.probabilities) for r in done)

    assert asyncio.run(scenario()) == (3, 28)
    batcher.close()


def test_max_delay_gathers_requests_arriving_soon(serving: ServingModel, test_split: MnistSplit) -> None:
    gated = GatedModel(serving)
    batcher = Batcher(ModelHolder(gated), max_batch=64, max_delay_seconds=0.2, max_queued_images=100)  # type: ignore[arg-type]

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.predict(test_split.images[:1]))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.predict(test_split.images[1:2]))
        await asyncio.gather(first, second)

    asyncio.run(scenario())
    batcher.close()
    assert gated.batch_sizes == [2]


def test_batching_off_gives_the_same_answers(serving: ServingModel, test_split: MnistSplit) -> None:
    direct = DirectPredictor(ModelHolder(serving))

    async def scenario() -> np.ndarray:
        results = await asyncio.gather(*(direct.predict(test_split.images[i : i + 1]) for i in range(20)))
        return np.concatenate([r.probabilities for r in results])

    np.testing.assert_allclose(asyncio.run(scenario()), serving.forward(test_split.images[:20]), atol=1e-5)
