"""Feeding model streams while the person is still speaking.

Speech recognition and speaker identification both accept audio incrementally, so most of
their work happens before the endpoint. A `StreamingFeed` queues one utterance's audio and
hands it to the model stream in order, off the event loop, in as few calls as the loop's
pace allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from voiced.inference import InferenceEngine

log = logging.getLogger(__name__)


class Feedable(Protocol):
    """A model stream fed while the person speaks (speech recognition, speaker ID)."""

    def feed(self, pcm: bytes) -> None: ...

    def finish(self) -> Any: ...


S = TypeVar("S", bound=Feedable)


class StreamingFeed(Generic[S]):
    """Feeds one utterance to a model stream as it arrives, in order, off the loop.

    A stream with a `feed_bytes` attribute is fed at least that much audio per call (the
    rest at the end): a speaker stream does its work every 160 ms of audio, so handing it
    every 20 ms frame through the engine would cost a thread hop for nothing.
    """

    def __init__(self, engine: InferenceEngine, start: Callable[[], S],
                 on_partial: Callable[[str], Awaitable[None]] | None = None,
                 name: str = "asr") -> None:
        self._engine = engine
        self._start = start
        self._on_partial = on_partial
        self._name = name
        self._pending = bytearray()
        self._stream: S | None = None
        self._pump: asyncio.Task[None] | None = None
        self._last_partial: str | None = None
        self._closed = False
        self._min_bytes = 0
        """The stream's `feed_bytes`: less audio than this waits for more (or the end)."""
        self._hurried = False

    def push(self, audio: bytes) -> None:
        """Queue audio for decoding (ignored once the feed is closed)."""
        if self._closed:
            return
        self._pending += audio
        if (self._pump is None or self._pump.done()) and len(self._pending) >= self._min_bytes:
            self._pump = asyncio.create_task(self._run(), name=f"{self._name}-feed")

    async def _run(self, final: bool = False) -> None:
        if self._stream is None:
            self._stream = await self._engine.run(self._start)
            if self._hurried:
                _hurry(self._stream)
            self._min_bytes = int(getattr(self._stream, "feed_bytes", 0))
        while self._pending and (final or len(self._pending) >= self._min_bytes):
            chunk = bytes(self._pending)
            self._pending.clear()
            partial = await self._engine.run(_feed, self._stream, chunk)
            if partial and partial != self._last_partial and self._on_partial:
                self._last_partial = partial
                await self._on_partial(partial)

    async def finish(self) -> S:
        """Wait until all queued audio is fed; returns the stream."""
        while self._pump is not None and not self._pump.done():
            await self._pump
        if self._pump is not None:
            self._pump.result()
        if self._pending or self._stream is None:
            await self._run(final=True)
        assert self._stream is not None
        return self._stream

    async def completion(self) -> Any:
        """The stream's `completion()` (adaptive endpointing) after all queued audio is
        fed, off the loop (unless the stream knows it already); None when the stream
        cannot tell or the feed is closed. The stream is hurried first (`hurry`): someone
        is waiting for this answer, not for the feeds of sites still speaking."""
        if self._closed:
            return None
        self._hurried = True
        _hurry(self._stream)  # the rest of its audio goes before other sites' feeds
        stream = await self.finish()
        judge = getattr(stream, "completion", None)
        if judge is None or self._closed:
            return None
        if getattr(stream, "completion_known", False):
            return judge()  # brought back with the last feed: no round trip
        return await self._engine.run(judge)

    async def conclude(self) -> Any:
        """Feed what is queued, then the stream's own `finish()` (off the loop): the
        final transcript or speaker match. The stream is used up; `aclose` is then a no-op."""
        stream = await self.finish()
        self._stream = None
        self._closed = True
        return await self._engine.run(stream.finish)

    async def aclose(self) -> None:
        """Abandon the utterance: stop feeding and release the stream (idempotent).

        A feed already running on a worker thread is waited for (it cannot be
        interrupted), so the stream is released exactly once, after its last use.
        """
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        pump = self._pump
        if pump is not None:
            # not cancelled: a stream being created on a thread would be lost, unreleased;
            # with nothing pending the pump ends after the call in flight
            await asyncio.wait({pump})  # never raises
            if not pump.cancelled() and pump.exception() is not None:
                log.warning("%s stream failed while abandoned: %r", self._name,
                            pump.exception())
        stream, self._stream = self._stream, None
        if stream is not None:
            close = getattr(stream, "close", None)
            if close is not None:
                await self._engine.run(close)

    @property
    def closed(self) -> bool:
        """True once the stream was concluded or abandoned."""
        return self._closed


def _hurry(stream: object) -> None:
    hurry = getattr(stream, "hurry", None)
    if hurry is not None:
        hurry()


def _feed(stream: Feedable, chunk: bytes) -> str | None:
    stream.feed(chunk)
    partial = getattr(stream, "partial", None)
    return partial() if partial is not None else None
