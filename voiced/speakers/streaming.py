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
`voiced.speakers.frontend`). Each is causal with a short
look-ahead: a VAD frame's mask is final 7 frames (210 ms) later; a mel frame is final once
the trimmed audio reaches 12.5 ms past its centre; the LSTM is a recurrence, so the state of
every open window (at most 3 overlap) is advanced over final frames as they appear, all as
one batch. A window that completes lies wholly inside the audio, so it is always kept. At
`finish` only the tail is left: the last 210 ms of masking, a few mel frames, and the
remaining steps of the last window (its zero padding included): typically 30-60 LSTM steps
instead of 160 for every window.

Volume is the one global step: the gain comes from the RMS of the whole utterance, known
only at the end. Audio at or above -30 dBFS gets gain 1, so once the running level is
there nothing depends on it and `finish` is exact. Quieter audio ("quiet mode"):

* webrtcvad is not level-invariant, and a flipped frame can change which windows exist, so
  its flags must be those at the final gain. They are cheap: whenever the running gain
  drifts `VAD_TOLERANCE_DB` from the one they were made at, they are redone, and the
  trimmed audio is rebuilt; only where the trim changed are LSTM windows rewound. `finish`
  redoes them at the exact final gain.
* the LSTM sees mel power (linear in gain squared) and is smooth in it. Every window runs
  at three gains, the basis and `INTERPOLATION_DB` either side of it, as one batch; at
  `finish` the windows' mean is interpolated (quadratic, in dB) at the final gain: about
  1e-4 in cosine from the exact vector. The basis moves (all LSTM work is redone) only
  when the running gain leaves that range.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.speakers.base import EmbeddingStream, Vector, l2_normalize
from voiced.speakers.frontend import (
    HOP,
    INT16_MAX,
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
ADVANCE_FRAMES = 16
"""While audio arrives, LSTM states advance once this many mel frames (160 ms) are final:
every call has a fixed cost (about 0.5 ms, against 40 us a step)."""

WINDOW_FRAMES = 160
"""Mel frames per partial window (`partials_n_frames`, 1.6 s)."""


@dataclass(slots=True)
class _Window:
    """A partial window whose LSTM state is being advanced."""

    start: int
    """First mel frame."""
    state: tuple[Any, Any] | None = None
    """The LSTM's (h, c) after the frames so far, one batch row per gain; None: none yet."""


@dataclass(slots=True)
class _Partials:
    """The LSTM side: partial windows over the trimmed audio's mel frames, at some gains."""

    encoder: Any
    gain: np.float32 | None
    """The basis gain; None: gain 1, one run per window and an exact result."""
    offsets_db: tuple[float, ...] = field(init=False)
    mel_done: int = 0
    """Mel frames every open window has been advanced over."""
    open: list[_Window] = field(default_factory=list)
    done: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)
    """Completed windows by start frame: one unit vector per gain."""
    steps: int = 0
    """LSTM time steps run (a batch of windows and gains counts once)."""

    def __post_init__(self) -> None:
        quiet = self.gain is not None
        self.offsets_db = QUIET_OFFSETS_DB if quiet else (0.0,)

    def rewind(self, frame: int) -> None:
        """Forget the work that used mel frames from `frame` on (the trim changed there)."""
        if frame >= self.mel_done:
            return
        hit = [w.start for w in self.open] + [s for s in self.done
                                              if s + WINDOW_FRAMES > frame]
        self.open = []
        for s in hit:
            self.done.pop(s, None)
        self.mel_done = min([frame, *hit])

    def advance(self, trim: Trim, stop: int, kept: set[int] | None) -> None:
        """Advance the windows over mel frames `mel_done..stop`.

        `kept` (at the end): the starts of the windows the utterance keeps; others are
        dropped. Before that, every window that starts is opened.
        """
        import torch

        start = self.mel_done
        step = _step()
        if kept is not None:
            self.open = [w for w in self.open if w.start in kept]
        opened = {w.start for w in self.open}
        for s in range(-(-start // step) * step, stop, step):
            if s not in self.done and s not in opened and (kept is None or s in kept):
                self.open.append(_Window(s))
        if stop <= start:
            return
        mel = torch.from_numpy(mel_frames(trim.trimmed, start, stop))
        scales = torch.tensor([10 ** ((gain_db(self.gain) + o) / 10) for o in self.offsets_db],
                              dtype=torch.float32)
        # one batch row per (window, gain): mel power scales with the gain squared
        mels = (scales[:, None, None] * mel[None]).to(self.encoder.device)
        cuts = {start, stop}
        for w in self.open:
            cuts.update(p for p in (w.start, w.start + WINDOW_FRAMES) if start < p < stop)
        points = sorted(cuts)
        lstm = self.encoder.lstm
        n = len(self.offsets_db)
        zero = torch.zeros(lstm.num_layers, n, lstm.hidden_size, device=self.encoder.device)
        with torch.no_grad():
            for a, b in itertools.pairwise(points):
                active = [w for w in self.open if w.start <= a < w.start + WINDOW_FRAMES]
                if not active:
                    continue
                x = mels[:, a - start : b - start].repeat(len(active), 1, 1)
                h0 = torch.cat([w.state[0] if w.state else zero for w in active], 1)
                c0 = torch.cat([w.state[1] if w.state else zero for w in active], 1)
                _, (h, c) = lstm(x, (h0, c0))
                self.steps += b - a
                for i, w in enumerate(active):
                    w.state = (h[:, i * n : (i + 1) * n], c[:, i * n : (i + 1) * n])
                    if b == w.start + WINDOW_FRAMES:
                        self.done[w.start] = self._vectors(w.state[0])
        self.open = [w for w in self.open if w.start + WINDOW_FRAMES > stop]
        self.mel_done = stop

    def _vectors(self, h: Any) -> npt.NDArray[np.float64]:
        """A completed window's unit vectors (one per gain), as `VoiceEncoder.forward`."""
        raw = self.encoder.relu(self.encoder.linear(h[-1]))
        out: npt.NDArray[np.float64] = (raw / raw.norm(dim=1, keepdim=True)).cpu().numpy()
        return out.astype(np.float64)

    def vector(self, final: np.float32 | None) -> Vector:
        """The normalized mean of the completed windows at the gain `final`.

        In quiet mode, interpolated (Lagrange, in dB) from the gains it ran at.
        """
        mean = np.mean(np.stack(list(self.done.values())), axis=0)
        if len(self.offsets_db) == 1:
            return l2_normalize(mean[0])
        x = gain_db(final) - gain_db(self.gain)
        nodes = self.offsets_db
        weights = [math.prod((x - xk) / (xj - xk) for xk in nodes if xk != xj) for xj in nodes]
        return l2_normalize(np.tensordot(weights, mean, axes=1))

    def covers(self, gain: np.float32 | None) -> bool:
        """True when the vector at `gain` can come from this work."""
        if len(self.offsets_db) == 1:
            return gain == self.gain
        return abs(gain_db(gain) - gain_db(self.gain)) <= INTERPOLATION_DB


@functools.cache
def _step() -> int:
    """Mel frames between window starts (77 at resemblyzer's 1.3 partials a second)."""
    from voiced.speakers.resemblyzer import PARTIAL_RATE

    return round(SAMPLE_RATE / PARTIAL_RATE / HOP)


class ResemblyzerStream(EmbeddingStream):
    """One utterance embedded as it arrives; `finish` returns what `embed` would.

    Blocking; `feed` and `finish` are called one at a time (through the inference engine).
    For tests and the benchmark: `exact` (after `finish`: False where the quiet-mode
    interpolation was used), `vad_redone` and `lstm_redone` (how often each was redone),
    `finish_steps` (LSTM time steps left for `finish`; the whole utterance takes 160 a
    window).
    """

    def __init__(self, embedder: ResemblyzerEmbedder) -> None:
        self._embedder = embedder
        self._encoder = embedder.encoder
        self._samples = Growing(dtype=np.int16)
        self._odd = b""
        """A byte of a sample split across chunks."""
        self._sumsq = 0.0
        self._finished = False
        self.exact = True
        self.finish_steps = 0
        self.vad_redone = 0
        self.lstm_redone = 0
        self._trim = Trim(None)
        self._partials = _Partials(self._encoder, None)

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
        self._follow_gain()
        self._trim.update(self._samples.view(), final=False)
        trimmed = self._trim.trimmed.size - PAD
        # mel frame t is final once the trimmed audio reaches t * HOP + PAD
        ready = (trimmed - PAD) // HOP + 1 if trimmed >= PAD else 0
        if ready - self._partials.mel_done >= ADVANCE_FRAMES:
            self._partials.advance(self._trim, ready, None)

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
            self._partials.rewind(frame)

    def _redo_lstm(self, gain: np.float32 | None) -> None:
        self.lstm_redone += 1
        log.debug("speaker stream: LSTM basis %.2f -> %.2f dB after %.2f s",
                  gain_db(self._partials.gain), gain_db(gain), self._samples.size / SAMPLE_RATE)
        self._partials = _Partials(self._encoder, gain)

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
            return self._embedder.embed(self._samples.view().tobytes())
        _, mel_slices = VoiceEncoder.compute_partial_slices(trimmed, PARTIAL_RATE, MIN_COVERAGE)
        kept = {s.start for s in mel_slices}
        self._partials.advance(self._trim, max(s.stop for s in mel_slices), kept)
        if set(self._partials.done) != kept:
            raise AssertionError(f"speaker stream: windows {sorted(self._partials.done)}, "
                                 f"expected {sorted(kept)}")
        self.exact = len(self._partials.offsets_db) == 1
        self.finish_steps = self._partials.steps - (
            before[1] if self._partials is before[0] else 0)
        return self._partials.vector(gain)
