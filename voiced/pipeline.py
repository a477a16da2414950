"""From an endpointed utterance to a handled intent.

Recognition and speaker identification run in parallel through the inference engine;
the intent recognizer gets `{site, area, speaker}` as context; the router hands the
intent to its plugins; every step is published (Hermes and native) and recorded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrStream, Transcriber
from voiced.config import Config
from voiced.enrollment import ENROLL_INTENT, ENROLL_MARK, Turn, VoiceEnrollment
from voiced.errors import VoicedError
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine, MicroBatcher
from voiced.intents.router import HandlerOutcome, Router
from voiced.models import (
    NO_SPEAKER,
    EventType,
    IntentResult,
    Outcome,
    PipelineEvent,
    SpeakerMatch,
    Stage,
    Termination,
    Transcript,
    Utterance,
)
from voiced.storage import History, UtteranceRecord
from voiced.transport import hermes
from voiced.transport.outputs import Outputs

if TYPE_CHECKING:
    from voiced.intents.recognizer import IntentRecognizer
    from voiced.speakers.service import SpeakerService

log = logging.getLogger(__name__)

REFUSAL_TEXT = "Sorry, I can't do that for you."


class Pipeline:
    """Processes utterances; one instance per daemon."""

    def __init__(
        self,
        config: Config,
        engine: InferenceEngine,
        transcriber: Transcriber,
        recognizer: IntentRecognizer,
        router: Router,
        outputs: Outputs,
        history: History | None,
        speakers: SpeakerService | None = None,
        say: Callable[[str, str, str | None, str | None], Awaitable[None]] | None = None,
        continue_session: Callable[[str, str, tuple[str, ...], str | None], None] | None = None,
        enrollment: VoiceEnrollment | None = None,
    ) -> None:
        self.config = config
        self._engine = engine
        self._transcriber = transcriber
        self.recognizer = recognizer
        self.router = router
        self._outputs = outputs
        self._history = history
        self._speakers = speakers
        self._say = say or outputs.say
        self._continue = continue_session
        self._enrollment = enrollment
        self._batcher: MicroBatcher[bytes, Transcript] | None = None
        if transcriber.supports_batching:
            self._batcher = MicroBatcher(engine, transcriber.transcribe_batch,
                                         config.asr.batch_window_ms / 1000, config.asr.max_batch,
                                         name="asr")
        self.processed = 0

    async def close(self) -> None:
        """Stop the batcher."""
        if self._batcher is not None:
            await self._batcher.close()

    async def _transcribe(self, utt: Utterance,
                          decode: StreamingFeed[AsrStream] | None) -> Transcript:
        if self._batcher is not None:
            if decode is not None:
                decode.cancel()
            return await self._batcher.submit(utt.pcm)
        if decode is not None:
            stream = await decode.finish()
            return await self._engine.run(stream.finish)
        return await self._engine.run(self._transcriber.transcribe, utt.pcm)

    async def _identify(self, utt: Utterance,
                        feed: StreamingFeed[Any] | None) -> tuple[SpeakerMatch, float]:
        """Who spoke; the time it took after the endpoint (ms)."""
        if self._speakers is None:
            return NO_SPEAKER, 0.0
        started = time.monotonic()
        if feed is not None:
            stream = await feed.finish()
            match = await self._engine.run(stream.finish)
        else:
            match = await self._speakers.identify(utt.pcm)
        return match, (time.monotonic() - started) * 1000

    async def process(self, utt: Utterance, decode: StreamingFeed[AsrStream] | None,
                      speaker_feed: StreamingFeed[Any] | None = None) -> None:
        """Run one utterance through recognition, intents and handlers."""
        site = utt.site
        if self._enrollment is not None and self._enrollment.active(site):
            if utt.custom_data == ENROLL_MARK:
                await self._enroll_sample(utt)
                return
            self._enrollment.cancel(site)
        timings: dict[str, float] = {Stage.VAD: (utt.endpoint_at - utt.last_speech_at) * 1000}
        try:
            asr_task = asyncio.create_task(self._transcribe(utt, decode), name=f"asr-{site}")
            speaker_task = asyncio.create_task(self._identify(utt, speaker_feed),
                                               name=f"speaker-{site}")
            try:
                transcript = await asr_task
            finally:
                if not asr_task.done():
                    asr_task.cancel()
            timings[Stage.ASR] = (time.monotonic() - utt.endpoint_at) * 1000
            speaker, speaker_ms = await speaker_task
            if self._speakers is not None:
                timings[Stage.SPEAKER] = speaker_ms
        except VoicedError as exc:
            await self._failed(utt, exc.component, exc.code, exc.message, timings)
            return
        except Exception as exc:
            log.exception("site %s: recognition failed", site)
            await self._failed(utt, "asr", "asr_failed", repr(exc), timings)
            return
        await self._after_asr(utt, transcript, speaker, timings)

    async def _after_asr(self, utt: Utterance, transcript: Transcript, speaker: SpeakerMatch,
                         timings: dict[str, float]) -> None:
        site, sid = utt.site, utt.session_id
        # audio the recognizer judged not to be speech (a TV, a cough) was heard as nothing:
        # Hermes gets empty text, the event and the history keep what was decoded
        heard = transcript if transcript.is_speech else replace(transcript, text="", tokens=())
        await self._outputs.publish("hermes/asr/textCaptured", hermes.text_captured(
            heard, utt.duration_s, site, sid, utt.wakeword_id))
        await self._outputs.event(PipelineEvent(EventType.TRANSCRIPT, site, sid, {
            "text": transcript.text, "confidence": round(transcript.confidence, 4),
            "language": transcript.language, "isSpeech": transcript.is_speech}, timings))
        if self._speakers is not None:
            await self._outputs.event(PipelineEvent(EventType.SPEAKER, site, sid,
                                                    hermes.speaker_json(speaker) or {}))
        area = self.config.sites.area_for(site)
        nlu_started = time.monotonic()
        result = IntentResult(transcript.text, None)
        if (transcript.is_speech and transcript.text.strip()
                and transcript.confidence >= self.config.asr.min_confidence):
            context: dict[str, Any] = {"site": site, "speaker": speaker.name,
                                       "language": transcript.language}
            if area:
                context["area"] = area
            result = self.recognizer.recognize(transcript.text, context, utt.intent_filter)
        timings[Stage.NLU] = (time.monotonic() - nlu_started) * 1000
        if result.refused_intent is not None:
            await self._refused(utt, transcript, result, speaker, timings)
            return
        if result.name == ENROLL_INTENT:
            await self._enroll_start(utt, transcript, result, speaker, timings)
            return
        if not result.recognized:
            timings["processing"] = (time.monotonic() - utt.endpoint_at) * 1000
            reason = ("not_speech" if not transcript.is_speech
                      else "empty" if not transcript.text.strip()
                      else "low_confidence"
                      if transcript.confidence < self.config.asr.min_confidence else "no_match")
            await self._outputs.publish("hermes/nlu/intentNotRecognized",
                                        hermes.intent_not_recognized(
                                            heard.text, site, sid, utt.custom_data,
                                            speaker if self._speakers else None))
            await self._outputs.event(PipelineEvent(EventType.NOT_RECOGNIZED, site, sid, {
                "text": transcript.text, "reason": reason}, timings))
            await self._end(utt, Termination.INTENT_NOT_RECOGNIZED)
            await self._record(utt, transcript, result, speaker,
                               Outcome.NOT_SPEECH if reason == "not_speech"
                               else Outcome.NOT_RECOGNIZED, reason, timings)
            return
        timings["processing"] = (time.monotonic() - utt.endpoint_at) * 1000
        payload = hermes.intent_parsed(result, transcript, site, sid, utt.custom_data,
                                       utt.wakeword_id, speaker if self._speakers else None,
                                       timings)
        await self._outputs.publish("hermes/nlu/intentParsed", payload)
        await self._outputs.publish(f"hermes/intent/{result.name}", payload)
        await self._outputs.event(PipelineEvent(EventType.INTENT, site, sid, {
            "intent": result.name, "slots": result.slot_values(),
            "confidence": result.confidence, "matchedBy": result.matched_by,
            "speaker": hermes.speaker_json(speaker)}, timings))
        outcome = await self.router.handle(result, site=site, session_id=sid, speaker=speaker,
                                            area=area, language=transcript.language)
        timings[Stage.HANDLER] = outcome.duration_ms
        await self._handled(utt, transcript, result, speaker, outcome, timings)

    async def _handled(self, utt: Utterance, transcript: Transcript, result: IntentResult,
                       speaker: SpeakerMatch, outcome: HandlerOutcome,
                       timings: dict[str, float]) -> None:
        site, sid = utt.site, utt.session_id
        await self._outputs.event(PipelineEvent(EventType.HANDLED, site, sid, {
            "intent": result.name, "outcome": outcome.outcome, "plugin": outcome.plugin,
            "error": outcome.error, "code": outcome.code,
            "text": outcome.response.text if outcome.response else None}, timings))
        termination = Termination.NOMINAL
        error = None
        if outcome.outcome == Outcome.REFUSED:
            await self._say(site, REFUSAL_TEXT, sid, transcript.language)
            termination, error = Termination.ABORTED_BY_USER, outcome.error
        elif outcome.outcome in (Outcome.ERROR, Outcome.TIMEOUT):
            await self._outputs.error("handler", outcome.code or "handler_failed",
                                      outcome.error or "", site, sid)
            termination, error = Termination.ERROR, outcome.error
        response = outcome.response
        if response is not None and response.text:
            await self._say(site, response.text, sid, transcript.language)
        follow = response.continue_session if response else None
        if follow is not None and self._continue is not None:
            await self._say(site, follow.text, sid, transcript.language)
            self._continue(site, sid, follow.intent_filter, follow.custom_data)
        else:
            await self._end(utt, termination, error)
        await self._record(utt, transcript, result, speaker, outcome.outcome, outcome.error,
                           timings)

    async def _refused(self, utt: Utterance, transcript: Transcript, result: IntentResult,
                       speaker: SpeakerMatch, timings: dict[str, float]) -> None:
        """A command this speaker (or site) may not give: refuse aloud and record it."""
        site, sid = utt.site, utt.session_id
        timings["processing"] = (time.monotonic() - utt.endpoint_at) * 1000
        message = (f"{result.refused_intent} is not allowed for speaker {speaker.name} "
                   f"on site {site}")
        log.warning("site %s: refused %s (speaker %s, %.2f)", site, result.refused_intent,
                    speaker.name, speaker.confidence)
        await self._outputs.publish("hermes/nlu/intentNotRecognized",
                                    hermes.intent_not_recognized(
                                        transcript.text, site, sid, utt.custom_data,
                                        speaker if self._speakers else None))
        await self._outputs.event(PipelineEvent(EventType.HANDLED, site, sid, {
            "intent": result.refused_intent, "outcome": Outcome.REFUSED,
            "code": "speaker_not_allowed", "error": message,
            "speaker": hermes.speaker_json(speaker)}, timings))
        await self._say(site, REFUSAL_TEXT, sid, transcript.language)
        await self._end(utt, Termination.ABORTED_BY_USER, message)
        refused = IntentResult(result.text, result.refused_intent)
        await self._record(utt, transcript, refused, speaker, Outcome.REFUSED, message, timings)

    async def _enroll_start(self, utt: Utterance, transcript: Transcript, result: IntentResult,
                            speaker: SpeakerMatch, timings: dict[str, float]) -> None:
        """"Learn my voice as NAME": start (or refuse) an enrollment session."""
        if self._enrollment is None:
            turn = Turn("Speaker identification is turned off.", False, Outcome.REFUSED)
        else:
            turn = self._enrollment.start(utt.site, result.slot_values().get("person"), speaker)
        await self._enroll_turn(utt, turn)
        await self._record(utt, transcript, result, speaker, turn.outcome, turn.text, timings)

    async def _enroll_sample(self, utt: Utterance) -> None:
        assert self._enrollment is not None
        turn = await self._enrollment.add(utt.site, utt.pcm)
        await self._enroll_turn(utt, turn)
        await self._record(utt, Transcript("", 0.0), IntentResult("", ENROLL_INTENT), NO_SPEAKER,
                           turn.outcome, turn.text, {})

    async def _enroll_turn(self, utt: Utterance, turn: Turn) -> None:
        await self._say(utt.site, turn.text, utt.session_id, None)
        if turn.more and self._continue is not None:
            self._continue(utt.site, utt.session_id, (), ENROLL_MARK)
        else:
            await self._end(utt, Termination.NOMINAL if turn.outcome == Outcome.ENROLLED
                            else Termination.ABORTED_BY_USER, None)

    async def _failed(self, utt: Utterance, component: str, code: str, message: str,
                      timings: dict[str, float]) -> None:
        await self._outputs.error(component, code, message, utt.site, utt.session_id)
        await self._end(utt, Termination.ERROR, message)
        await self._record(utt, Transcript("", 0.0), IntentResult("", None), NO_SPEAKER,
                           Outcome.ERROR, f"{code}: {message}", timings)

    async def _end(self, utt: Utterance, reason: Termination, error: str | None = None) -> None:
        await self._outputs.session_ended(utt.site, utt.session_id, reason, utt.custom_data, error)

    async def _record(self, utt: Utterance, transcript: Transcript, result: IntentResult,
                      speaker: SpeakerMatch, outcome: str, detail: str | None,
                      timings: dict[str, float]) -> None:
        self.processed += 1
        if self._history is None:
            return
        record = UtteranceRecord(
            id=None, site=utt.site, session_id=utt.session_id, started_at=utt.started_wall,
            ended_at=utt.started_wall + utt.duration_s, text=transcript.text,
            confidence=transcript.confidence, language=transcript.language, intent=result.name,
            slots=result.slot_values(),
            speaker=speaker.name if self._speakers is not None else None,
            speaker_confidence=speaker.confidence if self._speakers is not None else None,
            outcome=outcome, outcome_detail=detail,
            timings_ms={str(k): round(v, 2) for k, v in timings.items()},
            end_reason=str(utt.end_reason))
        try:
            await self._engine.run(self._history.add_utterance, record)
        except Exception:
            log.exception("site %s: could not record the utterance in history", utt.site)
