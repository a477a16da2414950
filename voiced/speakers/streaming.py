"""resemblyzer embeddings computed while the person is still speaking.

`ResemblyzerEmbedder.embed` (resemblyzer's `embed_utterance`) does, in order:

1. volume: scale the utterance up to -30 dBFS RMS when it is quieter (never down);
2. silence trimming: webrtcvad (mode 3) on 30 ms frames, a moving average over 8 frames,
   rounded, dilated by 3 frames each way; frames outside that mask are cut out;
3. 40-band mel power frames (25 ms window, 10 ms hop, centred) of what is left;
4. partial windows of 160 frames (1.6 s) every 77 frames; the last is kept when at least
   75 % of it is audio (the rest is zero padding), or when it is the only one;
5. each window through a 3-layer LSTM; its last hidden state -> linear -> ReLU -> unit
   length; the utterance vector is the normalized mean of the windows' vectors.

`ResemblyzerStream` does the same steps as the audio arrives (steps 1-3 are in
`voiced.speakers.frontend`, run once per 160 ms of audio). Each is causal with a short
look-ahead: a VAD frame's mask is final 7 frames (210 ms) later; a mel frame is final once
the trimmed audio reaches 12.5 ms past its centre; the LSTM is a recurrence, so the state of
every open window (at most 3 overlap) is advanced over final frames as they appear, in
blocks of 16 frames counted from the window's start, batched with every other stream's
blocks (`voiced.speakers.batching`). A window that completes lies wholly inside the audio,
so it is always kept. At `finish` only the tail is left: the last 210 ms of masking, a few
mel frames, and the remaining blocks of the last window (its zero padding included):
typically 30-60 LSTM steps instead of 160 for every window.

Volume is the one global step: the gain comes from the RMS of the whole utterance, known
only at the end. Audio at or above -30 dBFS gets gain 1, so once the running level is
there nothing depends on it and `finish` is exact. Quieter audio ("quiet mode"):

* webrtcvad is not level-invariant, and a flipped frame can change which windows exist, so
  its flags must be those at the final gain. They are cheap: whenever the running gain
  drifts `VAD_TOLERANCE_DB` from the one they were made at, they are redone, and the
  trimmed audio is rebuilt; only where the trim changed are LSTM windows rewound. `finish`
  redoes them at the exact final gain.
* the LSTM sees mel power (linear in gain squared) and is smooth in it. Every window runs
  at five gains (`QUIET_OFFSETS_DB` from the basis), as rows of one batch; at `finish`
  the windows' mean is interpolated (Lagrange, in dB) at the final gain: about 1e-5 in
  cosine from the exact vector. The basis moves (all LSTM work is redone) only
  when the running gain leaves that range.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.speakers.base import EmbeddingStream, Vector, l2_normalize
from voiced.speakers.batching import BLOCK, WINDOW_FRAMES, LstmBatcher, Window
from voiced.speakers.frontend import (
    HOP,
    INT16_MAX,
    N_MELS,
    PAD,
    TARGET_DBFS,
    Growing,
    Trim,
    gain_db,
    mel_frames,
    to_float,
    volume_gain,
)

if TYPE_CHECKING:
    from voiced.speakers.resemblyzer import ResemblyzerEmbedder

log = logging.getLogger(__name__)


VAD_TOLERANCE_DB = 0.05
"""Running-gain drift after which the VAD flags are redone at the new gain."""
QUIET_OFFSETS_DB = (-2.0, -1.0, 0.0, 1.0, 2.0)
"""Quiet mode: the gains (dB from the basis) every window runs at, as one batch."""
INTERPOLATION_DB = max(QUIET_OFFSETS_DB)
"""How far from the basis the final gain may be before all LSTM work is redone."""
LOUD_MARGIN_DB = 0.5
"""Quiet mode is left only when the level is this far above -30 dBFS (no flapping)."""
QUIET_HOLD_S = 1.0
"""Quiet mode in an utterance's first second holds its LSTM work back: the running level
still moves with every word (a quiet onset, the pre-roll), so the gain basis would likely
move and the work be thrown away. Loud speech is never held."""
FRONT_END_SAMPLES = BLOCK * HOP
"""`feed` runs the front end (VAD, trimming, mel frames) once this much new audio has
arrived (160 ms, one LSTM block): each pass has a fixed cost, and nothing waits for it."""


@dataclass(slots=True)
class _Partials:
    """The LSTM side: partial windows over the trimmed audio's mel frames, at some gains.

    The `batching.Work` of one stream. Windows and `done` change only inside the batcher
    (or under its `exclusive`); `mels` grows from the stream's thread meanwhile.
    """

    encoder: Any
    gain: np.float32 | None
    """The basis gain; None: gain 1, one run per window and an exact result."""
    mels: Growing
    """Final mel frames of the trimmed audio, without the gain (shared with the stream)."""
    offsets_db: tuple[float, ...] = field(init=False)
    gains: int = field(init=False)
    scales: Any = field(init=False)
    """Mel power factor per gain (power scales with the gain squared); None at gain 1."""
    windows: dict[int, Window] = field(default_factory=dict)
    """Open windows by start frame."""
    done: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)
    """Completed windows by start frame: one unit vector per gain."""
    kept: set[int] | None = None
    """At the end: the windows the utterance keeps (None: every window that starts)."""
    keeping: set[int] | None = None
    """`kept` as the stream's thread sets it at the end; the batcher applies it."""
    next_start: int = 0
    """The next window to open."""
    steps: int = 0
    """LSTM time steps run (a call covering several windows and gains counts once)."""

    def __post_init__(self) -> None:
        self.offsets_db = QUIET_OFFSETS_DB if self.gain is not None else (0.0,)
        self.gains = len(self.offsets_db)
        self.scales = None
        if self.gain is not None:
            import torch

            self.scales = torch.tensor([10 ** ((gain_db(self.gain) + o) / 10)
                                        for o in self.offsets_db], dtype=torch.float32)

    def ready(self) -> list[tuple[Window, int]]:
        """Windows with whole blocks of final frames, and how many (see `batching.Work`)."""
        if self.keeping is not None and self.kept is None:
            self.kept = self.keeping
            self.windows = {s: w for s, w in self.windows.items() if s in self.kept}
        limit = self.mels.size
        step = _step()
        while self.next_start < limit:
            s = self.next_start
            if (self.kept is None or s in self.kept) and s not in self.done:
                self.windows.setdefault(s, Window(s, s))
            self.next_start += step
        out = []
        for w in self.windows.values():
            w.certain = (self.kept is not None or w.start == 0
                         or limit >= w.start + _certain_frames())
            blocks = (min(limit, w.end) - w.pos) // BLOCK
            if blocks > 0:
                out.append((w, blocks))
        return out

    def inputs(self, window: Window, blocks: int) -> Any:
        import torch

        mel = torch.from_numpy(self.mels.get(window.pos, window.pos + blocks * BLOCK))
        if self.gain is None:
            return mel[None]
        return self.scales[:, None, None] * mel[None]

    def completed(self, window: Window, vectors: npt.NDArray[np.float64]) -> None:
        del self.windows[window.start]
        self.done[window.start] = vectors

    def rewind(self, frame: int) -> None:
        """Forget the work that used mel frames from `frame` on (the trim changed there)."""
        for w in self.windows.values():
            if w.pos > frame:
                w.pos, w.state = w.start, None
        for s in [s for s in self.done if s + WINDOW_FRAMES > frame]:
            del self.done[s]
            self.windows[s] = Window(s, s)

    def vector(self, final: np.float32 | None) -> Vector:
        """The normalized mean of the kept windows at the gain `final`.

        In quiet mode, interpolated (Lagrange, in dB) from the gains it ran at.
        """
        kept = self.done.keys() if self.kept is None else self.kept
        mean = np.mean(np.stack([self.done[s] for s in sorted(kept)]), axis=0)
        if self.gains == 1:
            return l2_normalize(mean[0])
        x = gain_db(final) - gain_db(self.gain)
        nodes = self.offsets_db
        weights = [math.prod((x - xk) / (xj - xk) for xk in nodes if xk != xj) for xj in nodes]
        return l2_normalize(np.tensordot(weights, mean, axes=1))

    def covers(self, gain: np.float32 | None) -> bool:
        """True when the vector at `gain` can come from this work."""
        if self.gains == 1:
            return gain == self.gain
        return abs(gain_db(gain) - gain_db(self.gain)) <= INTERPOLATION_DB


@functools.cache
def _certain_frames() -> int:
    """Final mel frames past a window's start from which the utterance surely keeps it.

    resemblyzer keeps the last window only when at least `MIN_COVERAGE` of it is audio (a
    window with a successor always), and the trimmed audio only grows.
    """
    from voiced.speakers.resemblyzer import MIN_COVERAGE

    return math.ceil(MIN_COVERAGE * WINDOW_FRAMES) + 1


@functools.cache
def _step() -> int:
    """Mel frames between window starts (77 at resemblyzer's 1.3 partials a second)."""
    from voiced.speakers.resemblyzer import PARTIAL_RATE

    return round(SAMPLE_RATE / PARTIAL_RATE / HOP)


class ResemblyzerStream(EmbeddingStream):
    """One utterance embedded as it arrives; `finish` returns what `embed` would.

    Blocking; `feed` and `finish` are called one at a time (through the inference engine).
    The LSTM work runs through the embedder's `LstmBatcher`, batched with other streams.
    For tests and the benchmark: `exact` (after `finish`: False where the quiet-mode
    interpolation was used), `vad_redone` and `lstm_redone` (how often each was redone),
    `finish_steps` (LSTM time steps left for `finish`; the whole utterance takes 160 a
    window).
    """

    feed_bytes = FRONT_END_SAMPLES * SAMPLE_WIDTH

    def __init__(self, embedder: ResemblyzerEmbedder) -> None:
        self._embedder = embedder
        self._encoder = embedder.encoder
        self._batcher: LstmBatcher = embedder.batcher
        self._samples = Growing(dtype=np.int16)
        self._odd = b""
        """A byte of a sample split across chunks."""
        self._unprocessed = 0
        """Samples fed since the front end last ran."""
        self._sumsq = 0.0
        self._finished = False
        self.exact = True
        self.finish_steps = 0
        self.vad_redone = 0
        self.lstm_redone = 0
        self._trim = Trim(None)
        self._mels = Growing(capacity=512, shape=(N_MELS,))
        self._partials = _Partials(self._encoder, None, self._mels)

    def feed(self, pcm: bytes) -> None:
        """Take more internal-format PCM (any length) and do the work it makes final."""
        if self._finished:
            raise RuntimeError("speaker stream: feed() after finish()")
        data = self._odd + pcm
        usable = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = data[usable:]
        if not usable:
            return
        chunk = np.frombuffer(data[:usable], dtype="<i2")
        self._samples.append(chunk)
        scaled = chunk.astype(np.float64) * (INT16_MAX / 32768.0)
        self._sumsq += float(np.dot(scaled, scaled))
        self._unprocessed += chunk.size
        if self._unprocessed < FRONT_END_SAMPLES:
            return
        self._unprocessed = 0
        self._follow_gain()
        self._trim.update(self._samples.view(), final=False)
        trimmed = self._trim.trimmed.size - PAD
        # mel frame t is final once the trimmed audio reaches t * HOP + PAD
        self._add_mels((trimmed - PAD) // HOP + 1 if trimmed >= PAD else 0)
        if self._partials.gain is None or self._samples.size >= QUIET_HOLD_S * SAMPLE_RATE:
            self._batcher.offer(self._partials)

    def _add_mels(self, stop: int) -> None:
        start = self._mels.size
        if stop > start:
            self._mels.append(mel_frames(self._trim.trimmed, start, stop))

    def _follow_gain(self) -> None:
        """Redo VAD flags, or all LSTM work, when the running gain has moved too far."""
        if self._sumsq == 0.0:
            return
        level = 10 * math.log10(self._sumsq / self._samples.size / INT16_MAX**2)
        running = max(0.0, TARGET_DBFS - level)
        if abs(running - gain_db(self._trim.gain)) > VAD_TOLERANCE_DB or (
                (running == 0.0) != (self._trim.gain is None)):
            self._redo_vad(self._gain_now())
        basis = self._partials.gain
        if basis is None:
            move = running > 0.0
        elif level > TARGET_DBFS + LOUD_MARGIN_DB:
            move = True
        else:
            move = abs(running - gain_db(basis)) > INTERPOLATION_DB
        if move:
            gain = None
            if running > 0.0:  # the float32 arithmetic may still call it no gain
                exact = self._gain_now()
                gain = exact if exact is not None else np.float32(10 ** (running / 20))
            self._redo_lstm(gain)

    def _gain_now(self) -> np.float32 | None:
        return volume_gain(to_float(self._samples.view()))

    def _redo_vad(self, gain: np.float32 | None) -> None:
        """webrtcvad at `gain`; LSTM work is rewound only from where the trim changed."""
        self.vad_redone += 1
        old = self._trim
        new = Trim(gain)
        new.update(self._samples.view(), final=False)
        self._trim = new
        n = min(len(old.keep), len(new.keep))
        differ = np.flatnonzero(old.keep[:n] != new.keep[:n])
        if differ.size or len(old.keep) != len(new.keep):
            first = int(differ[0]) if differ.size else n
            changed = old.kept_before(first)
            # frame t spans trimmed samples t * HOP - PAD .. t * HOP + PAD
            frame = max(0, (changed - PAD) // HOP + 1)
            if frame < self._mels.size:
                with self._batcher.exclusive():
                    self._mels.truncate(frame)
                    self._partials.rewind(frame)

    def _redo_lstm(self, gain: np.float32 | None) -> None:
        self.lstm_redone += 1
        log.debug("speaker stream: LSTM basis %.2f -> %.2f dB after %.2f s",
                  gain_db(self._partials.gain), gain_db(gain), self._samples.size / SAMPLE_RATE)
        self._batcher.forget(self._partials)
        self._partials = _Partials(self._encoder, gain, self._mels)

    def close(self) -> None:
        """The utterance was abandoned: the batcher forgets its work."""
        self._batcher.forget(self._partials)

    def finish(self) -> Vector:
        """The utterance's vector: only the tail is left to compute."""
        if self._finished:
            raise RuntimeError("speaker stream: finish() twice")
        self._finished = True
        from resemblyzer import VoiceEncoder

        from voiced.speakers.resemblyzer import MIN_COVERAGE, MIN_TRIMMED_S, PARTIAL_RATE

        gain = self._gain_now()
        before = (self._partials, self._partials.steps)
        if gain != self._trim.gain:
            self._redo_vad(gain)
        if not self._partials.covers(gain):
            self._redo_lstm(gain)
        self._trim.update(self._samples.view(), final=True)
        trimmed = self._trim.trimmed.size - PAD
        if trimmed < MIN_TRIMMED_S * SAMPLE_RATE:
            # too little speech: resemblyzer embeds the untrimmed audio
            self._batcher.forget(self._partials)
            return self._embedder.embed(self._samples.view().tobytes())
        _, mel_slices = VoiceEncoder.compute_partial_slices(trimmed, PARTIAL_RATE, MIN_COVERAGE)
        kept = {s.start for s in mel_slices}
        self._add_mels(max(s.stop for s in mel_slices))
        self._partials.keeping = kept  # applied by the batcher, which owns the windows
        self._batcher.complete(self._partials)
        if not kept <= set(self._partials.done):
            raise AssertionError(f"speaker stream: windows {sorted(self._partials.done)}, "
                                 f"expected {sorted(kept)}")
        self.exact = self._partials.gains == 1
        self.finish_steps = self._partials.steps - (
            before[1] if self._partials is before[0] else 0)
        return self._partials.vector(gain)
