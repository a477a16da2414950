"""The micro-batcher: batching window, order, errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from voiced.inference import InferenceEngine, MicroBatcher


def _double(items: Sequence[int]) -> list[int]:
    return [2 * i for i in items]


async def test_requests_within_window_form_one_batch() -> None:
    engine = InferenceEngine(1)
    batcher: MicroBatcher[int, int] = MicroBatcher(engine, _double, 0.05, 16)
    try:
        results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        assert results == [0, 2, 4, 6, 8]
        assert [b.size for b in batcher.history] == [5]
    finally:
        await batcher.close()
        engine.close()


async def test_lone_request_waits_at_most_the_window() -> None:
    engine = InferenceEngine(1)
    batcher: MicroBatcher[int, int] = MicroBatcher(engine, _double, 0.03, 16)
    try:
        started = time.monotonic()
        assert await batcher.submit(21) == 42
        elapsed = time.monotonic() - started
        assert batcher.history[-1].size == 1
        assert 0.025 <= batcher.history[-1].waited_ms / 1000 <= 0.03 + 0.05
        assert elapsed < 0.5
    finally:
        await batcher.close()
        engine.close()


async def test_max_batch_splits_and_errors_reach_every_caller() -> None:
    engine = InferenceEngine(1)
    batcher: MicroBatcher[int, int] = MicroBatcher(engine, _double, 0.02, 3)
    try:
        assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == [
            0, 2, 4, 6, 8, 10, 12]
        assert [b.size for b in batcher.history] == [3, 3, 1]
    finally:
        await batcher.close()

    def broken(items: Sequence[int]) -> list[int]:
        raise ValueError("model exploded")

    failing: MicroBatcher[int, int] = MicroBatcher(engine, broken, 0.01, 4)
    try:
        with pytest.raises(ValueError, match="exploded"):
            await asyncio.gather(failing.submit(1), failing.submit(2))
    finally:
        await failing.close()
        engine.close()
