"""The embedded CPU recognizer: pocketsphinx, constrained by a grammar compiled from the
intents (or open vocabulary with the bundled language model).

Each utterance gets its own decoder from a pool (decoders are never shared between
concurrent streams; a new one costs ~20 ms with the grammar's small dictionary). Audio is
fed while the person is still speaking, so at the endpoint only the final search remains.

Two details matter for accuracy:

* A low noise floor (`NOISE_FLOOR_DBFS`) is added to the audio. Stretches of exact
  digital silence (padding, noise suppression on a satellite, a muted microphone) throw
  pocketsphinx's silence model and cepstral mean off: the search then ends in the
  middle of the grammar. A -60 dBFS floor is inaudible; on espeak-ng commands padded
  with digital silence it raised the share understood from 71% to 92% (180 → 233 of
  252, `tests/asr/measure_pocketsphinx.py --survey`).
* Cepstral mean normalization adapts over utterances (the first utterances after
  start-up are decoded with the model's generic initial mean, which is worse: 26/30
  fixtures understood from it, 30/30 with an adapted mean). The transcriber keeps one
  shared estimate (`cmn`): every stream starts from it and every finished utterance of
  at least `CMN_MIN_SECONDS` updates it, whichever pooled decoder ran it.
* The lattice best-path pass is off: on the fixtures it changed no result, made
  decoding slower (real-time factor 0.110 instead of 0.062) and, worse, runs at the
  endpoint (113 ms median left in `finish()` instead of 2.4 ms).

`Transcript.confidence` (0..1) measures how well the audio fits the decoded words; see
`acoustic_confidence` and docs/intents-and-asr.md.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voiced.asr.base import AsrIntents, AsrStream, Transcriber
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.asr.grammar import Grammar
    from voiced.config import AsrConfig

log = logging.getLogger(__name__)

SEARCH = "voiced"
POOL_MAX = 32
"""Idle decoders kept for reuse."""
RECOMMENDED_MIN_CONFIDENCE = 0.5
"""The `asr.min_confidence` this confidence is calibrated for (docs/intents-and-asr.md)."""
NOISE_FLOOR_DBFS = -60.0
"""RMS level of the deterministic noise added to every utterance (see module docs)."""
FIT_MIDPOINT = 60.0
"""Acoustic misfit per speech frame (pocketsphinx log units) where confidence is 0.5."""
FIT_WIDTH = 8.0
"""Misfit change that moves the confidence by one logistic unit."""
CMN_MIN_SECONDS = 0.5
"""Shorter utterances (and the warm-up) do not update the shared cepstral mean."""
_NOISE_SEED = 0x766F6963


def model_dir() -> Path:
    """The en-US model shipped in the pocketsphinx wheel."""
    import pocketsphinx

    return Path(pocketsphinx.get_model_path()) / "en-us"


def read_dictionary(path: Path) -> dict[str, list[str]]:
    """word → its pronunciation lines (alternates included)."""
    entries: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0]
            entries.setdefault(word.split("(", 1)[0], []).append(line)
    return entries


def acoustic_confidence(path_score: float, speech_frames: int) -> float:
    """Map the decoded path's score onto 0..1.

    pocketsphinx scores each frame relative to the best-scoring senone of that frame, so
    the path score is how much worse the decoded words explain the audio than the best
    unconstrained sound sequence would (plus grammar transition costs), in log base
    1.0001 units. Divided by the frames inside words it is a misfit per frame: mostly
    30-55 when the words were said, mostly above 60 when the grammar forced unrelated
    speech into a sentence. A logistic curve centred on `FIT_MIDPOINT` turns it into a
    confidence.
    """
    if speech_frames <= 0 or not math.isfinite(path_score):
        return 0.0
    misfit = -path_score / speech_frames
    z = (misfit - FIT_MIDPOINT) / FIT_WIDTH
    return 1.0 / (1.0 + math.exp(min(z, 50.0)))


class _NoiseFloor:
    """One second of fixed Gaussian noise, added by absolute sample position.

    Indexing by position makes the result independent of how the audio was chunked.
    """

    def __init__(self, dbfs: float) -> None:
        rms = 32768.0 * 10 ** (dbfs / 20)
        self.table = np.random.default_rng(_NOISE_SEED).normal(0.0, rms, SAMPLE_RATE)

    def add(self, samples: np.ndarray, position: int) -> bytes:
        index = (np.arange(len(samples)) + position) % len(self.table)
        mixed = samples.astype(np.float64) + self.table[index]
        return np.clip(np.rint(mixed), -32768, 32767).astype("<i2").tobytes()


class PocketsphinxStream(AsrStream):
    """One utterance on one decoder."""

    def __init__(
        self, owner: PocketsphinxTranscriber, decoder: Any, generation: int,
        grammar: Grammar | None,
    ) -> None:
        self._owner = owner
        self._decoder: Any = decoder
        self._generation = generation
        self._grammar = grammar
        self._position = 0
        self._odd = b""
        decoder.set_cmn(owner.cmn)
        decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        """Decode more audio (16-bit mono PCM; chunks of any size)."""
        if self._decoder is None:
            raise AsrError("stream_finished", "audio fed after finish()")
        data = self._odd + pcm
        cut = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = data[cut:]
        samples = np.frombuffer(data[:cut], dtype="<i2")
        if not len(samples):
            return
        self._decoder.process_raw(self._owner._noise.add(samples, self._position), False, False)
        self._position += len(samples)

    def partial(self) -> str | None:
        """The current best hypothesis."""
        if self._decoder is None:
            return None
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None and hyp.hypstr else None

    def finish(self) -> Transcript:
        """End the utterance and return the transcript; the decoder goes back to the pool."""
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            raise AsrError("stream_finished", "finish() called twice")
        ok = False
        try:
            decoder.end_utt()
            transcript = self._owner._transcript(decoder, self._grammar)
            if self._position >= CMN_MIN_SECONDS * SAMPLE_RATE:
                self._owner.cmn = decoder.get_cmn()
            ok = True
            return transcript
        finally:
            if ok:
                self._owner._release(decoder, self._generation)


class PocketsphinxTranscriber(Transcriber):
    """pocketsphinx with the intents' grammar (or the bundled language model)."""

    name = "pocketsphinx"
    lattice_pass = False
    """Run pocketsphinx's lattice best-path pass in grammar mode (off: see module docs)."""

    def __init__(self, config: AsrConfig, intents: AsrIntents | None) -> None:
        self.config = config
        self._intents = intents
        self._pool: list[Any] = []
        self._lock = threading.Lock()
        self._generation = 0
        self._grammar: Grammar | None = None
        self._dict_path: Path | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="voiced-ps-")
        self._noise = _NoiseFloor(NOISE_FLOOR_DBFS)
        self.cmn = ""
        """Cepstral mean (pocketsphinx's comma-separated form) new utterances start from."""
        self.missing_words: frozenset[str] = frozenset()
        """Grammar words the dictionary lacks (their sentences cannot be heard)."""

    @property
    def supports_streaming(self) -> bool:
        """Audio is decoded while the person speaks."""
        return True

    @property
    def grammar(self) -> Grammar | None:
        """The compiled grammar (grammar mode, after `load`)."""
        return self._grammar

    def load(self) -> None:
        """Compile the grammar, write its dictionary, create and warm up a decoder."""
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            raise AsrError("model_unavailable", "pocketsphinx is not installed") from exc
        self._build(self._intents)
        self.transcribe(bytes(SAMPLE_RATE // 5 * SAMPLE_WIDTH))

    def reload(self, intents: AsrIntents) -> None:
        """Recompile the grammar for new intents; idle decoders are discarded and streams
        already running finish on their old decoder."""
        self._intents = intents
        self._build(intents)

    def _build(self, intents: AsrIntents | None) -> None:
        full = model_dir() / "cmudict-en-us.dict"
        grammar: Grammar | None = None
        path = full
        if self.config.mode == "grammar":
            if intents is None:
                raise AsrError("grammar_missing", "grammar mode needs the intents")
            from voiced.asr.grammar import compile_grammar

            entries = read_dictionary(full)
            grammar = compile_grammar(intents.intents, entries.keys(), language=intents.language)
            if grammar.missing_words:
                log.warning(
                    "words not in the pocketsphinx dictionary, sentences using them "
                    "cannot be heard: %s",
                    ", ".join(sorted(grammar.missing_words)),
                )
            if not grammar.sentences:
                raise AsrError("grammar_empty", "no intent sentence can be spoken")
            path = Path(self._tmp.name) / f"grammar-{self._generation + 1}.dict"
            lines = (line for w in sorted(grammar.words) for line in entries[w])
            path.write_text("".join(lines), encoding="utf-8")
            log.info("pocketsphinx grammar: %d sentences, %d words",
                     grammar.sentences, len(grammar.words))
        with self._lock:
            self._grammar, self._dict_path = grammar, path
            self.missing_words = grammar.missing_words if grammar else frozenset()
            self._generation += 1
            self._pool.clear()
        if not self.cmn:
            self.cmn = self._new_decoder().get_cmn()

    def _new_decoder(self) -> Any:
        from pocketsphinx import Decoder

        model = model_dir()
        with self._lock:
            grammar, dict_path = self._grammar, self._dict_path
        common = {"hmm": str(model / "en-us"), "dict": str(dict_path), "loglevel": "FATAL",
                  "samprate": SAMPLE_RATE}
        if grammar is None:
            return Decoder(lm=str(model / "en-us.lm.bin"), **common)
        decoder = Decoder(lm=None, bestpath=self.lattice_pass, **common)
        decoder.add_jsgf_string(SEARCH, grammar.jsgf)
        decoder.activate_search(SEARCH)
        return decoder

    def _acquire(self) -> tuple[Any, int, Grammar | None]:
        with self._lock:
            generation, grammar = self._generation, self._grammar
            if self._pool:
                return self._pool.pop(), generation, grammar
        decoder = self._new_decoder()
        with self._lock:
            if generation != self._generation:
                # reloaded meanwhile: this decoder has the new grammar, never pooled
                return decoder, -1, self._grammar
        return decoder, generation, grammar

    def _release(self, decoder: Any, generation: int) -> None:
        with self._lock:
            if generation == self._generation and len(self._pool) < POOL_MAX:
                self._pool.append(decoder)

    def start_stream(self) -> AsrStream:
        """A stream on a decoder of its own."""
        if self._dict_path is None:
            raise AsrError("not_loaded", "load() the transcriber first")
        decoder, generation, grammar = self._acquire()
        return PocketsphinxStream(self, decoder, generation, grammar)

    def transcribe(self, pcm: bytes) -> Transcript:
        """Decode a whole utterance."""
        stream = self.start_stream()
        stream.feed(pcm)
        return stream.finish()

    def _transcript(self, decoder: Any, grammar: Grammar | None) -> Transcript:
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Transcript("", 0.0, self.config.language)
        # fillers (<sil>, [NOISE], +BREATH+) and the grammar's null transitions, "(NULL)"
        segments = [s for s in decoder.seg() if s.word and s.word[0] not in "<[+("]
        words = [s.word.split("(", 1)[0] for s in segments]
        text = " ".join(words) or " ".join(hyp.hypstr.split())
        speech_frames = sum(s.end_frame - s.start_frame + 1 for s in segments)
        score = decoder.get_logmath().log(hyp.best_score) if hyp.best_score > 0 else -math.inf
        confidence = acoustic_confidence(score, speech_frames)
        if grammar is not None and not grammar.accepts(text):
            # the search ran out of audio inside a sentence: a fragment, not a command
            log.debug("pocketsphinx: %r is not a whole sentence of the grammar", text)
            confidence = 0.0
        return Transcript(text, confidence, self.config.language, tokens=tuple(words))
