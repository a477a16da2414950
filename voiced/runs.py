"""One utterance's life, from the endpoint (or text) to its single ending.

An `UtteranceRun` owns the utterance's ASR and speaker streams and the tasks that finish
them (a TaskGroup), and it ends exactly once, in `finally`: whatever fails, every stream is
closed, one OUTCOME event (the history row) is emitted and, unless the conversation goes
on, the session ends with the right Hermes termination.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from voiced.enrollment import ENROLL_INTENT, ENROLL_MARK, ENROLL_TURN, Turn
from voiced.errors import VoicedError
from voiced.feeds import StreamingFeed
from voiced.intents.router import HandlerOutcome, Prepared
from voiced.models import (
    NO_SPEAKER,
    UNKNOWN_SPEAKER,
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
from voiced.protect import CONFIRM_INTENT, CONFIRM_MARK, CONFIRM_TURN, PLACEHOLDER
from voiced.redact import redact
from voiced.teach import NOT_WHAT_I_SAID

if TYPE_CHECKING:
    from voiced.asr.base import AsrStream
    from voiced.pipeline import Pipeline

log = logging.getLogger(__name__)

REFUSAL_TEXT = "Sorry, I can't do that for you."
NO_FOLLOW_UP = frozenset({"text", "upload"})
"""End reasons of utterances that no satellite turn can follow (text entry, uploads): a
command that needs a spoken confirmation is refused for them."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What became of one utterance (returned to text-entry callers and tests)."""

    outcome: Outcome
    transcript: Transcript
    intent: IntentResult
    speaker: SpeakerMatch
    detail: str | None = None
    handled: HandlerOutcome | None = None
    termination: Termination | None = None
    """None when the session goes on (a follow-up question was asked)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Stage -> milliseconds, as in the OUTCOME event."""


class UtteranceRun:
    """Runs one utterance through recognition, intents and handlers; ends it once."""

    def __init__(self, pipeline: Pipeline, utt: Utterance,
                 decode: StreamingFeed[AsrStream] | None = None,
                 speaker_feed: StreamingFeed[Any] | None = None,
                 text: Transcript | None = None, speaker: SpeakerMatch | None = None) -> None:
        self.p = pipeline
        self.utt = utt
        self._decode = decode
        self._speaker_feed = speaker_feed
        self._given_text = text
        self._given_speaker = speaker
        self.timings: dict[str, float] = {}
        # the ending, decided by the stages; the defaults hold if something escapes them
        self.outcome = Outcome.ERROR
        self.detail: str | None = None
        self.termination: Termination | None = Termination.ERROR
        self.error: str | None = None
        self.transcript = Transcript("", 0.0)
        self.intent = IntentResult("", None)
        self.speaker = NO_SPEAKER
        self.handled: HandlerOutcome | None = None
        self.record_row = True

    def _event(self, kind: EventType, data: dict[str, Any] | None = None,
               **typed: Any) -> PipelineEvent:
        return PipelineEvent(kind, self.utt.site, self.utt.session_id, data or {},
                             dict(self.timings), custom_data=self.utt.custom_data,
                             wakeword_id=self.utt.wakeword_id, utterance=self.utt, **typed)

    @property
    def _speakers_on(self) -> bool:
        return self.p.speakers is not None or self._given_speaker is not None

    async def run(self) -> RunResult:
        """The whole life of the utterance; never raises but CancelledError."""
        try:
            await self._stages()
        except asyncio.CancelledError:
            self.outcome, self.detail = Outcome.ERROR, "cancelled: voiced is stopping"
            self.termination, self.error = Termination.ERROR, self.detail
            raise
        except VoicedError as exc:
            await self._fail(exc.component, exc.code, exc.message)
        except Exception as exc:
            log.exception("site %s: utterance failed", self.utt.site)
            await self._fail("voiced", "internal", repr(exc))
        finally:
            await self._end()
        return RunResult(self.outcome, self.transcript, self.intent, self.speaker,
                         self.detail, self.handled, self.termination, dict(self.timings))

    async def _fail(self, component: str, code: str, message: str) -> None:
        self.outcome, self.detail = Outcome.ERROR, f"{code}: {message}"
        self.termination, self.error = Termination.ERROR, message
        await self.p.sink.error(component, code, message, self.utt.site, self.utt.session_id)

    async def _end(self) -> None:
        """The single ending: streams closed, history row, session ended (once)."""
        for feed in (self._decode, self._speaker_feed):
            if feed is not None:
                await feed.aclose()
        self.p.processed += 1
        if self.record_row:
            await self.p.sink.emit(self._event(
                EventType.OUTCOME, {"outcome": str(self.outcome), "detail": self.detail},
                transcript=self.transcript, result=self.intent,
                speaker=self.speaker if self._speakers_on else None))
        if self.termination is not None:
            await self.p.sink.session_ended(self.utt.site, self.utt.session_id,
                                            self.termination, self.utt.custom_data, self.error)

    # ---- the stages ----------------------------------------------------------------------
    async def _stages(self) -> None:
        site = self.utt.site
        protector = self.p.router.protector
        if self.utt.turn == CONFIRM_TURN:
            await self._confirm()
            return
        if protector is not None and protector.waiting(site):
            protector.cancel(site)  # the conversation moved on: the command is dropped
        enrollment = self.p.enrollment
        if enrollment is not None and enrollment.active(site):
            if self.utt.turn == ENROLL_TURN:
                await self._enroll_sample()
                return
            enrollment.cancel(site)
        if self._given_text is None:
            self.timings[Stage.VAD] = (self.utt.endpoint_at - self.utt.last_speech_at) * 1000
        if self.utt.arbitration_ms is not None:
            self.timings[Stage.ARBITRATION] = self.utt.arbitration_ms
        await self._recognize_speech()
        await self._recognize_intent()

    async def _recognize_speech(self) -> None:
        """Transcript and speaker, announced; a secret is never shown (voiced.protect)."""
        await self._listen()
        protector = self.p.router.protector
        if protector is not None and protector.is_secret(self.transcript.text):
            # a PIN said outside its confirmation turn (too late, say) is hidden too
            self.transcript = replace(self.transcript, text=PLACEHOLDER, tokens=())
        await self._announce()

    async def _listen(self) -> None:
        """Transcript and speaker, in parallel; both streams finish or are closed."""
        if self._given_text is not None:
            self.transcript = self._given_text
            self.speaker = self._given_speaker or NO_SPEAKER
        else:
            try:
                async with asyncio.TaskGroup() as group:
                    asr = group.create_task(self._transcribe(), name=f"asr-{self.utt.site}")
                    who = group.create_task(self._identify(), name=f"speaker-{self.utt.site}")
            except ExceptionGroup as failed:
                # the first failure is the story (the other task was cancelled by it)
                raise failed.exceptions[0] from None
            self.transcript, (self.speaker, speaker_ms) = asr.result(), who.result()
            if self.p.speakers is not None:
                self.timings[Stage.SPEAKER] = speaker_ms

    async def _announce(self) -> None:
        """The TRANSCRIPT (and SPEAKER) events."""
        await self.p.sink.emit(self._event(EventType.TRANSCRIPT, {
            "text": self.transcript.text, "confidence": round(self.transcript.confidence, 4),
            "language": self.transcript.language, "isSpeech": self.transcript.is_speech},
            transcript=self.transcript))
        if self._speakers_on:
            await self.p.sink.emit(self._event(EventType.SPEAKER, {
                "name": self.speaker.name, "confidence": round(self.speaker.confidence, 4),
                "verified": self.speaker.verified}, speaker=self.speaker))

    async def _transcribe(self) -> Transcript:
        feed, self._decode = self._decode, None
        try:
            transcript = await self.p.asr.transcribe(self.utt.pcm, feed)
        finally:
            if feed is not None:
                await feed.aclose()
        self.timings[Stage.ASR] = (time.monotonic() - self.utt.endpoint_at) * 1000
        return transcript

    async def _identify(self) -> tuple[SpeakerMatch, float]:
        feed, self._speaker_feed = self._speaker_feed, None
        try:
            if self.p.speakers is None:
                return NO_SPEAKER, 0.0
            started = time.monotonic()
            if feed is not None:
                match: SpeakerMatch = await feed.conclude()
            else:
                match = await self.p.speakers.identify(self.utt.pcm)
            return match, (time.monotonic() - started) * 1000
        finally:
            if feed is not None:
                await feed.aclose()

    async def _recognize_intent(self) -> None:
        transcript, site = self.transcript, self.utt.site
        area = self.p.config.sites.area_for(site)
        started = time.monotonic()
        result = IntentResult(transcript.text, None)
        min_confidence = self.p.config.asr.min_confidence
        if transcript.is_speech and transcript.text.strip() and \
                transcript.confidence >= min_confidence:
            # a claimed name (text entry) never passes a `requires_context: speaker` gate
            who = self.speaker.name if self.speaker.verified else UNKNOWN_SPEAKER
            context: dict[str, Any] = {"site": site, "speaker": who,
                                       "language": transcript.language}
            if area:
                context["area"] = area
            result = await self.p.recognize(transcript.text, context, self.utt.intent_filter)
            if result.name == CONFIRM_INTENT:  # digits outside a confirmation turn
                result = IntentResult(transcript.text, None)
        self.timings[Stage.NLU] = (time.monotonic() - started) * 1000
        self.intent = result
        if result.refused_intent is not None:
            await self._refused(result)
        elif result.name == ENROLL_INTENT:
            await self._enroll_start(result)
        elif result.name == NOT_WHAT_I_SAID:
            await self._not_what_i_said()
        elif not result.recognized:
            reason = ("not_speech" if not transcript.is_speech
                      else "empty" if not transcript.text.strip()
                      else "low_confidence" if transcript.confidence < min_confidence
                      else "no_match")
            self._processing_done()
            await self.p.sink.emit(self._event(
                EventType.NOT_RECOGNIZED, {"text": transcript.text, "reason": reason},
                transcript=transcript, speaker=self._speaker_or_none()))
            self.outcome = Outcome.NOT_SPEECH if reason == "not_speech" else Outcome.NOT_RECOGNIZED
            self.detail = reason
            self.termination, self.error = Termination.INTENT_NOT_RECOGNIZED, None
        else:
            await self._handle(result, area)

    def _processing_done(self) -> None:
        if self._given_text is None:
            self.timings["processing"] = (time.monotonic() - self.utt.endpoint_at) * 1000

    def _speaker_or_none(self) -> SpeakerMatch | None:
        return self.speaker if self._speakers_on else None

    async def _handle(self, result: IntentResult, area: str | None) -> None:
        site, sid, language = self.utt.site, self.utt.session_id, self.transcript.language
        self._processing_done()
        prepared = self.p.router.prepare(
            result, site=site, session_id=sid, speaker=self.speaker, area=area,
            language=language, spoken=str(self.utt.end_reason) not in NO_FOLLOW_UP)
        if prepared.protected:
            # refused by a protection rule: not even announced (no hermes/intent/... for
            # another program to act on)
            assert prepared.outcome is not None
            self.handled = prepared.outcome
            await self._refuse(result.name, prepared.outcome.code or "protected",
                               prepared.outcome.error or "", result)
            return
        if prepared.verdict.confirm:
            await self._ask_confirmation(result, prepared)
            return
        await self._announce_intent(result)
        outcome = prepared.outcome or await self.p.router.run(prepared)
        await self._finish(result, outcome)

    async def _announce_intent(self, result: IntentResult) -> None:
        await self.p.sink.emit(self._event(EventType.INTENT, {
            "intent": result.name, "slots": result.slot_values(),
            "confidence": result.confidence, "matchedBy": result.matched_by,
            "speaker": _speaker_json(self._speaker_or_none())},
            transcript=self.transcript, result=result, speaker=self._speaker_or_none()))

    async def _finish(self, result: IntentResult, outcome: HandlerOutcome) -> None:
        site, sid, language = self.utt.site, self.utt.session_id, self.transcript.language
        self.handled = outcome
        self.timings[Stage.HANDLER] = outcome.duration_ms
        await self.p.sink.emit(self._event(EventType.HANDLED, {
            "intent": result.name, "outcome": outcome.outcome, "plugin": outcome.plugin,
            "error": redact(outcome.error) if outcome.error else None, "code": outcome.code,
            "text": outcome.response.text if outcome.response else None}, result=result))
        self.outcome, self.detail = outcome.outcome, outcome.error
        self.termination, self.error = Termination.NOMINAL, None
        if outcome.outcome == Outcome.REFUSED:
            await self.p.sink.say(site, REFUSAL_TEXT, sid, language)
            self.termination, self.error = Termination.ABORTED_BY_USER, outcome.error
        elif outcome.outcome in (Outcome.ERROR, Outcome.TIMEOUT):
            await self.p.sink.error("handler", outcome.code or "handler_failed",
                                    outcome.error or "", site, sid)
            self.termination, self.error = Termination.ERROR, outcome.error
        response = outcome.response
        if response is not None and response.text:
            await self.p.sink.say(site, response.text, sid, language)
        follow = response.continue_session if response else None
        if follow is not None and self.p.continue_session is not None:
            await self.p.sink.say(site, follow.text, sid, language)
            self.p.continue_session(site, sid, follow.intent_filter, follow.custom_data, None)
            self.termination = None

    async def _ask_confirmation(self, result: IntentResult, prepared: Prepared) -> None:
        """A protected command that waits for its secret: ask for it, run nothing yet."""
        site, sid = self.utt.site, self.utt.session_id
        if self.p.continue_session is None:  # no follow-up turn here (tools, tests)
            await self._refuse(result.name, "protected", "a confirmation needs a follow-up "
                               "turn, which this entry point cannot give", result)
            return
        outcome = self.p.router.hold(prepared)
        self.handled = outcome
        rules = ", ".join(prepared.verdict.confirm)
        await self.p.sink.emit(self._event(EventType.HANDLED, {
            "intent": result.name, "outcome": outcome.outcome, "code": outcome.code,
            "rules": list(prepared.verdict.confirm)}))
        await self.p.sink.say(site, prepared.verdict.prompt, sid, self.transcript.language)
        self.p.continue_session(site, sid, (), CONFIRM_MARK, CONFIRM_TURN)
        self.intent = result
        self.outcome, self.detail = Outcome.CONFIRMING, f"waiting for confirmation: {rules}"
        self.termination = None

    async def _confirm(self) -> None:
        """The answer to a confirmation prompt: checked, then never shown anywhere (the
        transcript and history say `PLACEHOLDER`, the audio is not kept)."""
        await self._listen()
        heard = self.transcript.text
        self.transcript = replace(self.transcript, text=PLACEHOLDER, tokens=())
        self.utt = replace(self.utt, pcm=b"")
        await self._announce()
        prepared, refusal = self.p.router.take_confirmation(
            self.utt.site, self.utt.session_id, heard, self.speaker)
        del heard
        self._processing_done()
        result = prepared.intent if prepared is not None else IntentResult(PLACEHOLDER, None)
        if refusal is not None or prepared is None:
            self.handled = refusal
            code = refusal.code if refusal is not None else None
            await self._refuse(result.name, code or "confirmation_failed",
                               (refusal.error if refusal is not None else None) or "", result)
            return
        self.intent = result
        await self._announce_intent(result)
        await self._finish(result, await self.p.router.run(prepared))

    async def _refused(self, result: IntentResult) -> None:
        """A command this speaker (or site) may not give: refuse aloud and record it."""
        message = (f"{result.refused_intent} is not allowed for speaker {self.speaker.name} "
                   f"on site {self.utt.site}")
        log.warning("site %s: refused %s (speaker %s, %.2f)", self.utt.site,
                    result.refused_intent, self.speaker.name, self.speaker.confidence)
        await self._refuse(result.refused_intent, "speaker_not_allowed", message,
                           IntentResult(result.text, result.refused_intent))

    async def _refuse(self, name: str | None, code: str, message: str,
                      recorded: IntentResult) -> None:
        """Refuse aloud: a HANDLED event without a recognized intent (Hermes hears
        intentNotRecognized), the refusal said, the session ended `abortedByUser`."""
        site, sid = self.utt.site, self.utt.session_id
        self._processing_done()
        refused = IntentResult(recorded.text, None, refused_intent=name)
        await self.p.sink.emit(self._event(EventType.HANDLED, {
            "intent": name, "outcome": Outcome.REFUSED, "code": code, "error": message,
            "speaker": _speaker_json(self.speaker)},
            transcript=self.transcript, result=refused, speaker=self._speaker_or_none()))
        await self.p.sink.say(site, REFUSAL_TEXT, sid, self.transcript.language)
        self.intent = recorded
        self.outcome, self.detail = Outcome.REFUSED, message
        self.termination, self.error = Termination.ABORTED_BY_USER, message

    async def _not_what_i_said(self) -> None:
        """"That's not what I said": the site's previous command goes to the review queue."""
        from voiced.review import not_what_i_said

        self._processing_done()
        text, self.outcome, self.detail = await not_what_i_said(
            self.p.review, self.utt.site, self.p.engine.run)
        await self.p.sink.say(self.utt.site, text, self.utt.session_id,
                              self.transcript.language)
        self.termination, self.error = (
            (Termination.NOMINAL, None) if self.outcome == Outcome.HANDLED
            else (Termination.ABORTED_BY_USER, self.detail))

    async def _enroll_start(self, result: IntentResult) -> None:
        """"Learn my voice as NAME": start (or refuse) an enrollment session."""
        enrollment = self.p.enrollment
        if enrollment is None:
            turn = Turn("Speaker identification is turned off.", False, Outcome.REFUSED)
        else:
            turn = enrollment.start(self.utt.site, result.slot_values().get("person"),
                                    self.speaker, self.utt.pcm)
        await self._enroll_turn(turn)

    async def _enroll_sample(self) -> None:
        assert self.p.enrollment is not None
        turn = await self.p.enrollment.add(self.utt.site, self.utt.pcm)
        self.intent = IntentResult("", ENROLL_INTENT)
        await self._enroll_turn(turn)

    async def _enroll_turn(self, turn: Turn) -> None:
        await self.p.sink.say(self.utt.site, turn.text, self.utt.session_id, None)
        self.outcome, self.detail = turn.outcome, turn.text
        if turn.more and self.p.continue_session is not None:
            self.p.continue_session(self.utt.site, self.utt.session_id, (), ENROLL_MARK,
                                    ENROLL_TURN)
            self.termination = None
        else:
            self.termination = (Termination.NOMINAL if turn.outcome == Outcome.ENROLLED
                                else Termination.ABORTED_BY_USER)
            self.error = None


def _speaker_json(speaker: SpeakerMatch | None) -> dict[str, Any] | None:
    if speaker is None:
        return None
    return {"name": speaker.name, "confidence": round(speaker.confidence, 4),
            "verified": speaker.verified}
