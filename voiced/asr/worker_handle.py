"""One pocketsphinx worker process, seen from the daemon (voiced.asr.workers): start and
replace it, serve its requests one at a time (an utterance at its end before feeds still
being spoken), and stop it so that nothing waits for it or restarts it afterwards."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from voiced.asr.worker_process import Portable, serve
from voiced.errors import AsrError

if TYPE_CHECKING:
    from voiced.config import AsrConfig

log = logging.getLogger("voiced.asr.workers")

READY_TIMEOUT_S = 120.0
"""A worker has this long to load its grammar (at start, restart and reload)."""
CALL_TIMEOUT_S = 60.0
"""A worker that takes longer to answer one request is taken for hung and replaced."""
STOP_GRACE_S = 5.0
"""How long `stop()` lets a request in flight finish before it kills the process."""
URGENT = frozenset({"finish", "transcribe"})
"""Requests served before waiting feeds."""

class Worker:
    """One worker process, replaced by a new one when it dies; one request at a time."""

    def __init__(self, index: int, config: AsrConfig, intents: Portable) -> None:
        self.name = f"voiced-asr-{index}"
        self.config = config
        self.intents = intents
        """The intents a (re)started process loads its grammar from: the last committed."""
        self.generation = 0
        """Which process this is (1: the first); a stream lives and dies with one."""
        self.restarts = 0
        self.current_op: str | None = None
        """The request being served (None: idle); for tests and diagnostics."""
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[Callable[[], bool]] = []
        """Whether each request waiting for the process is urgent now."""
        self._starting = False
        self._stopped = False
        """Stopped for good (shutdown): requests fail at once instead of waiting."""
        self.active = 0
        self._spawn()

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=serve, args=(child, self.config, self.intents),
            name=self.name, daemon=True)
        self.process.start()
        child.close()
        self.generation += 1
        self._starting = True

    def _replace(self, why: str) -> None:
        """Kill what is left of the process and start a new one (not waiting for it);
        once stopped, only say so: a request that was in flight when `stop()` killed the
        process must not start another one after shutdown."""
        if self._stopped:
            raise AsrError("asr_closed", f"speech recognition worker {self.name} {why} while "
                                         "voiced was stopping; not restarted")
        log.warning("speech recognition worker %s %s; starting a new one", self.name, why)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()
        self.restarts += 1
        self._spawn()

    def ready(self) -> None:
        """Wait until the process has loaded its grammar."""
        if not self._starting:
            return
        try:
            started = self.conn.poll(READY_TIMEOUT_S)
            ok, value = self.conn.recv() if started else (False, "did not start in time")
        except (EOFError, OSError) as exc:
            ok, value = False, f"exited (exit code {self.process.exitcode}): {exc}"
        self._starting = False  # on failure the next call starts another process
        if not ok:
            if self.process.is_alive():
                self.process.kill()
            raise AsrError("asr_worker_start", f"{self.name} failed to start: {value}")

    def call(self, op: str, key: int = 0, arg: Any = None,
             generation: int | None = None,
             hurried: Callable[[], bool] | None = None) -> tuple[Any, int]:
        """Send one request and return (its answer, the process generation that gave it).

        With `generation`, the request belongs to a stream started on that process: if
        the process has been replaced since, the stream's audio is gone and the call
        fails with `asr_worker_died`. `hurried`: whether the request's utterance is at
        its end (see `AsrStream.hurry`; asked again while it waits, after `wake`): then
        it goes before other feeds, like the requests in `URGENT`.
        """
        # an utterance that has ended goes before feeds of utterances still being spoken:
        # its answer is what someone is waiting for
        def urgent() -> bool:
            return op in URGENT or (hurried is not None and hurried())

        with self._cond:
            self._waiting.append(urgent)  # asked afresh: hurried while it waits
            try:
                while not self._stopped and (
                        self._busy or (not urgent() and any(w() for w in self._waiting))):
                    self._cond.wait()
            finally:
                self._waiting.remove(urgent)
            if self._stopped:
                # a reload or a stream still running when voiced shuts down: waiting for
                # a process that is gone would hang the shutdown
                raise AsrError("asr_closed", f"speech recognition worker {self.name} has "
                                             f"been stopped; {op!r} was not served")
            self._busy = True
        try:
            if not self.process.is_alive() and not self._starting:
                self._replace(f"stopped (exit code {self.process.exitcode})")
            if generation is not None and generation != self.generation:
                raise AsrError("asr_worker_died",
                               f"speech recognition worker {self.name} was restarted; the "
                               "utterance it was decoding is lost")
            self.ready()
            self.current_op = op
            value = self._exchange(op, key, arg)
            return value, self.generation
        finally:
            self.current_op = None
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Requests waiting for the process (for tests and diagnostics)."""
        return len(self._waiting)

    def wake(self) -> None:
        """Have waiting requests ask again whether they are hurried."""
        with self._cond:
            self._cond.notify_all()

    def _exchange(self, op: str, key: int, arg: Any) -> Any:
        timeout = READY_TIMEOUT_S if op == "prepare" else CALL_TIMEOUT_S
        try:
            self.conn.send((op, key, arg))
            if not self.conn.poll(timeout):
                self._replace(f"did not answer {op!r} within {timeout:.0f} s")
                raise AsrError("asr_worker_died",
                               f"speech recognition worker {self.name} hung and was restarted")
            ok, value = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(timeout=5)
            code = self.process.exitcode
            self._replace(f"died (exit code {code})")
            raise AsrError("asr_worker_died",
                           f"speech recognition worker {self.name} died (exit code {code}) "
                           f"during {op!r}; it was restarted") from exc
        if not ok:
            raise AsrError("asr_failed", str(value))
        return value

    def stop(self) -> None:
        """Ask the process to exit (kill it if it is busy or does not)."""
        with self._cond:
            polite = self._cond.wait_for(lambda: not self._busy, timeout=STOP_GRACE_S)
            self._stopped = True
            self._cond.notify_all()  # requests still waiting fail now
        if polite and self.process.is_alive():
            try:
                self.conn.send(("stop", 0, None))
                self.process.join(timeout=5)
            except OSError:
                pass
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()
