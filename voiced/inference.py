"""The inference engine: model work off the event loop, micro-batched across sites.

`InferenceEngine` owns the worker threads. `MicroBatcher` collects requests that arrive
within a short window (from different satellites) and hands them to a batch function as
one call, so a GPU model runs one batched pass instead of N small ones. A lone request
waits at most `window_s` before it runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
In = TypeVar("In")
Out = TypeVar("Out")


class InferenceEngine:
    """Runs blocking model work on a small pool of named threads."""

    def __init__(self, workers: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voiced-infer")
        self._idle = threading.Condition()
        self._running: dict[int, tuple[str, float]] = {}
        """What each busy thread runs, and since when (by thread id): named at shutdown."""

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` on a worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        me = threading.current_thread()
        what = f"{me.name} in {getattr(fn, '__qualname__', None) or fn!r}"
        with self._idle:
            self._running[me.ident or 0] = (what, time.monotonic())
        try:
            return fn(*args)
        finally:
            with self._idle:
                self._running.pop(me.ident or 0, None)
                self._idle.notify_all()

    def close(self, timeout_s: float = 5.0) -> list[str]:
        """Stop the workers: work still queued is cancelled, work running gets `timeout_s`
        to finish. Returns what was still running then (also logged as an error, with the
        thread and the function: a stuck model call is named instead of hanging the
        shutdown without a word); those threads are left to the process's exit."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            now = time.monotonic()
            stuck = [f"{what} (for {now - since:.1f} s)" for what, since in self._running.values()]
        if stuck:
            log.error("inference engine: %d call(s) still running %.0f s after shutdown began, "
                      "not waiting for them: %s", len(stuck), timeout_s, "; ".join(stuck))
        else:
            self._pool.shutdown(wait=True)  # every thread is idle: returns at once
        return stuck


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one batch looked like (for metrics and tests)."""

    size: int
    waited_ms: float
    """How long the oldest request waited for the batch to close."""
    run_ms: float


class MicroBatcher(Generic[In, Out]):
    """Groups requests arriving within `window_s` into one `batch_fn` call.

    `batch_fn` is blocking and runs on the engine; it must return one result per input,
    in order. One batch runs at a time per batcher: requests that arrive while a batch is
    running form the next batch.
    """

    def __init__(
        self,
        engine: InferenceEngine,
        batch_fn: Callable[[Sequence[In]], Sequence[Out]],
        window_s: float,
        max_batch: int,
        name: str = "batch",
    ) -> None:
        self._engine = engine
        self._batch_fn = batch_fn
        self._window_s = window_s
        self._max_batch = max_batch
        self._name = name
        self._pending: list[_Pending[In, Out]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.history: list[BatchStats] = []
        """The most recent batches, newest last (bounded)."""

    async def submit(self, item: In) -> Out:
        """Queue `item` and wait for its result."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._loop(), name=f"microbatch-{self._name}")
        fut: asyncio.Future[Out] = loop.create_future()
        self._pending.append(_Pending(item, fut))
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            # the window opens with the oldest pending request, not with the loop
            deadline = self._pending[0].queued + self._window_s
            while len(self._pending) < self._max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
                except TimeoutError:
                    break
                self._wakeup.clear()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if self._pending:
                self._wakeup.set()
            await self._run(batch)

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        started = time.monotonic()
        waited = (started - batch[0].queued) * 1000
        try:
            results = await self._engine.run(self._batch_fn, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"{self._name}: batch function returned {len(results)} results "
                    f"for {len(batch)} inputs"
                )
        except Exception as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        run_ms = (time.monotonic() - started) * 1000
        self.history.append(BatchStats(len(batch), waited, run_ms))
        del self.history[:-100]
        log.debug("%s: batch of %d (waited %.1f ms, ran %.1f ms)", self._name, len(batch),
                  waited, run_ms)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def close(self) -> None:
        """Stop the batching task; pending requests are cancelled."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for p in self._pending:
            p.future.cancel()
        self._pending.clear()
