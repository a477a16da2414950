"""The embedded CPU recognizer: pocketsphinx, constrained by a grammar compiled from the
intents (or open vocabulary with the bundled language model).

Each utterance gets its own decoder from a small pool (decoders are not shared between
concurrent streams). Audio is fed while the person is still speaking, so at the endpoint
only the final search remains.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrStream, Transcriber
from voiced.const import SAMPLE_RATE
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.config import AsrConfig
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

SEARCH = "voiced"
POOL_MAX = 32
"""Idle decoders kept for reuse."""


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


class PocketsphinxStream(AsrStream):
    """One utterance on one decoder."""

    def __init__(self, owner: PocketsphinxTranscriber, decoder: tuple[Any, int]) -> None:
        self._owner = owner
        self._decoder, self._generation = decoder
        self._samples = 0
        self._decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        """Decode more audio."""
        self._decoder.process_raw(pcm, False, False)
        self._samples += len(pcm) // 2

    def partial(self) -> str | None:
        """The current best hypothesis."""
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None and hyp.hypstr else None

    def finish(self) -> Transcript:
        """End the utterance and return the transcript; the decoder goes back to the pool."""
        try:
            self._decoder.end_utt()
            return self._owner._transcript(self._decoder, self._samples)
        finally:
            self._owner._release(self._decoder, self._generation)


class PocketsphinxTranscriber(Transcriber):
    """pocketsphinx with the intents' grammar (or the bundled language model)."""

    name = "pocketsphinx"

    def __init__(self, config: AsrConfig, intents: IntentRecognizer | None) -> None:
        self.config = config
        self._intents = intents
        self._pool: list[Any] = []
        self._lock = threading.Lock()
        self._generation = 0
        self._jsgf: str | None = None
        self._dict_path: Path | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="voiced-ps-")
        self.missing_words: frozenset[str] = frozenset()

    @property
    def supports_streaming(self) -> bool:
        """Audio is decoded while the person speaks."""
        return True

    def load(self) -> None:
        """Compile the grammar, write its dictionary, create and warm up a decoder."""
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            raise AsrError("model_unavailable", "pocketsphinx is not installed") from exc
        self._build(self._intents)
        decoder = self._acquire()
        stream = PocketsphinxStream(self, decoder)
        stream.feed(bytes(SAMPLE_RATE // 5 * 2))
        stream.finish()

    def reload(self, intents: IntentRecognizer) -> None:
        """Recompile the grammar for new intents; idle decoders are discarded."""
        self._intents = intents
        self._build(intents)

    def _build(self, intents: IntentRecognizer | None) -> None:
        full = model_dir() / "cmudict-en-us.dict"
        if self.config.mode == "grammar":
            if intents is None:
                raise AsrError("grammar_missing", "grammar mode needs the intents")
            from voiced.asr.grammar import compile_grammar

            entries = read_dictionary(full)
            grammar = compile_grammar(intents.intents, set(entries),
                                      language=intents.language)
            if grammar.missing_words:
                log.warning("words not in the pocketsphinx dictionary, sentences using them "
                            "cannot be heard: %s", ", ".join(sorted(grammar.missing_words)))
            self.missing_words = grammar.missing_words
            path = Path(self._tmp.name) / f"grammar-{self._generation + 1}.dict"
            path.write_text("".join(line for w in sorted(grammar.words) for line in entries[w]),
                            encoding="utf-8")
            with self._lock:
                self._jsgf, self._dict_path = grammar.jsgf, path
                self._generation += 1
                self._pool.clear()
            log.info("pocketsphinx grammar: %d sentences, %d words", grammar.sentences,
                     len(grammar.words))
        else:
            with self._lock:
                self._jsgf, self._dict_path = None, full
                self._generation += 1
                self._pool.clear()

    def _new_decoder(self) -> Any:
        from pocketsphinx import Decoder

        model = model_dir()
        if self._jsgf is not None:
            decoder = Decoder(hmm=str(model / "en-us"), dict=str(self._dict_path), lm=None,
                              loglevel="FATAL", samprate=SAMPLE_RATE)
            decoder.add_jsgf_string(SEARCH, self._jsgf)
            decoder.activate_search(SEARCH)
        else:
            decoder = Decoder(hmm=str(model / "en-us"), dict=str(self._dict_path),
                              lm=str(model / "en-us.lm.bin"), loglevel="FATAL",
                              samprate=SAMPLE_RATE)
        return decoder

    def _acquire(self) -> tuple[Any, int]:
        with self._lock:
            if self._pool:
                return self._pool.pop(), self._generation
            generation = self._generation
        return self._new_decoder(), generation

    def _release(self, decoder: Any, generation: int) -> None:
        with self._lock:
            if generation == self._generation and len(self._pool) < POOL_MAX:
                self._pool.append(decoder)

    def start_stream(self) -> AsrStream:
        """A stream on a free decoder."""
        return PocketsphinxStream(self, self._acquire())

    def transcribe(self, pcm: bytes) -> Transcript:
        """Decode a whole utterance."""
        stream = self.start_stream()
        stream.feed(pcm)
        return stream.finish()

    def _transcript(self, decoder: Any, samples: int) -> Transcript:
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Transcript("", 0.0, self.config.language)
        words = [s.word for s in decoder.seg() if not s.word.startswith(("<", "[", "+"))]
        # the posterior of the best path given the lattice: 0..1
        logmath = decoder.get_logmath()
        confidence = min(1.0, max(0.0, logmath.exp(hyp.prob))) if hyp.prob else 0.0
        text = " ".join(w.split("(", 1)[0] for w in words) or hyp.hypstr
        return Transcript(text, _calibrate(confidence), self.config.language,
                          tokens=tuple(text.split()))


def _calibrate(posterior: float) -> float:
    """Map the raw sentence posterior (tiny for long sentences) onto 0..1."""
    if posterior <= 0:
        return 0.0
    return max(0.0, min(1.0, 1.0 + math.log10(posterior) / 4))
