"""Is a satellite's audio arriving in real time, and what to drop when a site falls behind.

Pure and synchronous (no asyncio): the site worker feeds it arrival times and durations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

REALTIME_WINDOW_S = 5.0
STREAM_GAP_S = 1.0
"""A pause this long ends a window: satellites that stream only after a wake word are not
"behind" while they are quiet."""
BEHIND_RATIO = 0.9
"""Less audio than this per wall second, while streaming, is "behind"."""

T = TypeVar("T")


FAST_BURST_S = 60.0
"""Audio a site may send at once (a satellite flushing its buffer after a gap, a test or
a tool streaming a file faster than real time), in seconds of 16 kHz mono: what it costs
to convert grows with the samples (rate × channels), so 192 kHz stereo counts 24 times."""
FAST_RATE = 20.0
"""Seconds of 16 kHz mono audio per wall second a site may send beyond the burst."""


class AudioBudget:
    """A token bucket of audio (seconds of 16 kHz mono): what one site may make voiced
    convert and decode. Every chunk costs voiced's event loop its conversion (a 192 kHz
    stereo second is ~25 ms), so one client sending far faster than real time (260 s of
    audio in 0.6 s) delayed every other site by seconds; beyond the budget its audio is
    refused."""

    def __init__(self, burst_s: float = FAST_BURST_S, rate: float = FAST_RATE) -> None:
        self._burst_s = burst_s
        self._rate = rate
        self.tokens = burst_s
        self._last: float | None = None

    def take(self, seconds: float, now: float) -> bool:
        """Spend `seconds` of audio arriving at `now` (monotonic); False: over budget."""
        if self._last is not None:
            self.tokens = min(self._burst_s, self.tokens + (now - self._last) * self._rate)
        self._last = now
        if seconds > self.tokens:
            return False
        self.tokens -= seconds
        return True


class ArrivalMeter:
    """Audio seconds received per wall second over windows of continuous streaming."""

    def __init__(self, window_s: float = REALTIME_WINDOW_S, gap_s: float = STREAM_GAP_S,
                 behind_ratio: float = BEHIND_RATIO) -> None:
        self._window_s = window_s
        self._gap_s = gap_s
        self._behind_ratio = behind_ratio
        self._start = self._last = -1e18
        self._audio = 0.0
        self.realtime = 1.0
        """The ratio over the last complete window (1.0 until one completes)."""
        self.behind = False
        self.times_behind = 0

    def arrived(self, seconds: float, now: float) -> bool | None:
        """Count a message of `seconds` of audio arriving at `now` (monotonic seconds).

        Returns True when the site just fell behind, False when it just caught up, None
        when nothing changed.
        """
        if now - self._last > self._gap_s:
            self._start, self._audio = now, 0.0
        self._last = now
        self._audio += seconds
        span = now - self._start
        if span < self._window_s:
            return None
        # the window's first message arrived at its start: its audio is not in the span
        self.realtime = (self._audio - seconds) / span
        self._start, self._audio = now, seconds
        behind = self.realtime < self._behind_ratio
        changed = behind != self.behind
        self.behind = behind
        if changed and behind:
            self.times_behind += 1
        return behind if changed else None


def shed_stale(items: Sequence[T], is_audio: Callable[[T], bool], keep: int,
               is_barrier: Callable[[T], bool] = lambda _item: False) -> tuple[list[T], int]:
    """Drop all but the newest `keep` audio items before the first barrier (a session
    opening: what follows it may be a command), keeping every other item in order.

    Returns the items left and how many were dropped.
    """
    end = next((i for i, item in enumerate(items) if is_barrier(item)), len(items))
    audio = [i for i, item in enumerate(items[:end]) if is_audio(item)]
    drop = set(audio[:-keep] if keep else audio)
    return [item for i, item in enumerate(items) if i not in drop], len(drop)
