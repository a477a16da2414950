"""pocketsphinx in worker processes.

pocketsphinx's Python binding keeps the GIL while it decodes, so decoders on threads of
the daemon's process share one core with each other and with the event loop. With many
satellites speaking at once that core runs out. `PooledTranscriber` runs the decoders in
a few worker processes instead (one per core by default); each utterance's stream stays
on one worker, and the calls are plain request/reply messages over a pipe.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrStream, Transcriber
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.config import AsrConfig
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120.0
URGENT = frozenset({"finish", "transcribe"})
"""Requests served before waiting feeds."""


def _recognizer(document: Mapping[str, Any], language: str) -> IntentRecognizer:
    from hassil import Intents

    from voiced.intents.recognizer import IntentRecognizer

    return IntentRecognizer(Intents.from_dict(dict(document)), language, fuzzy=False)


def _serve(conn: Connection, config: AsrConfig, document: Mapping[str, Any] | None,
           language: str) -> None:
    """A worker: one transcriber, many streams, requests answered in order."""
    from voiced.asr.pocketsphinx import PocketsphinxTranscriber

    try:
        intents = _recognizer(document, language) if document is not None else None
        transcriber = PocketsphinxTranscriber(config, intents)
        transcriber.load()
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((True, os.getpid()))
    streams: dict[int, AsrStream] = {}
    while True:
        try:
            op, key, arg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result: Any = None
            if op == "feed":
                stream = streams.get(key)
                if stream is None:
                    stream = streams[key] = transcriber.start_stream()
                stream.feed(arg)
                result = stream.partial()
            elif op == "finish":
                stream = streams.pop(key, None) or transcriber.start_stream()
                result = stream.finish()
            elif op == "cancel":
                stream = streams.pop(key, None)
                if stream is not None:
                    stream.finish()
            elif op == "transcribe":
                result = transcriber.transcribe(arg)
            elif op == "reload":
                transcriber.reload(_recognizer(arg, language))
            elif op == "stop":
                conn.send((True, None))
                return
            conn.send((True, result))
        except Exception as exc:
            conn.send((False, f"{type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, index: int, config: AsrConfig, document: Mapping[str, Any] | None,
                 language: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, config, document, language),
                                   name=f"voiced-asr-{index}", daemon=True)
        self.process.start()
        child.close()
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = 0
        self.active = 0

    def call(self, op: str, key: int = 0, arg: Any = None) -> Any:
        # an utterance that has ended goes before feeds of utterances still being spoken:
        # its answer is what someone is waiting for
        urgent = op in URGENT
        with self._cond:
            self._urgent += urgent
            while self._busy or (not urgent and self._urgent):
                self._cond.wait()
            self._urgent -= urgent
            self._busy = True
        try:
            self.conn.send((op, key, arg))
            ok, value = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            raise AsrError("asr_worker_died",
                           f"speech recognition worker {self.process.name} stopped "
                           f"(exit code {self.process.exitcode})") from exc
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        if not ok:
            raise AsrError("asr_failed", str(value))
        return value

    def ready(self) -> None:
        if not self.conn.poll(READY_TIMEOUT_S):
            raise AsrError("asr_worker_start", f"{self.process.name} did not start in time")
        ok, value = self.conn.recv()
        if not ok:
            raise AsrError("asr_worker_start", f"{self.process.name} failed to start: {value}")


class _RemoteStream(AsrStream):
    def __init__(self, owner: PooledTranscriber, worker: _Worker, key: int) -> None:
        self._owner, self._worker, self._key = owner, worker, key
        self._partial: str | None = None
        self._open = True

    def feed(self, pcm: bytes) -> None:
        self._partial = self._worker.call("feed", self._key, pcm)

    def partial(self) -> str | None:
        return self._partial

    def finish(self) -> Transcript:
        try:
            result: Transcript = self._worker.call("finish", self._key)
            return result
        finally:
            self._done()

    def close(self) -> None:
        if self._open:
            try:
                self._worker.call("cancel", self._key)
            finally:
                self._done()

    def _done(self) -> None:
        if self._open:
            self._open = False
            self._owner._release(self._worker)


class PooledTranscriber(Transcriber):
    """The pocketsphinx transcriber spread over worker processes."""

    name = "pocketsphinx"

    def __init__(self, config: AsrConfig, intents: IntentRecognizer | None,
                 processes: int) -> None:
        self.config = config
        self._intents = intents
        self._processes = max(1, processes)
        self._workers: list[_Worker] = []
        self._keys = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def supports_streaming(self) -> bool:
        """Audio is decoded while the person speaks."""
        return True

    def load(self) -> None:
        """Start the workers and wait until each has loaded its decoder."""
        document = self._intents.document if self._intents is not None else None
        language = self._intents.language if self._intents is not None else self.config.language
        self._workers = [_Worker(i, self.config, document, language)
                         for i in range(self._processes)]
        for worker in self._workers:
            worker.ready()
        log.info("pocketsphinx running in %d worker processes", len(self._workers))

    def _pick(self) -> _Worker:
        with self._lock:
            worker = min(self._workers, key=lambda w: w.active)
            worker.active += 1
            return worker

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            worker.active -= 1

    def start_stream(self) -> AsrStream:
        """A stream pinned to the least busy worker."""
        return _RemoteStream(self, self._pick(), next(self._keys))

    def transcribe(self, pcm: bytes) -> Transcript:
        """Decode a whole utterance on a worker."""
        worker = self._pick()
        try:
            result: Transcript = worker.call("transcribe", 0, pcm)
            return result
        finally:
            self._release(worker)

    def reload(self, intents: IntentRecognizer) -> None:
        """Recompile every worker's grammar."""
        self._intents = intents
        for worker in self._workers:
            worker.call("reload", 0, intents.document)

    def close(self) -> None:
        """Stop the workers."""
        for worker in self._workers:
            try:
                worker.call("stop")
            except AsrError:
                pass
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
        self._workers = []
