"""Endpointing: a pure state machine that turns per-frame VAD decisions into utterances.

Like Home Assistant's `VoiceCommandSegmenter`, but it keeps a pre-roll: the audio just
before the detected start, where the soft onset of the first word hides from the VAD.

Per frame the caller passes the audio and the VAD's decision. While idle, a ring buffer
holds the recent frames; a start is declared when enough speech frames fall within a
short window. The utterance then grows frame by frame until enough trailing silence,
the length cap, or `stop()`. With adaptive endpointing (`min_silence_ms`), reaching that
shorter silence emits `EndpointCheck`: the caller asks its recognizer whether what was
said is a whole command and answers with `end_after`, which may end the utterance sooner
(reason `complete`) or wait longer (up to `max_silence_ms`, after the start of a
command); without an answer the configured silence ends it. Short blips
of speech inside the trailing silence do not restart the silence count (hangover), and
single non-speech frames inside words cannot end anything, so one cough or one dropped
frame does not split or prolong a command.

Invariant: `SpeechStarted.audio` followed by every `SpeechAudio.audio` is exactly
`SpeechEnded.audio`, so a streaming recognizer fed with the events sees what a batch
recognizer fed with the final utterance sees.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from math import ceil

from voiced.config import VadConfig
from voiced.const import VAD_FRAME_MS, ms_to_bytes
from voiced.errors import AudioFormatError
from voiced.models import EndReason

log = logging.getLogger(__name__)

CONFIRM_SPEECH_MS = 40
"""A run of speech this long inside the trailing silence resets the silence count."""


@dataclass(frozen=True, slots=True)
class SegmenterSettings:
    """Endpointing parameters (all durations in milliseconds)."""

    frame_ms: int = VAD_FRAME_MS
    """Duration of one frame passed to `Segmenter.process`."""
    pre_roll_ms: int = 300
    """Audio kept before the first speech frame of the start window."""
    start_speech_ms: int = 60
    """Speech needed within the start window (twice this long) to declare a start."""
    min_speech_ms: int = 200
    """Utterances with less speech in total are discarded."""
    end_silence_ms: int = 500
    """Trailing silence that ends an utterance."""
    max_utterance_ms: int = 10_000
    """Hard cap on the utterance audio, pre-roll included."""
    min_silence_ms: int | None = None
    """Adaptive endpointing: trailing silence after which `EndpointCheck` asks whether
    the command is complete (None: fixed endpointing, `end_silence_ms` alone)."""
    max_silence_ms: int | None = None
    """Adaptive endpointing: the longest silence `end_after` may ask for (None: no
    longer than `end_silence_ms`)."""

    @classmethod
    def from_config(cls, vad: VadConfig) -> SegmenterSettings:
        """Settings from the `vad:` section of voiced.yaml."""
        return cls(
            pre_roll_ms=vad.pre_roll_ms,
            start_speech_ms=vad.start_speech_ms,
            min_speech_ms=vad.min_speech_ms,
            end_silence_ms=vad.silence_ms,
            max_utterance_ms=vad.max_utterance_ms,
            min_silence_ms=vad.min_silence_ms if vad.endpoint == "adaptive" else None,
            max_silence_ms=vad.prefix_silence_ms if vad.endpoint == "adaptive" else None,
        )

    def frames(self, ms: float) -> int:
        """Whole frames needed to cover `ms` (at least one)."""
        return max(1, ceil(ms / self.frame_ms))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """An utterance began; `audio` is its start: pre-roll plus the start window."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """One more frame of the current utterance."""

    audio: bytes


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    """Adaptive endpointing: the trailing silence reached `min_silence_ms`. The caller
    judges what was said and may call `Segmenter.end_after(epoch, ...)`."""

    epoch: int
    """Which silence this is: speech resuming starts another and voids the check."""
    silence_ms: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The utterance is complete; `audio` is all of it, pre-roll included."""

    audio: bytes
    reason: EndReason
    speech_ms: float
    """Milliseconds of frames the VAD judged to be speech."""
    trailing_silence_ms: float
    """Milliseconds of silence at the end of `audio`."""


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    """A started utterance had too little speech (less than `min_speech_ms`)."""

    reason: str
    """"too_short"."""
    speech_ms: float = 0.0
    """Milliseconds of speech it had."""


SegmentEvent = SpeechStarted | SpeechAudio | EndpointCheck | SpeechEnded | SpeechDiscarded


class Segmenter:
    """Per-site endpointing state machine; synchronous, no I/O."""

    def __init__(self, settings: SegmenterSettings) -> None:
        self.settings = settings
        self._frame_bytes = ms_to_bytes(settings.frame_ms)
        self._pre_roll = ceil(settings.pre_roll_ms / settings.frame_ms)
        self._start = settings.frames(settings.start_speech_ms)
        self._window = 2 * self._start
        self._end = settings.frames(settings.end_silence_ms)
        self._max = settings.frames(settings.max_utterance_ms)
        self._confirm = settings.frames(CONFIRM_SPEECH_MS)
        self._check = (None if settings.min_silence_ms is None
                       else min(self._end, settings.frames(settings.min_silence_ms)))
        self._longest = max(self._end, settings.frames(settings.max_silence_ms or 0))
        self._history: deque[tuple[bytes, bool]] = deque(maxlen=self._pre_roll + self._window)
        self._audio = bytearray()
        self._in_speech = False
        self._speech_frames = 0
        self._silence_frames = 0
        self._speech_run = 0
        self._epoch = 0
        self._limit = self._end
        """Silence frames that end this silence (`end_after` may change it)."""

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechEnded/SpeechDiscarded."""
        return self._in_speech

    def process(self, frame: bytes, is_speech: bool) -> list[SegmentEvent]:
        """Feed one frame and the VAD's decision for it; return what happened."""
        if len(frame) != self._frame_bytes:
            raise AudioFormatError(
                "frame_size",
                f"segmenter frame is {len(frame)} bytes; expected {self._frame_bytes} "
                f"({self.settings.frame_ms} ms)",
            )
        if not self._in_speech:
            return self._idle(frame, is_speech)
        self._audio += frame
        events: list[SegmentEvent] = [SpeechAudio(frame)]
        if is_speech:
            self._speech_frames += 1
            self._speech_run += 1
            if self._speech_run >= self._confirm:
                if self._silence_frames:
                    self._new_silence()
                self._silence_frames = 0
            else:
                self._silence_frames += 1
        else:
            self._speech_run = 0
            self._silence_frames += 1
        if self._silence_frames >= self._limit:
            events += self._finish(self._silence_reason())
        elif len(self._audio) >= self._max * self._frame_bytes:
            events += self._finish(EndReason.MAX_LENGTH)
        elif self._silence_frames == self._check:
            events.append(EndpointCheck(self._epoch,
                                        float(self._silence_frames * self.settings.frame_ms)))
        return events

    def end_after(self, epoch: int, after_ms: float) -> list[SegmentEvent]:
        """Adaptive endpointing: the silence `epoch` (of an `EndpointCheck`) ends the
        utterance once it lasts `after_ms` instead of `end_silence_ms`: sooner after a
        whole command (reason `complete`), later after the start of one (never later than
        `max_silence_ms`). Ends it now when the silence is already that long; a stale
        epoch (speech resumed, or another utterance) is ignored."""
        if not self._in_speech or epoch != self._epoch:
            return []
        self._limit = min(self._longest, self.settings.frames(after_ms))
        if self._silence_frames >= self._limit:
            return self._finish(self._silence_reason())
        return []

    def _silence_reason(self) -> EndReason:
        return EndReason.COMPLETE if self._limit < self._end else EndReason.SILENCE

    def _new_silence(self) -> None:
        """Speech resumed: the next silence is judged afresh."""
        self._epoch += 1
        self._limit = self._end

    def stop(self, reason: EndReason) -> list[SegmentEvent]:
        """Force the end (stopListening, timeout, shutdown), then reset.

        Returns SpeechEnded when an utterance with enough speech was in progress,
        SpeechDiscarded when it had too little, and nothing when idle.
        """
        events = self._finish(reason) if self._in_speech else []
        self.reset()
        return events

    def reset(self) -> None:
        """Forget everything, pre-roll included."""
        self._history.clear()
        self._audio = bytearray()
        self._in_speech = False
        self._speech_frames = self._silence_frames = self._speech_run = 0
        self._new_silence()

    def _idle(self, frame: bytes, is_speech: bool) -> list[SegmentEvent]:
        self._history.append((frame, is_speech))
        if not is_speech:
            return []
        recent = list(self._history)[-self._window :]
        if sum(speech for _, speech in recent) < self._start:
            return []
        frames = list(self._history)
        first = next(i for i in range(len(frames) - len(recent), len(frames)) if frames[i][1])
        kept = frames[max(0, first - self._pre_roll) :]
        self._history.clear()
        self._audio = bytearray(b"".join(f for f, _ in kept))
        self._in_speech = True
        self._speech_frames = sum(speech for _, speech in kept)
        self._silence_frames = 0
        self._speech_run = self._confirm
        log.debug(
            "speech started: %d frames, %d of them pre-roll",
            len(kept),
            first - (len(frames) - len(kept)),
        )
        return [SpeechStarted(bytes(self._audio))]

    def _finish(self, reason: EndReason) -> list[SegmentEvent]:
        """End the utterance in progress; keep its tail as pre-roll for the next one."""
        frame_ms = self.settings.frame_ms
        speech_ms = float(self._speech_frames * frame_ms)
        audio = bytes(self._audio)
        event: SegmentEvent
        if speech_ms < self.settings.min_speech_ms:
            log.debug("utterance discarded: %.0f ms of speech", speech_ms)
            event = SpeechDiscarded("too_short", speech_ms)
        else:
            event = SpeechEnded(audio, reason, speech_ms, float(self._silence_frames * frame_ms))
        self.reset()
        # the tail is silence (or the cap cut mid-word): as non-speech it can serve as
        # pre-roll but never counts towards the next start
        tail = audio[len(audio) - min(len(audio), self._pre_roll * self._frame_bytes) :]
        for i in range(0, len(tail), self._frame_bytes):
            self._history.append((tail[i : i + self._frame_bytes], False))
        return [event]
