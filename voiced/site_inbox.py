"""A site's bounded ingest queue: what the MQTT callback hands a site worker.

The callback only classifies messages and offers them here (never blocking: a full queue
drops and counts). The worker takes them one by one; while the site is idle and its audio
has grown stale (voiced fell behind), the stale audio is shed, keeping the pre-roll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from voiced.arrival import ArrivalMeter, AudioBudget, shed_stale
from voiced.const import SAMPLE_RATE
from voiced.transport.native import PcmFormat

log = logging.getLogger(__name__)

SHED_AGE_S = 1.0
"""Audio that waited this long in an idle site's queue is stale: voiced is behind."""
KEEP_AFTER_SHED = 15
"""Newest audio chunks kept when shedding (the pre-roll)."""


@dataclass(slots=True)
class Control:
    """A control message for a site worker."""

    kind: str
    """"listen" (hotword / startListening), "stop" (stopListening), "continue",
    "tick" (check timeouts), "shutdown"."""
    session_id: str | None = None
    """For "stop": the session to stop (None: whichever is open); a different one is
    refused with `session_mismatch`."""
    wakeword_id: str | None = None
    custom_data: str | None = None
    intent_filter: tuple[str, ...] = ()
    turn: str | None = None
    """"continue" from voiced itself: the turn it asks for (voiced.models.Utterance.turn)."""


@dataclass(slots=True)
class Audio:
    """Audio in the satellite's own format."""

    pcm: bytes
    fmt: PcmFormat
    float_format: bool
    received: float = field(default_factory=time.monotonic)


class SiteInbox:
    """The queue of one site, its drop and shed counters and its arrival meter. The site
    worker derives from it and says when it is `busy` (nothing may be shed)."""

    def __init__(self, site: str, queue_size: int) -> None:
        self.site = site
        self.queue: asyncio.Queue[Audio | Control] = asyncio.Queue(maxsize=queue_size)
        self.dropped = 0
        """Chunks refused because the queue was full."""
        self.shed = 0
        """Stale audio chunks an idle site dropped to catch up (overload)."""
        self.arrival = ArrivalMeter()
        """Is this site's audio arriving in real time?"""
        self.budget = AudioBudget()
        self.too_fast = 0
        """Audio chunks refused because the site sent far faster than real time."""
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """True once the worker was asked to stop: nothing more is taken."""
        return self._stopping

    @property
    def busy(self) -> bool:
        """True while stale audio must still be processed (speech, an open session)."""
        return False

    # ---- called from the MQTT callback (synchronous) --------------------------------
    def offer(self, item: Audio | Control) -> bool:
        """Enqueue without blocking; False when it was refused. On a full queue audio is
        refused (counted in `dropped`), but a control message (a start, a stop, a
        follow-up turn: few and small, and losing one loses a whole session) takes the
        place of the oldest queued audio chunk (counted the same), so it is refused only
        when the queue holds nothing but controls."""
        if self._stopping:
            return False
        if isinstance(item, Audio):
            self._arrived(item)
            cost = len(item.pcm) / (item.fmt.width * SAMPLE_RATE)  # 16 kHz mono seconds
            if not self.budget.take(cost, item.received):
                self.too_fast += 1
                if self.too_fast in (1, 10, 100) or self.too_fast % 1000 == 0:
                    log.warning("site %s: audio far faster than real time; %d chunks "
                                "refused", self.site, self.too_fast)
                return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            if isinstance(item, Control):
                if not self._evict_oldest_audio():
                    return False  # nothing but controls queued: the caller answers
                self.queue.put_nowait(item)
                self._count_drop()
                return True
            self._count_drop()
            return False
        return True

    def _count_drop(self) -> None:
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.warning("site %s: ingest queue full, %d audio chunks dropped", self.site,
                        self.dropped)

    def _evict_oldest_audio(self) -> bool:
        """Drop the oldest queued audio chunk, keeping everything else in order."""
        items = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        oldest = next((i for i, entry in enumerate(items) if isinstance(entry, Audio)), None)
        if oldest is not None:
            del items[oldest]
        for entry in items:
            self.queue.put_nowait(entry)
        return oldest is not None

    def _arrived(self, item: Audio) -> None:
        fmt = item.fmt
        change = self.arrival.arrived(len(item.pcm) / (fmt.rate * fmt.width * fmt.channels),
                                      item.received)
        if change:
            # per site at INFO: the daemon warns once for all the sites behind
            log.info("site %s: audio arrives slower than real time (%.0f%%)", self.site,
                     self.arrival.realtime * 100)
        elif change is False:
            log.info("site %s: audio arrives in real time again", self.site)

    def tick(self) -> None:
        """Ask the worker to check its timeouts (never blocks, never counts as a drop)."""
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Control("tick"))

    def request_shutdown(self) -> None:
        """Stop taking items; the worker processes what is queued, ends an utterance in
        progress (it is still processed) and returns. Never blocks, even on a full queue
        (the owner bounds the wait and cancels a worker that does not finish)."""
        self._stopping = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Control("shutdown"))  # wakes an idle worker at once

    # ---- called by the worker --------------------------------------------------------
    def _next_shedding(self) -> Audio | Control:
        """The next queued item; when it is audio that arrived over SHED_AGE_S ago on an
        idle site, voiced is behind: the stale audio is dropped but the newest
        KEEP_AFTER_SHED chunks (the pre-roll a command starting now needs); controls stay.

        A burst of fresh audio (a satellite flushing its buffer, a test streaming faster
        than real time) is never shed: only age says voiced fell behind. Speech in progress
        and open sessions are never shed either: under overload voiced keeps answering what
        people say and catches up on silence."""
        item = self.queue.get_nowait()
        if not isinstance(item, Audio) or self.busy:
            return item
        cutoff = time.monotonic() - SHED_AGE_S
        if item.received >= cutoff:
            return item
        items = [item, *(self.queue.get_nowait() for _ in range(self.queue.qsize()))]

        def fresh_or_session(entry: Audio | Control) -> bool:
            if isinstance(entry, Control):
                return entry.kind in ("listen", "continue")
            return entry.received >= cutoff

        kept, dropped = shed_stale(items, lambda entry: isinstance(entry, Audio),
                                   KEEP_AFTER_SHED, fresh_or_session)
        for entry in kept[1:]:
            self.queue.put_nowait(entry)
        if dropped:
            self.shed += dropped
            if self.shed == dropped or self.shed // 1000 != (self.shed - dropped) // 1000:
                log.warning("site %s: behind while idle: shed %d stale audio chunks "
                            "(%d so far)", self.site, dropped, self.shed)
        return kept[0]
