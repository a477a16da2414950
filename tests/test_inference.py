"""The micro-batcher: batching window, order, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

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


def _held_call(result: object) -> tuple[Callable[[], object], threading.Event, threading.Event]:
    """A model call that runs until released: (the call, started, release)."""
    started, release = threading.Event(), threading.Event()

    def stuck_model_call() -> object:
        started.set()
        release.wait(60)
        return result

    return stuck_model_call, started, release


async def test_close_names_a_call_that_does_not_return_instead_of_hanging(
        caplog: pytest.LogCaptureFixture) -> None:
    engine = InferenceEngine(2)
    stuck_model_call, started, release = _held_call("late")
    call = asyncio.ensure_future(engine.run(stuck_model_call))
    try:
        assert await asyncio.to_thread(started.wait, 30)
        quick = await engine.run(sum, [1, 2])  # the other thread still serves
        assert quick == 3
        stuck = engine.close(timeout_s=0.2)
        assert len(stuck) == 1 and "stuck_model_call" in stuck[0]
        assert "voiced-infer" in stuck[0]
        assert "stuck_model_call" in caplog.text and "still running" in caplog.text
    finally:
        release.set()
    assert await call == "late"  # the abandoned call still ends cleanly


async def test_close_waits_for_a_call_that_finishes_in_time() -> None:
    engine = InferenceEngine(1)
    model_call, started, release = _held_call(7)
    call = asyncio.ensure_future(engine.run(model_call))
    assert await asyncio.to_thread(started.wait, 30)
    queued = asyncio.ensure_future(engine.run(sum, [1]))
    await asyncio.sleep(0)  # let it reach the pool's queue
    threading.Timer(0.1, release.set).start()
    assert engine.close(timeout_s=30) == []  # waited for model_call, cancelled the queued one
    assert await call == 7
    with pytest.raises(asyncio.CancelledError):
        await queued
