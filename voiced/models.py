"""Value objects that cross stage boundaries.

Data flows forward only: transport → session/VAD → ASR + speaker → intents → handlers.
Every object here is frozen; audio is always internal format (see `voiced.const`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """Pipeline stages, used for timings, errors and events."""

    INGEST = "ingest"
    VAD = "vad"
    ARBITRATION = "arbitration"
    """The endpointed utterance waiting for its room group's decision (voiced.arbitration)."""
    ASR = "asr"
    SPEAKER = "speaker"
    NLU = "nlu"
    HANDLER = "handler"


class EndReason(StrEnum):
    """Why an utterance ended."""

    SILENCE = "silence"
    COMPLETE = "complete"
    """Adaptive endpointing: a whole command followed by a short silence (`vad.endpoint`)."""
    MAX_LENGTH = "max_length"
    STOP_LISTENING = "stop_listening"
    TIMEOUT = "timeout"
    SHUTDOWN = "shutdown"
    TEXT = "text"
    """Not audio: text that entered the pipeline after ASR (HTTP, tests)."""
    UPLOAD = "upload"
    """Audio given whole (HTTP speech-to-intent), not endpointed by the VAD."""
    CANCELLED = "cancelled"
    """The site was reset (a new startListening, a stop) while the utterance ran."""


class Termination(StrEnum):
    """Hermes `sessionEnded` termination reasons."""

    NOMINAL = "nominal"
    ABORTED_BY_USER = "abortedByUser"
    INTENT_NOT_RECOGNIZED = "intentNotRecognized"
    TIMEOUT = "timeout"
    ERROR = "error"


class Outcome(StrEnum):
    """What became of an utterance, as recorded in the history."""

    HANDLED = "handled"
    NOT_RECOGNIZED = "not_recognized"
    NOT_SPEECH = "not_speech"
    """The recognizer judged the audio not to be speech (Whisper's no-speech probability)."""
    NO_HANDLER = "no_handler"
    REFUSED = "refused"
    ERROR = "error"
    TIMEOUT = "timeout"
    ENROLLING = "enrolling"
    ENROLLED = "enrolled"
    CONFIRMING = "confirming"
    """A protected command waits for its spoken confirmation (voiced.protect)."""
    ARBITRATION_LOST = "arbitration_lost"
    """Another satellite of the room group answered this command (voiced.arbitration)."""


class EventType(StrEnum):
    """Native events published under `voiced/events/<site>`."""

    SESSION_STARTED = "session_started"
    SPEECH_STARTED = "speech_started"
    SPEECH_ENDED = "speech_ended"
    PARTIAL = "partial"
    TRANSCRIPT = "transcript"
    SPEAKER = "speaker"
    INTENT = "intent"
    NOT_RECOGNIZED = "not_recognized"
    HANDLED = "handled"
    ERROR = "error"
    SAY = "say"
    """An answer to speak on the satellite (an audio-out request)."""
    ARBITRATION = "arbitration"
    """Which satellite of a room group answers a command several heard, and why."""
    OUTCOME = "outcome"
    """What became of one utterance: exactly one per utterance run (the history row)."""
    SESSION_ENDED = "session_ended"


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of satellite audio after conversion to the internal format."""

    site: str
    """Satellite (Hermes siteId)."""
    pcm: bytes
    """16 kHz, 16-bit little-endian, mono samples."""
    received: float
    """`time.monotonic()` seconds when the message arrived."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One endpointed stretch of speech from a satellite."""

    site: str
    session_id: str
    pcm: bytes
    """16 kHz, 16-bit mono, including the pre-roll before the detected start."""
    end_reason: EndReason
    speech_ms: float
    """Milliseconds of frames the VAD judged to be speech."""
    last_speech_at: float
    """Monotonic seconds when the last speech frame arrived."""
    endpoint_at: float
    """Monotonic seconds when the endpoint was decided."""
    started_wall: float
    """Wall-clock (epoch) seconds of the first audio in `pcm`."""
    wakeword_id: str | None = None
    custom_data: str | None = None
    intent_filter: tuple[str, ...] = ()
    """Only these intents may match (empty: any)."""
    turn: str | None = None
    """A turn voiced itself asked for: `confirm` (the answer to a protected command's
    prompt) or `enroll` (a voice enrollment sample); None for every other utterance.
    Set only by voiced's own follow-up, never from what a client sends (customData is
    the client's)."""
    arbitration_ms: float | None = None
    """Milliseconds the endpointed utterance waited in arbitration for its room group's
    decision before it ran (about 0 when decided before its end); None: its site is in
    no group."""

    @property
    def duration_s(self) -> float:
        """Length of `pcm` in seconds."""
        from voiced.const import BYTES_PER_SECOND

        return len(self.pcm) / BYTES_PER_SECOND


@dataclass(frozen=True, slots=True)
class Transcript:
    """What the recognizer heard."""

    text: str
    confidence: float
    """0..1."""
    language: str = "en"
    tokens: tuple[str, ...] = ()
    no_speech_prob: float = 0.0
    """0..1; high values mean the audio was probably not speech."""
    is_speech: bool = True
    """False when the recognizer rejected the audio as not speech."""


@dataclass(frozen=True, slots=True)
class SpeakerMatch:
    """Who spoke."""

    name: str
    """Enrolled name, or "unknown"."""
    confidence: float
    """Cosine score of the best match (0..1 after clipping)."""
    scores: Mapping[str, float] = field(default_factory=dict)
    verified: bool = True
    """True when the voice was identified; False for a name merely claimed (text entry),
    which templates may use but protection rules and `min_speaker_confidence` never trust."""

    @property
    def known(self) -> bool:
        """True when a person was identified."""
        return self.name != UNKNOWN_SPEAKER


UNKNOWN_SPEAKER = "unknown"
NO_SPEAKER = SpeakerMatch(name=UNKNOWN_SPEAKER, confidence=0.0)


@dataclass(frozen=True, slots=True)
class Slot:
    """A matched slot, with character offsets of its raw value in the input text."""

    name: str
    value: Any
    raw_value: str
    entity: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class IntentResult:
    """The outcome of intent recognition for one transcript."""

    text: str
    name: str | None
    """Intent name, or None when nothing matched."""
    slots: tuple[Slot, ...] = ()
    confidence: float = 0.0
    matched_by: str = "template"
    """"template" or "fuzzy"."""
    refused_intent: str | None = None
    """An intent the text matches but the context (speaker, site, area) does not allow."""

    @property
    def recognized(self) -> bool:
        """True when an intent matched."""
        return self.name is not None

    def slot_values(self) -> dict[str, Any]:
        """Slots as a plain {name: value} mapping."""
        return {s.name: s.value for s in self.slots}


@dataclass(frozen=True, slots=True)
class PipelineEvent:
    """What a stage tells the event sink; `to_json()` is what `voiced/events/<site>` shows.

    The typed fields after `timings_ms` are for subscribers that need more than the JSON
    (the Hermes bridge builds its payloads from them, the history writer its rows); they
    are never published as they are.
    """

    type: EventType
    site: str
    session_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    """Stage → milliseconds."""
    custom_data: str | None = None
    """The Hermes session's customData."""
    wakeword_id: str | None = None
    utterance: Utterance | None = None
    transcript: Transcript | None = None
    result: IntentResult | None = None
    speaker: SpeakerMatch | None = None
    """Who spoke; None when speaker identification is off."""

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "type": str(self.type),
            "site": self.site,
            "sessionId": self.session_id,
            **dict(self.data),
            "timings": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
