"""From an endpointed utterance (or text) to a handled intent.

`Pipeline` holds what utterance runs share (the ASR and speaker services, the intent
catalog and the routing table, both swapped on reload) and owns the runs in flight: each
utterance becomes one `UtteranceRun` (voiced.runs) in a named task, bounded in number. Every
step is emitted into the event sink; the pipeline never names a wire.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrStream
from voiced.asr.service import AsrService
from voiced.config import Config
from voiced.enrollment import VoiceEnrollment
from voiced.events import EventSink
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.intents.router import Router
from voiced.models import (
    UNKNOWN_SPEAKER,
    EndReason,
    IntentResult,
    SpeakerMatch,
    Termination,
    Transcript,
    Utterance,
)
from voiced.runs import RunResult, UtteranceRun

if TYPE_CHECKING:
    from voiced.intents.recognizer import IntentRecognizer
    from voiced.review import ReviewQueue
    from voiced.speakers.service import SpeakerService

log = logging.getLogger(__name__)

ContinueSession = Callable[[str, str, tuple[str, ...], str | None, str | None], None]
"""`continue_session(site, session_id, intent_filter, custom_data, turn)`; `turn` is
voiced's own (voiced.models.Utterance.turn), None for a plugin's follow-up question."""


class Pipeline:
    """Processes utterances; one instance per daemon."""

    def __init__(
        self,
        config: Config,
        engine: InferenceEngine,
        asr: AsrService,
        recognizer: IntentRecognizer,
        router: Router,
        sink: EventSink,
        speakers: SpeakerService | None = None,
        continue_session: ContinueSession | None = None,
        enrollment: VoiceEnrollment | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.asr = asr
        self.recognizer = recognizer
        self.router = router
        self.sink = sink
        self.speakers = speakers
        self.continue_session = continue_session
        self.enrollment = enrollment
        self.review: ReviewQueue | None = None
        """The review queue ("that's not what I said"), set by the daemon."""
        self.processed = 0
        self.rejected = 0
        """Utterances refused because too many were in flight."""
        self._inflight: set[asyncio.Task[RunResult]] = set()

    @property
    def inflight(self) -> int:
        """Utterance runs not yet ended."""
        return len(self._inflight)

    async def recognize(self, text: str, context: dict[str, Any],
                        intent_filter: Sequence[str] = ()) -> IntentResult:
        """Match text against the current catalog, off the event loop (the fuzzy
        fallback can take a while on large sentence sets)."""
        recognizer = self.recognizer
        return await self.engine.run(recognizer.recognize, text, context, tuple(intent_filter))

    async def process(self, utt: Utterance, decode: StreamingFeed[AsrStream] | None = None,
                      speaker_feed: StreamingFeed[Any] | None = None) -> RunResult:
        """Run one utterance to its end (awaited; `submit` runs it as a task)."""
        return await UtteranceRun(self, utt, decode, speaker_feed).run()

    async def submit(self, utt: Utterance, decode: StreamingFeed[AsrStream] | None,
                     speaker_feed: StreamingFeed[Any] | None) -> None:
        """Start the utterance's run as a task (the site worker goes on listening).

        Beyond `max_utterances_in_flight` the utterance is refused with an `overloaded`
        error and its session ends; nothing waits unboundedly.
        """
        if len(self._inflight) >= self.config.max_utterances_in_flight:
            self.rejected += 1
            for feed in (decode, speaker_feed):
                if feed is not None:
                    await feed.aclose()
            message = (f"{len(self._inflight)} utterances are already being processed "
                       f"(max_utterances_in_flight); this one is dropped")
            await self.sink.error("voiced", "overloaded", message, utt.site, utt.session_id)
            await self.sink.session_ended(utt.site, utt.session_id, Termination.ERROR,
                                          utt.custom_data, message)
            return
        task = asyncio.create_task(self.process(utt, decode, speaker_feed),
                                   name=f"utterance-{utt.site}")
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[RunResult]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # a run catches everything; this would be a bug in the run itself
            log.error("utterance run %s failed", task.get_name(), exc_info=task.exception())

    async def handle_text(self, text: str, *, site: str = "default",
                          speaker: str | None = None, language: str | None = None,
                          session_id: str | None = None) -> RunResult:
        """Text entering after ASR (HTTP text-to-intent, tests): the same events, intents,
        handlers and history as speech. Opens and ends its own session."""
        sid = session_id or str(uuid.uuid4())
        now = time.monotonic()
        utt = Utterance(site=site, session_id=sid, pcm=b"", end_reason=EndReason.TEXT,
                        speech_ms=0.0, last_speech_at=now, endpoint_at=now,
                        started_wall=time.time())
        transcript = Transcript(text, 1.0, language or self.config.intents.language)
        # a name given with the text is claimed, never voice-verified: templates use it,
        # protection rules, `requires_context: speaker` and min_speaker_confidence do not
        match = (SpeakerMatch(speaker, 0.0, verified=False)
                 if speaker and speaker != UNKNOWN_SPEAKER else None)
        await self.sink.session_started(site, sid, None)
        return await UtteranceRun(self, utt, text=transcript, speaker=match).run()

    async def handle_audio(self, pcm: bytes, *, site: str = "default",
                           session_id: str | None = None) -> RunResult:
        """A whole recording (HTTP speech-to-intent): internal-format PCM, already one
        utterance, through ASR, speaker identification, intents and handlers, with the
        same events and history (and kept audio) as a satellite's command. Opens and ends
        its own session."""
        from voiced.const import BYTES_PER_SECOND

        sid = session_id or str(uuid.uuid4())
        now = time.monotonic()
        seconds = len(pcm) / BYTES_PER_SECOND
        utt = Utterance(site=site, session_id=sid, pcm=pcm, end_reason=EndReason.UPLOAD,
                        speech_ms=seconds * 1000, last_speech_at=now, endpoint_at=now,
                        started_wall=time.time() - seconds)
        await self.sink.session_started(site, sid, None)
        return await UtteranceRun(self, utt).run()

    async def drain(self, timeout: float) -> int:
        """Let runs in flight finish within `timeout`, then cancel the rest (each still
        ends its session). Returns how many had to be cancelled."""
        if not self._inflight:
            return 0
        log.info("waiting up to %.1f s for %d utterances in flight", timeout,
                 len(self._inflight))
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
