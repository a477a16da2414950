"""Supervision: every long-lived task has an owner that notices when it ends.

`Supervisor.start` runs a named task and watches it. A task that ends while voiced is not
stopping is logged and counted; a restartable one (a site worker, the intent-file watcher)
is started again, unless it keeps failing (then it is fatal); a critical one (the MQTT
link) sets `fatal`, and `voiced serve` exits non-zero so systemd restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

RESTART_WINDOW_S = 60.0
MAX_RESTARTS = 10
"""A task restarted more than this often within the window is fatal: it is not healing."""

Factory = Callable[[], Coroutine[Any, Any, Any]]


class Supervisor:
    """Owns named tasks; restarts or escalates the ones that end on their own."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.failures: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.fatal = asyncio.Event()
        self.fatal_reason: str | None = None
        self.stopping = False
        self._recent: dict[str, deque[float]] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def start(self, name: str, factory: Factory, *, restart: bool = False,
              critical: bool = False) -> asyncio.Task[Any]:
        """Run `factory()` as the task `name`, watched."""
        task = asyncio.create_task(factory(), name=name)
        self.tasks[name] = task
        task.add_done_callback(lambda t: self._ended(name, t, factory, restart, critical))
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "background") -> None:
        """A short fire-and-forget task: its failure is logged, and stop() awaits it."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures[task.get_name()] += 1
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def _ended(self, name: str, task: asyncio.Task[Any], factory: Factory, restart: bool,
               critical: bool) -> None:
        if self.tasks.get(name) is task and (self.stopping or task.cancelled()):
            self.tasks.pop(name, None)
        if self.stopping or task.cancelled() or self.tasks.get(name) is not task:
            return
        exc = task.exception()
        self.failures[name] += 1
        what = f"task {name} ended" + (f" with {exc!r}" if exc else " on its own")
        log.error("%s", what, exc_info=exc)
        recent = self._recent.setdefault(name, deque(maxlen=MAX_RESTARTS + 1))
        recent.append(time.monotonic())
        too_often = (len(recent) > MAX_RESTARTS
                     and recent[-1] - recent[0] < RESTART_WINDOW_S)
        if critical or not restart or too_often:
            self.tasks.pop(name, None)
            if critical or too_often:
                self.fatal_reason = what if not too_often else (
                    f"task {name} failed {len(recent)} times within {RESTART_WINDOW_S:.0f} s")
                log.critical("voiced cannot go on: %s", self.fatal_reason)
                self.fatal.set()
            return
        self.restarts[name] += 1
        log.warning("restarting task %s", name)
        self.start(name, factory, restart=restart, critical=critical)

    async def cancel(self, name: str) -> None:
        """Cancel one task and wait for it (not counted as a failure)."""
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel every task, wait (bounded) for them and for background work."""
        self.stopping = True
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        if self._background:
            _, late = await asyncio.wait(set(self._background), timeout=timeout)
            for task in late:
                task.cancel()

    def stats(self) -> dict[str, Any]:
        """Failures and restarts per task (for voiced/status)."""
        return {"failures": dict(self.failures), "restarts": dict(self.restarts)}
