"""A site's listening sessions: start, stop and follow-up turns, and the timeouts (a
session without speech, audio that stopped mid-utterance). A part of `SiteWorker`
(voiced.sessions), kept apart because the rules are many: who may stop what, what a
start does to speech in progress, and which clock a timeout reads.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from voiced.arbiter_service import Contender
from voiced.audio.buffers import FrameBuffer
from voiced.config import VadConfig
from voiced.events import EventSink
from voiced.models import EndReason, Termination
from voiced.site_feeds import UtteranceFeeds
from voiced.site_inbox import Control
from voiced.vad.segmenter import Segmenter, SpeechEnded

log = logging.getLogger("voiced.sessions")

STALL_S = 1.5
"""An utterance whose audio stops arriving for this long is ended (satellite gone)."""
WAKE_WALL_FACTOR = 3.0
"""A wake session whose audio comes slower than real time (or not at all while the
satellite's connection lives) ends by the clock after this many wake timeouts."""


@dataclass(slots=True)
class Listening:
    """An open session on a site."""

    session_id: str
    started: float
    """Monotonic seconds."""
    wakeword_id: str | None = None
    custom_data: str | None = None
    intent_filter: tuple[str, ...] = ()
    turn: str | None = None
    """voiced's own follow-up turn (voiced.models.Utterance.turn)."""
    heard_ms: float = 0.0
    """Audio of the site heard since the start: the wake timeout's clock (the wall clock
    runs on while the audio of that time still waits unread, when voiced stalled or the
    site is behind, or when a satellite sends a buffered burst after a network gap)."""


class SessionControl:
    """Session control of a site worker (mixed into voiced.sessions.SiteWorker, which
    owns the state below)."""

    site: str
    contender: Contender | None
    _listening: Listening | None
    _segmenter: Segmenter
    _framer: FrameBuffer
    _feeds: UtteranceFeeds
    _sink: EventSink
    _vad_config: VadConfig
    _current_session: str
    _last_audio_at: float
    _segment_event: Callable[[object], Awaitable[None]]

    async def _control(self, item: Control) -> None:
        if item.kind in ("listen", "continue"):
            if self._listening is not None and item.kind == "listen":
                log.info("site %s: already listening (session %s); ignoring a new start",
                         self.site, self._listening.session_id)
                if item.session_id not in (None, self._listening.session_id):
                    await self._sink.error(
                        "transport", "session_busy",
                        f"start of session {item.session_id} on site {self.site}: session "
                        f"{self._listening.session_id} is open there; nothing was started",
                        self.site, item.session_id)
                return
            if self._segmenter.in_speech and self._listening is None:
                # an always-listening site in the middle of an utterance: it ends here and
                # is processed, as a stop would (it was abandoned without a trace before)
                for event in self._segmenter.stop(EndReason.STOP_LISTENING):
                    await self._segment_event(event)
            session_id = item.session_id or _new_id()
            self._listening = Listening(session_id, time.monotonic(), item.wakeword_id,
                                        item.custom_data, item.intent_filter,
                                        item.turn if item.kind == "continue" else None)
            # speech in progress before the start is abandoned: its streams are released
            # here (forgetting them leaked a decoder per cycle in the worker processes)
            self._segmenter.reset()
            self._framer.clear()
            self._feeds.drop()
            if self.contender is not None:
                await self.contender.discarded()
                if item.kind == "continue":
                    self.contender.converse()
            if item.kind == "listen":
                await self._sink.session_started(self.site, session_id, item.custom_data)
        elif item.kind == "stop":
            listening = self._listening
            if listening is None and self._segmenter.in_speech:
                # an always-listening site: the stop ends the utterance in progress (the
                # one it names, or any)
                if item.session_id in (None, self._current_session):
                    for event in self._segmenter.stop(EndReason.STOP_LISTENING):
                        await self._segment_event(event)
                    return
            if listening is None:  # nothing open (a dialogue manager's stop after the end)
                return
            if item.session_id is not None and item.session_id != listening.session_id:
                # a stop names the session it stops: one for another (or an older) session
                # must not end this one (docs/security.md: session ownership)
                await self._stop_refused(item.session_id)
                return
            events = self._segmenter.stop(EndReason.STOP_LISTENING)
            ended = [e for e in events if isinstance(e, SpeechEnded)]
            for event in events:
                await self._segment_event(event)
            if not ended:
                self._listening = None
                await self._sink.session_ended(self.site, listening.session_id,
                                               Termination.ABORTED_BY_USER,
                                               listening.custom_data)

    async def _stop_refused(self, session_id: str) -> None:
        # a stop names the session it stops: one for another (or an older) session must
        # not end this one (docs/security.md: session ownership)
        log.warning("site %s: refused a stop for session %s, which is not the one open here",
                    self.site, session_id)
        await self._sink.error("transport", "session_mismatch",
                               f"stopListening for session {session_id} on site {self.site}: "
                               "that is not the session open there; nothing was stopped",
                               self.site, session_id)

    async def _check_timeout(self) -> None:
        if self._segmenter.in_speech and time.monotonic() - self._last_audio_at > STALL_S:
            log.warning("site %s: audio stopped mid-utterance; ending it", self.site)
            for event in self._segmenter.stop(EndReason.TIMEOUT):
                await self._segment_event(event)
            return
        listening = self._listening
        if listening is None or self._segmenter.in_speech:
            return
        if not self._wake_timed_out(listening):
            return
        self._listening = None
        self._segmenter.reset()
        self._feeds.drop()
        log.info("site %s: no speech within %.1f s; session %s timed out", self.site,
                 self._vad_config.wake_timeout_s, listening.session_id)
        await self._sink.session_ended(self.site, listening.session_id, Termination.TIMEOUT,
                                       listening.custom_data)

    def _wake_timed_out(self, listening: Listening) -> bool:
        """No speech within `wake_timeout_s` of the site's audio since the session began.
        By the wall clock only when the audio does not come: none for STALL_S (a
        satellite that stopped streaming, or never streams without speech), or less than
        real time for WAKE_WALL_FACTOR timeouts."""
        timeout_s = self._vad_config.wake_timeout_s
        if listening.heard_ms >= timeout_s * 1000:
            return True
        now = time.monotonic()
        waited = now - listening.started
        silent = now - max(self._last_audio_at, listening.started) > STALL_S
        return waited >= timeout_s * WAKE_WALL_FACTOR or (waited >= timeout_s and silent)


def _new_id() -> str:
    return str(uuid.uuid4())
