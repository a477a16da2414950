"""Arbitration in the running daemon: carries out what the pure arbiter decides.

`Arbitration` owns the `Arbiter` (voiced.arbitration), one `Contender` per satellite of a
room group, the utterances held while a contest is undecided (parked) and the losers'
utterances kept for a swap, and a loop timer for the arbiter's deadlines. A site worker
(voiced.sessions) tells its contender about every frame, speech start and end; the
contender says whether the worker may feed its models (`step`). Everything runs on the
event loop, synchronously with the workers: no task per frame.

What happens to a loser: its ASR and speaker streams are closed, nothing of it reaches the
intents, Hermes or the audio out; when no swap can happen any more its history row is
written (outcome `arbitration_lost`, the decision as detail) and its session ends
(`abortedByUser`, error `arbitration_lost: <winner> answers`). Every decision is an
`arbitration` event (voiced/events, websockets, metrics).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from math import ceil
from typing import Any

from voiced.arbitration import (
    Action,
    Anchor,
    Announce,
    Arbiter,
    ArbitrationSettings,
    Decision,
    Fate,
    Lose,
    Release,
    Verdict,
    Win,
)
from voiced.audio.levels import Evidence, Meter
from voiced.config import SitesConfig, VadConfig
from voiced.const import VAD_FRAME_BYTES, VAD_FRAME_MS
from voiced.events import EventSink
from voiced.models import EventType, Outcome, PipelineEvent, Termination, Utterance

log = logging.getLogger(__name__)

LOST = "arbitration_lost"
"""The voiced reason a loser's session ends with."""

Submit = Callable[[Utterance, Any, Any], Awaitable[None]]
"""`submit(utterance, decode_feed, speaker_feed)`: run an utterance (Pipeline.submit)."""


@dataclass(slots=True)
class Held:
    """An ended utterance waiting for a decision, or a loser's kept for a swap."""

    utt: Utterance
    decode: Any
    speaker: Any
    decision: Decision | None = None
    since: float = 0.0
    """Monotonic seconds when arbitration got it (its wait is measured from here)."""


class Contender:
    """One grouped satellite's side of arbitration, driven by its site worker."""

    def __init__(self, service: Arbitration, site: str) -> None:
        self.service = service
        self.site = site
        self.meter = Meter()
        self.verdict: Verdict | None = None
        """The utterance in progress: GO (feed the models), WAIT, LOSE; None: none."""
        self.feeding = False
        self.decision: Decision | None = None
        """The decision that made this site lose its current utterance."""
        self.audio = bytearray()
        """The utterance in progress so far (feeds opened late start with it)."""
        self._first = 0
        self._end: int | None = None
        self._ready = False
        self.wake_score: float | None = None
        """The wake word score of the utterance in progress (None: none reported)."""
        self._woke: tuple[float | None, float] | None = None
        """The last hotword's score and when it came, until an utterance starts."""

    def push(self, frame: bytes, speech: bool) -> None:
        """Every frame of the site, measured; `speech` is the VAD's decision."""
        self.meter.push(frame, speech)
        if self.verdict is not None:
            self.audio += frame

    def woke(self, score: float | None) -> None:
        """A hotword came for this site, with the detector's score (or None): the
        utterance that starts next, within the session's wait for speech, carries it."""
        self._woke = (score, self.service.clock())

    async def started(self, session_id: str, audio: bytes) -> bool:
        """Speech started (`audio`: pre-roll and start window); True: feed the models."""
        woke = self._woke  # (a start the VAD then discards keeps it for the next one)
        fresh = woke is not None and self.service.clock() - woke[1] <= self.service.converse_s
        self.wake_score = woke[0] if woke is not None and fresh else None
        frames = len(audio) // VAD_FRAME_BYTES
        self._first = self.meter.count - min(frames, self.service.window_frames)
        self._end, self._ready, self.decision = None, False, None
        self.audio = bytearray(audio)
        self.verdict = Verdict.WAIT
        await self.service.start(self, session_id)
        self.feeding = self.verdict == Verdict.GO
        return self.feeding

    async def step(self) -> bool | None:
        """After each frame: report readiness, then True (open the models with `audio`),
        False (close them) or None (nothing to change)."""
        if self.verdict is None:
            return None
        if not self._ready and self.meter.count - self._first >= self.service.score_frames:
            self._ready = True
            await self.service.ready(self.site)
        if self.verdict == Verdict.GO and not self.feeding:
            self.feeding = True
            return True
        if self.verdict == Verdict.LOSE and self.feeding:
            self.feeding = False
            return False
        return None

    async def ended(self, utt: Utterance, decode: Any, speaker: Any,
                    trailing_ms: float) -> None:
        """The utterance ended with speech; the service decides what becomes of it."""
        self._woke = None  # the hotword's command has been heard
        self._end = self.meter.count - round(trailing_ms / VAD_FRAME_MS)
        self._finish()
        await self.service.ended(self, Held(utt, decode, speaker))

    async def discarded(self) -> None:
        """The utterance had too little speech, or was abandoned (a new session)."""
        if self.verdict is None:
            return
        self._end = self.meter.count
        self._finish()
        await self.service.gone(self.site)

    def anchor(self) -> None:
        """Score the utterance in progress from now on (a contest opened long after it
        started), from the start of the segmenter's start window back."""
        if self.verdict is not None:
            self._first = max(self._first, self.meter.count - self.service.window_frames)
            self._ready = False

    def converse(self) -> None:
        """The site asked a follow-up question: it owns its group's next utterance."""
        self.service.arbiter.converse(self.site, self.service.clock(),
                                      self.service.converse_s)

    def evidence(self) -> Evidence | None:
        """The utterance's first `score_ms` (from its anchor, up to its end) against the
        site's noise floor before them."""
        return self.meter.evidence(self._first, self._end, self.service.score_frames,
                                   self.wake_score)

    def _finish(self) -> None:
        self.verdict, self.feeding, self.audio = None, False, bytearray()


class Arbitration:
    """The daemon's arbitration: see the module docstring."""

    def __init__(self, sites: SitesConfig, vad: VadConfig, sink: EventSink, submit: Submit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        settings = ArbitrationSettings.from_config(sites.arbitration)
        self.arbiter = Arbiter(settings, sites.site_groups())
        self.sink = sink
        self.clock = clock
        self._submit = submit
        self.window_frames = 2 * ceil(vad.start_speech_ms / VAD_FRAME_MS)
        """Frames of the segmenter's start window: where the speech of a start begins."""
        self._wake_timeout_s = vad.wake_timeout_s
        self.score_frames = 0
        self.converse_s = 0.0
        self._configure(settings)
        self.contenders: dict[str, Contender] = {}
        self._parked: dict[str, Held] = {}
        self._kept: dict[str, list[Held]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.decisions = 0
        self.by_reason: dict[str, int] = {}
        """Decisions by reason (scored, deadline, first, conversation, late, swap)."""
        self.swaps = 0
        self.lost = 0
        """Utterances that lost and were ended quietly."""

    def contender(self, site: str) -> Contender | None:
        """A new contender for a site worker (None: the site is in no group)."""
        if site not in self.arbiter.groups:
            return None
        contender = self.contenders[site] = Contender(self, site)
        return contender

    async def regroup(self, sites: SitesConfig) -> None:
        """A config reload: `sites.groups`, the overrides' `group` and `sites.arbitration`
        apply from now on (voiced.arbitration.Arbiter.regroup); then `rebind` each live
        site's worker."""
        settings = ArbitrationSettings.from_config(sites.arbitration)
        actions = self.arbiter.regroup(settings, sites.site_groups(), self.clock(),
                                       self.measure)
        self._configure(settings)
        await self.apply(actions)

    def rebind(self, site: str, current: Contender | None) -> Contender | None:
        """The contender a live site's worker has after `regroup`: its own if it is still
        grouped, a new one if it just joined a group, none once it left (except a loser
        still speaking: it keeps its contender, so that this utterance ends quietly, and
        is measured, never arbitrated, until the next reload)."""
        if site in self.arbiter.groups:
            return current if current is not None else self.contender(site)
        if current is not None and current.verdict == Verdict.LOSE:
            return current
        if current is not None:
            self.contenders.pop(site, None)
        return None

    def _configure(self, settings: ArbitrationSettings) -> None:
        self.score_frames = max(1, ceil(settings.score_ms / VAD_FRAME_MS))
        self.converse_s = self._wake_timeout_s + settings.window_ms / 1000

    def measure(self, site: str) -> Evidence | None:
        """The arbiter's view of a candidate's audio."""
        contender = self.contenders.get(site)
        return contender.evidence() if contender is not None else None

    def status(self) -> dict[str, Any]:
        """Counters (voiced/status, the HTTP status, tests): the settings and groups in
        force, decisions in all and by reason, swaps, losers ended quietly, and what is
        held now (parked winners, kept losers, open rounds)."""
        groups: dict[str, list[str]] = {}
        for site, group in sorted(self.arbiter.groups.items()):
            groups.setdefault(group, []).append(site)
        settings = self.arbiter.settings
        return {"policy": str(settings.policy), "window_ms": settings.window_ms,
                "score_ms": settings.score_ms, "groups": groups,
                "decisions": self.decisions, "by_reason": dict(sorted(self.by_reason.items())),
                "swaps": self.swaps, "lost": self.lost,
                "parked": len(self._parked), "kept": sum(map(len, self._kept.values())),
                "rounds": self.arbiter.open_rounds}

    # ---- from the contenders -------------------------------------------------------
    async def start(self, contender: Contender, session_id: str) -> None:
        verdict, actions = self.arbiter.start(contender.site, session_id, self.clock(),
                                              self.measure)
        contender.verdict = verdict
        await self.apply(actions)

    async def ready(self, site: str) -> None:
        await self.apply(self.arbiter.ready(site, self.clock(), self.measure))

    async def gone(self, site: str) -> None:
        await self.apply(self.arbiter.ended(site, self.clock(), False, self.measure)[1])

    async def ended(self, contender: Contender, held: Held) -> None:
        site = contender.site
        held.since = self.clock()
        fate, actions = self.arbiter.ended(site, held.since, True, self.measure)
        held.decision = contender.decision
        if fate == Fate.SUBMIT:
            await self._run(held)
        elif fate == Fate.PARK:
            self._parked[site] = held
        elif fate == Fate.KEEP:
            self._close_feeds(held)
            self._kept.setdefault(site, []).append(held)
        elif fate == Fate.RELEASE:
            self._close_feeds(held)
            await self._release(site, held)
        await self.apply(actions)

    def site_changed(self, site: str, live: bool) -> None:
        """A site registry observer: a site that stops leaves every round."""
        if live or site not in self.contenders:
            return
        self.contenders.pop(site, None)
        self._spawn(self.apply(self.arbiter.forget(site, self.clock(), self.measure)))

    # ---- carrying out --------------------------------------------------------------
    async def apply(self, actions: list[Action]) -> None:
        """Carry out the arbiter's actions in order, then re-arm the deadline timer."""
        for action in actions:
            if isinstance(action, Announce):
                await self._announce(action.decision)
            elif isinstance(action, Win):
                await self._win(action.site, action.decision)
            elif isinstance(action, Lose):
                self._lose(action.site, action.decision)
            elif isinstance(action, Release):
                for held in self._kept.pop(action.site, []):
                    await self._release(action.site, held)
            elif isinstance(action, Anchor) and action.site in self.contenders:
                self.contenders[action.site].anchor()
        self._arm()

    async def _announce(self, decision: Decision) -> None:
        self.decisions += 1
        reason = str(decision.reason)
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        log.info("group %s: %s", decision.group, decision.summary())
        site = decision.winner or (decision.candidates[0].site if decision.candidates else "")
        sid = next((c.session_id for c in decision.candidates if c.site == site), "")
        await self.sink.emit(PipelineEvent(EventType.ARBITRATION, site, sid, decision.to_json()))

    async def _win(self, site: str, decision: Decision) -> None:
        held = self._parked.pop(site, None)
        if held is None and self._kept.get(site):
            held = self._kept[site].pop(0)  # a swap: the loser's kept utterance answers
            self.swaps += 1
        if held is not None:
            await self._run(held)
            return
        contender = self.contenders.get(site)
        if contender is not None and contender.verdict is not None:
            contender.verdict = Verdict.GO
            contender.decision = None

    def _lose(self, site: str, decision: Decision) -> None:
        held = self._parked.pop(site, None)
        if held is not None:
            held.decision = decision
            self._close_feeds(held)
            self._kept.setdefault(site, []).append(held)
        contender = self.contenders.get(site)
        if contender is not None and contender.verdict is not None:
            contender.verdict = Verdict.LOSE
            contender.decision = decision

    async def _run(self, held: Held) -> None:
        waited = max(0.0, (self.clock() - held.since) * 1000)
        await self._submit(replace(held.utt, arbitration_ms=waited), held.decode, held.speaker)

    async def _release(self, site: str, held: Held) -> None:
        """A loser, quietly: its history row and the end of its session."""
        utt, decision = held.utt, held.decision
        self.lost += 1
        winner = decision.winner if decision is not None else None
        detail = decision.summary() if decision is not None else "another satellite answered"
        await self.sink.emit(PipelineEvent(
            EventType.OUTCOME, site, utt.session_id,
            {"outcome": str(Outcome.ARBITRATION_LOST), "detail": detail},
            custom_data=utt.custom_data, wakeword_id=utt.wakeword_id, utterance=utt))
        error = f"{LOST}: {winner} answers" if winner else LOST
        await self.sink.emit(PipelineEvent(
            EventType.SESSION_ENDED, site, utt.session_id,
            {"reason": str(Termination.ABORTED_BY_USER), "error": error, "cause": LOST,
             "winner": winner}, custom_data=utt.custom_data))

    def _close_feeds(self, held: Held) -> None:
        """A loser's streams are released by tasks owned here (closing waits for a decode
        in flight, which must not hold up the site)."""
        for feed in (held.decode, held.speaker):
            if feed is not None:
                self._spawn(feed.aclose())
        held.decode = held.speaker = None

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run(), name="arbitration")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("arbitration: a background step failed", exc_info=task.exception())

    def _arm(self) -> None:
        due = self.arbiter.next_due()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, due - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._spawn(self.apply(self.arbiter.due(self.clock(), self.measure)))

    async def close(self) -> None:
        """Shutdown: decide what is open, run the winners, release the losers, and wait
        for the streams being closed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.apply(self.arbiter.flush(self.clock(), self.measure))
        for site, held in list(self._parked.items()):  # nothing decides them any more
            del self._parked[site]
            await self._run(held)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
