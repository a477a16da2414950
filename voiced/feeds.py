"""Feeding model streams while the person is still speaking.

Speech recognition and speaker identification both accept audio incrementally, so most of
their work happens before the endpoint. A `StreamingFeed` queues one utterance's audio and
hands it to the model stream in order, off the event loop, in as few calls as the loop's
pace allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from voiced.inference import InferenceEngine

_CLOSING: set[asyncio.Task[None]] = set()
"""Streams being released after their utterance was abandoned."""


class Feedable(Protocol):
    """A model stream fed while the person speaks (speech recognition, speaker ID)."""

    def feed(self, pcm: bytes) -> None: ...


S = TypeVar("S", bound=Feedable)


class StreamingFeed(Generic[S]):
    """Feeds one utterance to a model stream as it arrives, in order, off the loop."""

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

    def push(self, audio: bytes) -> None:
        """Queue audio for decoding."""
        self._pending += audio
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name=f"{self._name}-feed")

    async def _run(self) -> None:
        if self._stream is None:
            self._stream = await self._engine.run(self._start)
        while self._pending:
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
            await self._run()
        assert self._stream is not None
        return self._stream

    def cancel(self) -> None:
        """Abandon the utterance (its decoder is released once any feed in flight ends)."""
        if self._pump is not None:
            self._pump.cancel()
        task = asyncio.create_task(self._close(), name=f"{self._name}-cancel")
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _close(self) -> None:
        if self._pump is not None:
            await asyncio.wait({self._pump})  # let a feed in flight end; never raises
        if self._stream is not None:
            stream, self._stream = self._stream, None
            close = getattr(stream, "close", None)
            if close is not None:
                await self._engine.run(close)


def _feed(stream: Feedable, chunk: bytes) -> str | None:
    stream.feed(chunk)
    partial = getattr(stream, "partial", None)
    return partial() if partial is not None else None
