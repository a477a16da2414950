"""Partial Whisper transcripts while someone is still speaking.

Whisper is not a streaming model: a partial transcript is a full decode of the audio heard
so far. Its cost is capped three ways:

1. a new partial needs `partial_interval_ms` of new audio since the last one;
2. after a partial decode that took `d` seconds, the next waits until
   `d * (1 - duty) / duty` seconds have passed (`partial_max_duty`, default 25 %), so a
   slow machine gets fewer partials instead of a growing backlog;
3. a partial starts only when the model is idle and no final decode waits
   (`ModelGate`); otherwise the previous partial text is returned at once.

So partials never queue in front of a final; a final can wait at most for one partial
already running. The daemon should decode finals through the `MicroBatcher` (batched with
other satellites' finals) rather than `finish()`, which decodes this stream alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from voiced.asr.base import AsrStream, Completion
from voiced.const import BYTES_PER_SECOND, ms_to_bytes
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.asr.whisper import WhisperTranscriber

MAX_STREAM_BYTES = 30 * BYTES_PER_SECOND
"""Whisper sees at most 30 seconds; later audio is not kept."""


class WhisperStream(AsrStream):
    """Buffers one utterance's audio; `partial()` decodes it at a capped rate."""

    def __init__(
        self, owner: WhisperTranscriber, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._owner = owner
        self._clock = clock
        self._pcm = bytearray()
        self._decoded_bytes = 0
        self._text: str | None = None
        self._next_allowed = float("-inf")

    @property
    def audio_bytes(self) -> int:
        """Bytes of audio buffered so far."""
        return len(self._pcm)

    def feed(self, pcm: bytes) -> None:
        """Buffer more audio (internal format); nothing is decoded here."""
        room = MAX_STREAM_BYTES - len(self._pcm)
        if room > 0:
            self._pcm += pcm[:room]

    def partial(self) -> str | None:
        """The latest partial text; decodes again only when the caps allow it."""
        owner = self._owner
        if len(self._pcm) - self._decoded_bytes < ms_to_bytes(owner.partial_interval_ms):
            return self._text
        started = self._clock()
        if started < self._next_allowed:
            return self._text
        size = len(self._pcm)
        result = owner.try_decode_partial(bytes(self._pcm))
        if result is None:
            return self._text
        finished = self._clock()
        duty = min(max(owner.partial_max_duty, 0.01), 1.0)
        self._next_allowed = finished + (finished - started) * (1 - duty) / duty
        self._decoded_bytes = size
        self._text = result.text
        return self._text

    def completion(self) -> Completion | None:
        """Adaptive endpointing: where a transcript of all the audio so far stands in the
        intents (`WhisperTranscriber.judge`). A partial that does not cover all of it is
        decoded again now, unless the model is busy or a final waits: then None (the
        utterance ends on silence alone) rather than a judgement of older audio."""
        judge = self._owner.judge
        if judge is None:
            return None
        if self._decoded_bytes < len(self._pcm) or self._text is None:
            size = len(self._pcm)
            result = self._owner.try_decode_partial(bytes(self._pcm))
            if result is None:
                return None
            self._decoded_bytes, self._text = size, result.text
        return judge(self._text or "")

    def finish(self) -> Transcript:
        """Decode the whole utterance alone (the daemon batches finals instead)."""
        return self._owner.transcribe(bytes(self._pcm))
