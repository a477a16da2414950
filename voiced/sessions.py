"""Per-satellite state: ingest queue, re-framing, VAD, endpointing, listening sessions.

Each site has one `SiteWorker` with a bounded queue and one task. The MQTT callback only
classifies messages and enqueues them; the worker converts audio to the internal format,
re-frames it for the VAD, runs the segmenter and feeds the recognizer while the person is
still speaking. A finished utterance goes to the pipeline callback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from voiced.arbiter_service import Contender
from voiced.asr.base import AsrStream, Completion
from voiced.asr.service import AsrService
from voiced.audio.buffers import FrameBuffer
from voiced.audio.wav import StreamConverter
from voiced.config import SiteMode, VadConfig
from voiced.const import BYTES_PER_SECOND, VAD_FRAME_BYTES, VAD_FRAME_MS
from voiced.events import EventSink
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine
from voiced.models import EndReason, EventType, PipelineEvent, Termination, Utterance
from voiced.protect import CONFIRM_TURN
from voiced.site_feeds import UtteranceFeeds
from voiced.site_inbox import Audio, Control, SiteInbox
from voiced.site_sessions import (
    Listening,
    SessionControl,
    _new_id,
)
from voiced.vad.detectors import new_detector
from voiced.vad.segmenter import (
    EndpointCheck,
    Segmenter,
    SegmenterSettings,
    SpeechAudio,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
)

log = logging.getLogger(__name__)

YIELD_EVERY = 8
"""Items processed from a backlog before letting other tasks run."""
LEVEL_FLOOR_DBFS = -96.0
"""The quietest level reported (16-bit silence); digital zero reads as this."""


def level_dbfs(pcm: bytes) -> float:
    """RMS level of internal-format PCM in dB relative to full scale (a live meter)."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
    if samples.size == 0:
        return LEVEL_FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float32)))))
    return max(LEVEL_FLOOR_DBFS, 20 * math.log10(rms / 32768)) if rms > 0 else LEVEL_FLOOR_DBFS


UtteranceHandler = Callable[
    [Utterance, "StreamingFeed[AsrStream] | None", "StreamingFeed[Any] | None"], Awaitable[None]]


class SiteWorker(SessionControl, SiteInbox):
    """Everything about one satellite: its queue (SiteInbox), VAD, endpointing, sessions."""

    def __init__(self, site: str, mode: SiteMode, vad: VadConfig, queue_size: int,
                 engine: InferenceEngine, asr: AsrService, sink: EventSink,
                 on_utterance: UtteranceHandler, speakers: Any = None,
                 contender: Contender | None = None) -> None:
        super().__init__(site, queue_size)
        self.contender = contender
        """This site's part in its room group's arbitration (None: in no group)."""
        self.mode = mode
        self._vad_config = vad
        self._sink = sink
        self._on_utterance = on_utterance
        self._feeds = UtteranceFeeds(site, engine, asr, speakers, self._partial)
        self._converter = StreamConverter()
        self._framer = FrameBuffer(VAD_FRAME_BYTES)
        self._vad = new_detector(vad)
        self._segmenter = Segmenter(SegmenterSettings.from_config(vad))
        self._listening: Listening | None = None
        self._last_speech_at = 0.0
        self._started_wall = 0.0
        self._current_session = ""
        self._last_audio_at = 0.0
        self._frame_is_speech = False
        self._judged: tuple[str, float] | None = None
        """The last endpoint check of the utterance: its judgement and how long it took."""
        self.frames = 0
        self._handing_off: Utterance | None = None
        self.crashes = 0
        """Times processing an item failed unexpectedly (each is logged; the site resets)."""
        self.level_dbfs = LEVEL_FLOOR_DBFS
        """RMS level of the last audio chunk processed (dBFS; the HTTP status meter)."""
        self.last_audio_wall: float | None = None
        """Wall-clock (epoch) seconds when audio was last processed; None: never."""

    @property
    def busy(self) -> bool:
        """Speech in progress and open sessions are never shed (SiteInbox)."""
        return self._segmenter.in_speech or self._listening is not None

    def status(self) -> dict[str, Any]:
        """For voiced/status."""
        return {"frames": self.frames, "dropped": self.dropped, "shed": self.shed,
                "too_fast": self.too_fast,
                "queued": self.queue.qsize(),
                "mode": str(self.mode), "realtime": round(self.arrival.realtime, 3),
                "behind": self.arrival.behind, "crashes": self.crashes}

    # ---- the worker task -------------------------------------------------------------
    async def run(self) -> None:
        """Process the queue until shutdown is requested and the queue is empty.

        Nothing that goes wrong with one item ends the worker: the failure is logged,
        counted, answered on hermes/error, and the site is reset (an open session ends
        with `error`, its streams are closed), then the next item is processed.
        """
        done = 0
        while True:
            if self._stopping and self.queue.empty():
                await self._guard(self._shutdown())
                return
            if self.queue.empty():
                # no timer per item: a site with something that can time out (an open
                # session, speech in progress) gets "tick" controls from its owner
                item = await self.queue.get()
            else:
                # a backlog: no timer per item; let other sites (and the reader) run now
                # and then, and drop stale silence when idle
                done += 1
                if done % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                item = self._next_shedding()
            if isinstance(item, Control) and item.kind in ("shutdown", "tick"):
                if item.kind == "tick":
                    await self._guard(self._check_timeout())
                continue
            if isinstance(item, Audio):
                await self._guard(self._audio(item))
            else:
                await self._guard(self._control(item))

    async def _guard(self, step: Awaitable[None]) -> None:
        try:
            await step
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.crashes += 1
            log.exception("site %s: processing failed; resetting the site", self.site)
            await self._recover(exc)

    async def _recover(self, exc: Exception) -> None:
        """Back to a clean idle state after an unexpected failure (never raises)."""
        listening, self._listening = self._listening, None
        in_speech = self._segmenter.in_speech
        # an utterance that ended but was never handed over still owes its session an end
        lost, self._handing_off = self._handing_off, None
        self._segmenter.reset()
        self._framer.clear()
        try:
            self._feeds.drop()
            if self.contender is not None:
                await self.contender.discarded()
            await self._sink.error("audioServer", getattr(exc, "code", "internal"),
                                   f"{type(exc).__name__}: {exc}", self.site,
                                   self._current_session or None)
            if lost is not None:
                await self._sink.session_ended(self.site, lost.session_id, Termination.ERROR,
                                               lost.custom_data, str(exc))
            if listening is not None or in_speech:
                await self._sink.session_ended(
                    self.site, listening.session_id if listening else self._current_session,
                    Termination.ERROR, listening.custom_data if listening else None, str(exc))
        except Exception:
            log.exception("site %s: could not report the failure", self.site)

    @property
    def open_sessions(self) -> tuple[str, ...]:
        """The session listening here and the one whose utterance is in progress."""
        listening = self._listening.session_id if self._listening is not None else None
        current = self._current_session if self._segmenter.in_speech else None
        return tuple(s for s in (listening, current) if s)

    @property
    def needs_tick(self) -> bool:
        """True while something on this site can time out (a session waiting for speech,
        speech whose audio may stop arriving): its owner then calls `tick()` every
        voiced.sites.IDLE_CHECK_S."""
        return self._listening is not None or self._segmenter.in_speech

    @property
    def idle(self) -> bool:
        """True when stopping the worker loses nothing: no queued input, no open session,
        no speech in progress, no utterance being handed over."""
        return (self.queue.empty() and self._listening is None
                and not self._segmenter.in_speech and self._handing_off is None)

    @property
    def accepting(self) -> bool:
        """True when audio on this site can start or continue an utterance."""
        return self.mode == SiteMode.ALWAYS or self._listening is not None

    async def _audio(self, item: Audio) -> None:
        self._last_audio_at = item.received
        pcm = self._converter.convert(item.pcm, item.fmt.rate, item.fmt.width,
                                      item.fmt.channels, item.float_format)
        if pcm:
            self.level_dbfs = level_dbfs(pcm)
            self.last_audio_wall = time.time()
        for frame in self._framer.push(pcm):
            self.frames += 1
            if not self.accepting:
                if self.contender is not None:
                    self.contender.push(frame, False)  # the noise floor, heard all along
                continue
            if self._listening is not None:
                self._listening.heard_ms += VAD_FRAME_MS
                if not self._segmenter.in_speech:
                    await self._check_timeout()
                    if not self.accepting:
                        continue
            speech = self._vad.is_speech(frame)
            self._frame_is_speech = speech
            if speech:
                self._last_speech_at = item.received
            if self.contender is not None:
                self.contender.push(frame, speech)
            for event in self._segmenter.process(frame, speech):
                await self._segment_event(event)
            if self.contender is not None:
                await self._contend(self.contender)

    async def _segment_event(self, event: object) -> None:
        if isinstance(event, SpeechStarted):
            self._started_wall = time.time() - len(event.audio) / BYTES_PER_SECOND
            session_id = self._listening.session_id if self._listening else _new_id()
            self._current_session = session_id
            await self._sink.emit(
                PipelineEvent(EventType.SPEECH_STARTED, self.site, session_id))
            # in a contest, the models wait for arbitration (voiced.arbiter_service)
            if self.contender is None or await self.contender.started(session_id,
                                                                      event.audio):
                self._open_feeds(event.audio)
        elif isinstance(event, SpeechAudio):
            self._feeds.push(event.audio, self._frame_is_speech)
        elif isinstance(event, EndpointCheck):
            await self._endpoint_check(event)
        elif isinstance(event, SpeechDiscarded):
            self._feeds.drop()
            if self.contender is not None:
                await self.contender.discarded()
        elif isinstance(event, SpeechEnded):
            await self._ended(event)

    def _open_feeds(self, audio: bytes) -> None:
        """Start the utterance's ASR and speaker streams with `audio` (all of it so far)."""
        self._judged = None
        # the answer to a confirmation prompt (a PIN) is never shown, not even as partial
        # transcripts (voiced.protect)
        listening = self._listening
        self._feeds.open(audio, listening is not None and listening.turn == CONFIRM_TURN)

    async def _contend(self, contender: Contender) -> None:
        """Carry out arbitration's verdict on the utterance in progress."""
        feeds = await contender.step()
        if feeds is True:
            self._open_feeds(bytes(contender.audio))
        elif feeds is False:
            self._feeds.drop()

    async def _endpoint_check(self, check: EndpointCheck) -> None:
        """Adaptive endpointing: the silence reached `vad.min_silence_ms`; the recognizer's
        hypothesis of everything fed so far decides how long this silence may last (a
        whole command: no longer; the start of one: longer; docs/endpoint.md). Awaited
        here, so the segmenter is where it was when asked."""
        decode = self._feeds.decode
        if decode is None:
            return  # no streaming recognizer (or arbitration holds the models): silence
        started = time.monotonic()
        try:
            completion: Completion | None = await decode.completion()
            self._judged = (str(completion), (time.monotonic() - started) * 1000)
        except Exception as exc:  # no judgement: the silence decides; the final decode
            # reports a recognizer that really failed
            log.warning("site %s: the endpoint check failed: %r", self.site, exc)
            return
        after = self._vad_config.adaptive_silence_ms(completion)
        if decode is not self._feeds.decode or after is None:
            return
        for event in self._segmenter.end_after(check.epoch, after):
            await self._segment_event(event)

    async def _partial(self, text: str) -> None:
        await self._sink.emit(PipelineEvent(EventType.PARTIAL, self.site,
                                                self._current_session, {"text": text}))

    async def _ended(self, event: SpeechEnded) -> None:
        listening = self._listening
        session_id = listening.session_id if listening else self._current_session
        now = time.monotonic()
        utterance = Utterance(
            site=self.site,
            session_id=session_id,
            pcm=event.audio,
            end_reason=event.reason,
            speech_ms=event.speech_ms,
            last_speech_at=self._last_speech_at or now,
            endpoint_at=now,
            started_wall=self._started_wall,
            wakeword_id=listening.wakeword_id if listening else None,
            custom_data=listening.custom_data if listening else None,
            intent_filter=listening.intent_filter if listening else (),
            turn=listening.turn if listening else None,
        )
        decode, speaker = self._feeds.take()
        judged, self._judged = self._judged, None
        # handing over from here on: the site is not idle while its session starts
        self._handing_off = utterance
        if listening is None:
            # always-listening: the session exists from the moment a command was heard
            await self._sink.session_started(self.site, session_id, None)
        self._listening = None
        self._segmenter.reset()
        await self._sink.emit(PipelineEvent(
            EventType.SPEECH_ENDED, self.site, session_id,
            {"reason": str(event.reason), "speechMs": round(event.speech_ms, 1),
             "silenceMs": round(event.trailing_silence_ms, 1),
             "seconds": round(utterance.duration_s, 3),
             **({"judged": judged[0], "checkMs": round(judged[1], 1)} if judged else {})}))
        if self.contender is not None:
            await self.contender.ended(utterance, decode, speaker, event.trailing_silence_ms)
        else:
            await self._on_utterance(utterance, decode, speaker)
        self._handing_off = None

    async def _shutdown(self) -> None:
        for event in self._segmenter.stop(EndReason.SHUTDOWN):
            await self._segment_event(event)
        await self._feeds.released()
