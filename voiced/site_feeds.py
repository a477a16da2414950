"""The recognizer and speaker streams of a site's utterance in progress.

They are fed while the person speaks. Trailing silence beyond FEED_SILENCE_MS is held
back: if the utterance ends there it is never decoded; if speech resumes it is fed first.
Abandoned streams are released by tasks owned here (releasing waits for a decode in
flight in a busy recognizer, which must not hold up the site's audio).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from voiced.asr.base import AsrStream
from voiced.asr.service import AsrService
from voiced.const import VAD_FRAME_MS
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine

log = logging.getLogger(__name__)

FEED_SILENCE_MS = 200
"""Trailing silence fed to the models before holding the rest back (the end of speech
needs some; decoding the whole end-of-speech wait would be wasted work)."""
FEED_SILENCE_FRAMES = FEED_SILENCE_MS // VAD_FRAME_MS


class UtteranceFeeds:
    """One site's streams: `decode` (streaming ASR) and `speaker` (speaker ID), each None
    when not open."""

    def __init__(self, site: str, engine: InferenceEngine, asr: AsrService, speakers: Any,
                 on_partial: Callable[[str], Awaitable[None]]) -> None:
        self._site = site
        self._engine = engine
        self._asr = asr
        self._speakers = speakers
        self._on_partial = on_partial
        self._streaming = asr.streaming
        self.decode: StreamingFeed[AsrStream] | None = None
        self.speaker: StreamingFeed[Any] | None = None
        self._held: list[bytes] = []
        self._silence_run = 0
        self._releasing: set[asyncio.Task[None]] = set()

    def open(self, audio: bytes, secret: bool) -> None:
        """Start the streams with `audio` (all of the utterance so far). `secret` (the
        answer to a confirmation prompt, a PIN): no partial transcripts, not even shown."""
        self._held.clear()
        self._silence_run = 0
        if self._streaming:
            site = self._site  # per-site recognizer state (pocketsphinx's cepstral mean)
            self.decode = StreamingFeed(self._engine, lambda: self._asr.start_stream(site),
                                        None if secret else self._on_partial)
            self.decode.push(audio)
        if self._speakers is not None:
            self.speaker = StreamingFeed(getattr(self._speakers, "engine", None) or self._engine,
                                         self._speakers.start_stream, name="speaker")
            self.speaker.push(audio)

    def push(self, audio: bytes, speech: bool) -> None:
        """Feed one frame of the utterance (`speech`: the VAD's decision for it)."""
        if speech:
            self._silence_run = 0
            if self._held:
                audio = b"".join(self._held) + audio
                self._held.clear()
        else:
            self._silence_run += 1
            if self._silence_run > FEED_SILENCE_FRAMES:
                self._held.append(audio)
                return
        for feed in (self.decode, self.speaker):
            if feed is not None:
                feed.push(audio)

    def take(self) -> tuple[StreamingFeed[AsrStream] | None, StreamingFeed[Any] | None]:
        """Hand the streams over (the utterance ended); the held-back silence is dropped."""
        feeds = self.decode, self.speaker
        self.decode = self.speaker = None
        self._held.clear()
        self._silence_run = 0
        return feeds

    def drop(self) -> None:
        """Abandon the utterance in progress; its streams are released in the background
        (failures logged, `released()` awaits them)."""
        for feed in self.take():
            if feed is not None:
                task = asyncio.create_task(feed.aclose(), name=f"release-{self._site}")
                self._releasing.add(task)
                task.add_done_callback(self._released)

    def _released(self, task: asyncio.Task[None]) -> None:
        self._releasing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("site %s: releasing a stream failed", self._site,
                      exc_info=task.exception())

    async def released(self) -> None:
        """Wait until every dropped stream is released (shutdown)."""
        if self._releasing:
            await asyncio.wait(set(self._releasing))
