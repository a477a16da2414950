"""resemblyzer's LSTM work for every open stream, batched across streams (satellites).

Each `ResemblyzerStream` (`voiced.speakers.streaming`) keeps its partial windows' LSTM
states; a window advances in blocks of `BLOCK` mel frames (160 ms) counted from its own
start, so every block of every window of every stream is the same shape and any set of
them is one padded batch: a single LSTM call with one row per (window, gain). On this
CPU a row-step costs about 20 us in a batch of 40 rows and 50-100 us alone, and one call
has a fixed cost, so 20 satellites cost far less batched than one by one.

Nobody waits for a batch to fill. `LstmBatcher` is a combining lock: whichever engine
thread needs model work and finds the model idle runs it, for everyone queued:

* `offer` (from `feed`): the stream has new final mel frames. At most every `TICK_S`, or
  when a stream lags `MAX_LAG_BLOCKS` blocks, the offering thread runs a *tick*: one block
  for every window of every offered stream, as one batch, then a second call for windows
  still well behind. Otherwise `offer` returns at once and the work waits for the next
  tick, with more streams' blocks.
* `complete` (from `finish`, at the endpoint): everything the stream still needs, urgently.
  Endpoint work goes first (a tick checks between its calls), and every stream that ends
  meanwhile joins the same calls, so satellites that stop speaking together share them.

Work the endpoint may not need waits while batches are big: a window that starts less
than 1.2 s before the current end of the speech is dropped by resemblyzer if the speech
ends there (`Window.certain` False; 26 % of all LSTM steps on the benchmark's commands),
so it joins a tick only while the tick has fewer than `SPARE_ROWS` rows.

One model call runs at a time. A stream's window states are only touched under the
batcher (`exclusive` for the stream's own rewinds); its mel frames below the count a tick
reads never change outside `exclusive`, so a tick reads them while the stream's thread
appends more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

BLOCK = 16
"""Mel frames (160 ms) a window advances per step of a batch."""
WINDOW_FRAMES = 160
"""Mel frames per partial window (`partials_n_frames`, 1.6 s): 10 blocks."""
TICK_S = 0.16
"""Ticks run at most this often (one block of audio): each gathers every stream's block."""
MAX_LAG_BLOCKS = 3
"""A stream this many blocks behind is ticked without waiting for `TICK_S`."""
SPARE_ROWS = 8
"""Speculative windows (`Window.certain` False) join a tick only while it has fewer rows."""
CATCH_UP = 2
"""A tick's second call advances the windows still this many blocks behind ..."""
CATCH_UP_BLOCKS = 4
"""... by up to this many blocks."""
MAX_ROWS = 192
"""Batch rows (window x gain) per model call, at most; the rest wait for the next call."""
HISTORY = 200
"""Recent model calls kept in `LstmBatcher.history`."""

assert WINDOW_FRAMES % BLOCK == 0


@dataclass(slots=True)
class Window:
    """A partial window being advanced."""

    start: int
    """First mel frame."""
    pos: int
    """The next mel frame to run (start .. start + WINDOW_FRAMES)."""
    state: tuple[Any, Any] | None = None
    """The LSTM's (h, c) after frames start..pos, one batch row per gain; None: none yet."""
    certain: bool = True
    """The utterance keeps this window whatever comes next (False: it is dropped if the
    speech ends within the next 1.2 s; such work may wait while the batches are big)."""

    @property
    def end(self) -> int:
        return self.start + WINDOW_FRAMES


class Work(Protocol):
    """One stream's LSTM side, as the batcher sees it (`streaming._Partials`)."""

    gains: int
    """Batch rows per window (1, or one per gain in quiet mode)."""
    steps: int

    def ready(self) -> list[tuple[Window, int]]:
        """Open windows with whole blocks of final frames: (window, blocks available)."""
        ...

    def inputs(self, window: Window, blocks: int) -> Any:
        """The window's next `blocks` blocks, one row per gain: (gains, frames, 40)."""
        ...

    def completed(self, window: Window, vectors: npt.NDArray[np.float64]) -> None:
        """The window ran its last frame: its unit vectors, one per gain."""
        ...


@dataclass(frozen=True, slots=True)
class CallStats:
    """One batched model call (for the benchmark, tests and the debug log)."""

    streams: int
    rows: int
    frames: int
    """Time steps of the call (a multiple of `BLOCK`)."""
    ms: float
    cpu_ms: float
    """Processor time of the calling thread (less than `ms` when it had to wait for a core)."""
    urgent: bool


@dataclass(slots=True)
class _Request:
    work: Work
    done: bool = False
    error: BaseException | None = None


@dataclass(slots=True)
class _Tick:
    works: list[Work]
    calls: int = 0


def _jobs(works: list[Work]) -> list[tuple[Work, Window, int]]:
    """Every ready window of `works`: (work, window, blocks available)."""
    return [(work, window, blocks) for work in works for window, blocks in work.ready()]


class LstmBatcher:
    """Runs the streams' LSTM blocks as batches: `offer` while speaking, `complete` at the
    end. Thread-safe; blocking (call it from the inference engine's threads)."""

    def __init__(self, encoder: Any, tick_s: float = TICK_S) -> None:
        self._encoder = encoder
        self._tick_s = tick_s
        self._cond = threading.Condition()
        self._busy = False
        """Someone is running model work (or holds `exclusive`)."""
        self._urgent: list[_Request] = []
        self._offered: dict[int, Work] = {}
        self._last_tick = 0.0
        self.history: deque[CallStats] = deque(maxlen=HISTORY)

    # the streams' side

    def offer(self, work: Work) -> None:
        """`work` has new final frames: a tick runs now when one is due, else later."""
        with self._cond:
            self._offered[id(work)] = work
            if self._busy:
                return
            now = time.monotonic()
            if now - self._last_tick < self._tick_s:
                # nobody runs model work, so the windows can be looked at here
                if max((b for _, b in work.ready()), default=0) < MAX_LAG_BLOCKS:
                    return
            self._busy = True
            self._last_tick = now
            tick = _Tick(list(self._offered.values()))
            self._offered.clear()
        self._lead(tick)

    def complete(self, work: Work) -> None:
        """Run everything `work` can run (all its frames are final): returns when done."""
        request = _Request(work)
        with self._cond:
            self._offered.pop(id(work), None)
            self._urgent.append(request)
            while self._busy and not request.done:
                self._cond.wait()
            if not request.done:
                self._busy = True
        if not request.done:
            self._lead(None, request)
        if request.error is not None:
            raise request.error

    def forget(self, work: Work) -> None:
        """An abandoned stream: no more ticks for it."""
        with self._cond:
            self._offered.pop(id(work), None)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """No model work runs meanwhile (a stream rewinding its windows)."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    @property
    def offered(self) -> int:
        """Streams whose offered work waits for the next tick."""
        with self._cond:
            return len(self._offered)

    @property
    def queued(self) -> int:
        """Streams waiting in `complete` for their work to be run."""
        with self._cond:
            return len(self._urgent)

    # the leader

    def _lead(self, tick: _Tick | None, own: _Request | None = None) -> None:
        """Run the queued endpoint work, then the tick's calls, until `own` (a request of
        this thread) or the tick is done; `_busy` is ours until we return, and whoever
        waits then takes over."""
        active: list[_Request] = []
        try:
            while True:
                with self._cond:
                    active += self._urgent
                    self._urgent.clear()
                if active:
                    self._urgent_call(active)
                    active = [r for r in active if not r.done]
                    if own is None or not own.done:
                        continue
                if tick is None or not self._tick_call(tick):
                    break
        except BaseException as exc:
            for r in active:
                r.error, r.done = exc, True
            active = []
            raise
        finally:
            with self._cond:
                self._urgent[:0] = active  # their threads wait: one of them leads next
                if tick is not None:  # streams still behind: the next tick has them
                    for work in tick.works:
                        if work.ready():
                            self._offered.setdefault(id(work), work)
                self._busy = False
                self._cond.notify_all()

    def _urgent_call(self, active: list[_Request]) -> None:
        jobs = _jobs([r.work for r in active])
        if jobs:
            self._call(jobs, WINDOW_FRAMES // BLOCK, urgent=True)
        finished = [r for r in active if not r.work.ready()]
        if finished:
            with self._cond:
                for r in finished:
                    r.done = True
                self._cond.notify_all()

    def _tick_call(self, tick: _Tick) -> bool:
        """The tick's next model call; False when it has none left.

        First every window one block: the windows the utterance will keep whatever
        happens, and the speculative ones only while the batch is small. Then windows
        that are still `CATCH_UP` blocks behind, several blocks at once.
        """
        tick.calls += 1
        jobs = _jobs(tick.works)
        if tick.calls == 1:
            certain = [j for j in jobs if j[1].certain]
            if sum(work.gains for work, _, _ in certain) < SPARE_ROWS:
                certain = jobs
            if certain:
                self._call(certain, 1, urgent=False)
                return True
            tick.calls += 1
        if tick.calls == 2:
            behind = [j for j in jobs if j[1].certain and j[2] >= CATCH_UP]
            if behind:
                self._call(behind, CATCH_UP_BLOCKS, urgent=False)
                return True
        return False

    def _call(self, jobs: list[tuple[Work, Window, int]], max_blocks: int, urgent: bool) -> None:
        """One model call: every job's window advances the same number of blocks (the
        fewest any of them has, at most `max_blocks`); at most `MAX_ROWS` rows."""
        import torch

        rows = 0
        for n, (work, _, _) in enumerate(jobs):
            if rows + work.gains > MAX_ROWS and n:
                jobs = jobs[:n]
                break
            rows += work.gains
        blocks = min(max_blocks, *(b for _, _, b in jobs))
        frames = blocks * BLOCK
        started, cpu = time.monotonic(), time.thread_time()
        encoder = self._encoder
        lstm = encoder.lstm
        zero = torch.zeros(lstm.num_layers, 1, lstm.hidden_size, device=encoder.device)
        x = torch.cat([work.inputs(w, blocks) for work, w, _ in jobs]).to(encoder.device)
        h0 = torch.cat([w.state[0] if w.state else zero.expand(-1, work.gains, -1)
                        for work, w, _ in jobs], 1)
        c0 = torch.cat([w.state[1] if w.state else zero.expand(-1, work.gains, -1)
                        for work, w, _ in jobs], 1)
        with torch.no_grad():
            _, (h, c) = lstm(x, (h0.contiguous(), c0.contiguous()))
            ends = [i for i, (_, w, _) in enumerate(jobs) if w.pos + frames == w.end]
            offsets = np.cumsum([0] + [work.gains for work, _, _ in jobs])
            vectors: dict[int, npt.NDArray[np.float64]] = {}
            if ends:
                picks = torch.cat([torch.arange(int(offsets[i]), int(offsets[i + 1]))
                                   for i in ends])
                raw = encoder.relu(encoder.linear(h[-1, picks]))
                unit = (raw / raw.norm(dim=1, keepdim=True)).cpu().numpy().astype(np.float64)
                at = 0
                for i in ends:
                    n = jobs[i][0].gains
                    vectors[i] = unit[at : at + n]
                    at += n
        counted: set[int] = set()
        for i, (work, w, _) in enumerate(jobs):
            a, b = int(offsets[i]), int(offsets[i + 1])
            w.state = (h[:, a:b], c[:, a:b])
            w.pos += frames
            if i in vectors:
                work.completed(w, vectors[i])
            if id(work) not in counted:
                counted.add(id(work))
                work.steps += frames
        ms = (time.monotonic() - started) * 1000
        cpu_ms = (time.thread_time() - cpu) * 1000
        self.history.append(CallStats(len(counted), rows, frames, ms, cpu_ms, urgent))
        log.debug("speaker LSTM: %d streams, %d rows, %d steps in %.1f ms (%.1f ms of CPU)%s",
                  len(counted), rows, frames, ms, cpu_ms, " at the endpoint" if urgent else "")
