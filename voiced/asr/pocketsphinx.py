"""The embedded CPU recognizer: pocketsphinx, constrained by a grammar compiled from the
intents (or open vocabulary with the bundled language model).

Each utterance gets its own decoder from a pool (decoders are never shared between
concurrent streams; a new one costs ~20 ms with the grammar's small dictionary). Audio is
fed while the person is still speaking, so at the endpoint only the final search remains.

What matters for accuracy (measured with `voiced bench accuracy`, docs/accuracy.md):

* A low noise floor is added to the audio, set from the utterance's own level
  (`voiced.asr.noise_floor`): exact digital silence throws the search off.
* Cepstral mean normalization adapts over utterances, **per site** (`start_stream_for`):
  each site starts from its own estimate, left by its last utterance of at least
  `CMN_MIN_SECONDS`; a new site (and audio of no site: the HTTP upload, the CLI) starts
  from the shared estimate `cmn`, which begins at `INITIAL_CMN`, the mean over the
  benchmark's training voices and rooms. An estimate adapted to the voice and room is
  worth 10 points of commands understood over the model's generic one, and 5 over the
  mean one.
* Every utterance starts its decoder from a known state: the noise statistics of
  pocketsphinx's noise removal are reset (`Decoder.start_stream`) and the site's
  cepstral mean set, so a pooled decoder gives exactly what a new one would, whatever
  another site decoded on it before (it used to carry the noise estimate over: the same
  16 utterances decoded in two orders gave 15 different results).
* The lattice best-path pass is off: on the fixtures it changed no result, made
  decoding slower (real-time factor 0.110 instead of 0.062) and, worse, runs at the
  endpoint (113 ms median left in `finish()` instead of 2.4 ms).

`Transcript.confidence` (0..1): how well the audio fits the decoded words
(`acoustic_confidence`), or with `asr.confidence: words` in grammar mode the probability
that the sentence was said (`voiced.asr.rejection`).
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voiced.asr.base import AsrIntents, AsrStream, Completion, Transcriber
from voiced.asr.noise_floor import LevelFloor
from voiced.asr.rejection import WordFit, command_confidence, log_score
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.asr.fsg import Fsg
    from voiced.asr.grammar import Grammar
    from voiced.config import AsrConfig

log = logging.getLogger(__name__)

SEARCH = "voiced"
POOL_MAX = 32
"""Idle decoders kept for reuse."""
MAX_SITES = 4096
"""Sites whose cepstral mean is kept (the least recently heard is forgotten first)."""
RECOMMENDED_MIN_CONFIDENCE = 0.5
"""The `asr.min_confidence` this confidence is calibrated for (voiced.asr.rejection)."""
FIT_MIDPOINT = 60.0
"""Acoustic misfit per speech frame where the path confidence is 0.5."""
FIT_WIDTH = 8.0
"""Misfit change that moves the path confidence by one logistic unit."""
CMN_MIN_SECONDS = 0.5
"""Shorter utterances (and the warm-up) do not update a cepstral mean estimate."""
INITIAL_CMN = "46.11,2.57,0.00,4.42,-2.49,-1.99,-0.26,-4.05,-3.23,-1.53,0.44,-0.76,-1.70"
"""The cepstral mean new sites start from: the mean of the estimates left by one
sentence of each training voice in each condition of `voiced bench accuracy --size
medium` (pocketsphinx's own initial estimate is 40,3,-1,0,...)."""
# The binding calls `Decoder.start_stream` deprecated and unnecessary; for a reused decoder
# it is neither: it is the only way to clear the noise estimate of the last utterance.
warnings.filterwarnings("ignore", r"start_stream\(\) is deprecated", DeprecationWarning)


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
    """Map the decoded path's score onto 0..1 (`asr.confidence: path`).

    The path score is how much worse the decoded words explain the audio than the best
    unconstrained sound sequence would, in log base 1.0001 units. Divided by the frames
    inside words it is a misfit per frame (see `voiced.asr.rejection`); a logistic curve
    centred on `FIT_MIDPOINT` turns it into a confidence.
    """
    if speech_frames <= 0 or not math.isfinite(path_score):
        return 0.0
    misfit = -path_score / speech_frames
    z = (misfit - FIT_MIDPOINT) / FIT_WIDTH
    return 1.0 / (1.0 + math.exp(min(z, 50.0)))


class PocketsphinxStream(AsrStream):
    """One utterance on one decoder."""

    def __init__(
        self, owner: PocketsphinxTranscriber, decoder: Any, generation: int,
        grammar: Grammar | None, site: str | None = None,
    ) -> None:
        self._owner = owner
        self._decoder: Any = decoder
        self._generation = generation
        self._grammar = grammar
        self._site = site
        self._odd = b""
        self._floor = LevelFloor()
        self._judged: tuple[str, Completion] | None = None
        self._hurried = False
        # a known start: no noise estimate from earlier audio, this site's cepstral mean
        decoder.start_stream()
        decoder.set_cmn(owner.site_cmn(site))
        decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        """Decode more audio (16-bit mono PCM; chunks of any size)."""
        if self._decoder is None:
            raise AsrError("stream_finished", "audio fed after finish()")
        data = self._odd + pcm
        cut = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = data[cut:]
        samples = np.frombuffer(data[:cut], dtype="<i2")
        self._settle()
        if not len(samples):
            return
        ready = self._floor.push(samples)
        if ready:
            self._decoder.process_raw(ready, False, False)

    def hurry(self) -> None:
        """The utterance's silence is being judged (adaptive endpointing): audio the floor
        still holds is decoded at the next `feed` or `completion`, its level set from
        what was held, so that a command shorter than `noise_floor.FLOOR_WINDOW_MS` (or the first
        part of one said with a pause) is judged on its words, not on none."""
        self._hurried = True

    def _settle(self) -> None:
        if self._hurried and self._decoder is not None:
            held = self._floor.flush()
            if held:
                self._decoder.process_raw(held, False, False)

    def partial(self) -> str | None:
        """The current best hypothesis."""
        if self._decoder is None:
            return None
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None and hyp.hypstr else None

    def completion(self) -> Completion | None:
        """Where the current hypothesis stands in the grammar (None in open mode).

        Judged on the partial hypothesis of the audio handed to the decoder so far (the
        first `noise_floor.FLOOR_WINDOW_MS` wait for the floor's level unless the stream
        was hurried).
        No words decoded yet is the start of any command (`PREFIX`): on the accuracy
        benchmark's paused set, ending those on the end-of-speech silence split quiet
        commands at their pauses (13 % of the training commands cut short, 5 % after).
        The partial is the best path so far, which need not be a path to the end of a
        sentence: a command said to its end can show as the start of another, and then
        waits longer (`vad.max_silence_ms`). Decoding the audio to the end instead was
        tried and dropped: the final search forces a start of a command into a whole one
        ("please tell me the" → "... the date"), which cut paused commands short
        (docs/endpoint.md).
        """
        if self._grammar is None or self._decoder is None:
            return None
        self._settle()
        text = self.partial() or ""
        if not text:
            # speech, and no word of it decoded yet (a quiet voice, a short start): the
            # start of any command, not a reason to end (docs/endpoint.md)
            return Completion.PREFIX
        if self._judged is None or self._judged[0] != text:  # judged once per hypothesis
            self._judged = text, self._grammar.completion(text)
        judged = self._judged[1]
        if judged in (Completion.COMPLETE, Completion.CONTINUABLE):
            # ending early needs a confident hypothesis: the part of an everyday
            # sentence before a pause can read as a command, but fits the audio worse
            floor = self._owner.config.early_end_confidence
            if floor > 0 and self._owner.path_confidence(self._decoder) < floor:
                return Completion.UNSURE
        return judged

    def finish(self) -> Transcript:
        """End the utterance and return the transcript; the decoder goes back to the pool."""
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            raise AsrError("stream_finished", "finish() called twice")
        ok = False
        try:
            rest = self._floor.flush()
            if rest:
                decoder.process_raw(rest, False, False)
            decoder.end_utt()
            transcript = self._owner._transcript(decoder, self._grammar)
            if self._floor.position >= CMN_MIN_SECONDS * SAMPLE_RATE:
                self._owner.set_site_cmn(self._site, decoder.get_cmn())
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
        self._fsg: Fsg | None = None
        """The grammar as a minimal automaton (None: pocketsphinx compiles the JSGF)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="voiced-ps-")
        self.cmn = INITIAL_CMN
        """Cepstral mean (pocketsphinx's comma-separated form) of audio of no site, and
        where a new site starts."""
        self.sites: dict[str, str] = {}
        """Each site's cepstral mean, least recently heard first (at most `MAX_SITES`)."""
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

    def site_cmn(self, site: str | None) -> str:
        """The cepstral mean an utterance from `site` starts from (None: no site)."""
        with self._lock:
            if site is None:
                return self.cmn
            return self.sites.get(site, self.cmn)

    def set_site_cmn(self, site: str | None, cmn: str) -> None:
        """Keep `cmn` for the next utterance of `site` (None: of no site)."""
        with self._lock:
            if site is None:
                self.cmn = cmn
                return
            self.sites.pop(site, None)
            self.sites[site] = cmn
            while len(self.sites) > MAX_SITES:
                del self.sites[next(iter(self.sites))]

    def load(self) -> None:
        """Compile the grammar, write its dictionary, create and warm up a decoder."""
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:
            raise AsrError("model_unavailable", "pocketsphinx is not installed") from exc
        self._build(self._intents)
        self.transcribe(bytes(SAMPLE_RATE // 5 * SAMPLE_WIDTH))

    def close(self) -> None:
        """Drop the idle decoders and remove the grammar's files (its temporary folder:
        a worker process ends with os._exit, which runs no finalizer, so each one used to
        leave its folder behind)."""
        with self._lock:
            self._pool.clear()
        self._tmp.cleanup()

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
        fsg = None
        if grammar is not None and self.config.search == "automaton":
            from voiced.asr.fsg import jsgf_fsg, minimal_fsg

            fsg = minimal_fsg(jsgf_fsg(grammar.jsgf, grammar.name))
            if fsg is not None:
                log.info("pocketsphinx grammar automaton: %d states, %d word arcs",
                         fsg.states, fsg.word_arcs)
        with self._lock:
            self._grammar, self._dict_path, self._fsg = grammar, path, fsg
            self.missing_words = grammar.missing_words if grammar else frozenset()
            self._generation += 1
            self._pool.clear()

    def _new_decoder(self) -> Any:
        from pocketsphinx import Decoder

        model = model_dir()
        with self._lock:
            grammar, dict_path, fsg = self._grammar, self._dict_path, self._fsg
        common = {"hmm": str(model / "en-us"), "dict": str(dict_path), "loglevel": "FATAL",
                  "samprate": SAMPLE_RATE}
        if grammar is None:
            return Decoder(lm=str(model / "en-us.lm.bin"), **common)
        decoder = Decoder(lm=None, bestpath=self.lattice_pass, **common)
        if fsg is not None:  # the same sentences, a third of the search (voiced.asr.fsg)
            decoder.add_fsg(SEARCH, decoder.create_fsg(SEARCH, fsg.start, fsg.final,
                                                       list(fsg.arcs)))
        else:
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
        """A stream on a decoder of its own, for audio of no site."""
        return self.start_stream_for(None)

    def start_stream_for(self, site: str | None) -> AsrStream:
        """A stream for `site`'s audio, from that site's cepstral mean."""
        if self._dict_path is None:
            raise AsrError("not_loaded", "load() the transcriber first")
        decoder, generation, grammar = self._acquire()
        return PocketsphinxStream(self, decoder, generation, grammar, site)

    def transcribe(self, pcm: bytes) -> Transcript:
        """Decode a whole utterance (of no site)."""
        stream = self.start_stream()
        stream.feed(pcm)
        return stream.finish()

    @staticmethod
    def path_confidence(decoder: Any) -> float:
        """`acoustic_confidence` of the decoder's current best path (partial or final)."""
        hyp = decoder.hyp()
        if hyp is None or hyp.best_score <= 0:
            return 0.0
        frames = sum(s.end_frame - s.start_frame + 1 for s in decoder.seg()
                     if s.word and s.word[0] not in "<[+(")
        return acoustic_confidence(decoder.get_logmath().log(hyp.best_score), frames)

    def _transcript(self, decoder: Any, grammar: Grammar | None) -> Transcript:
        hyp = decoder.hyp()
        if hyp is None or not hyp.hypstr.strip():
            return Transcript("", 0.0, self.config.language)
        # fillers (<sil>, [NOISE], +BREATH+) and the grammar's null transitions, "(NULL)"
        segments = [s for s in decoder.seg() if s.word and s.word[0] not in "<[+("]
        words = [s.word.split("(", 1)[0] for s in segments]
        text = " ".join(words) or " ".join(hyp.hypstr.split())
        if grammar is not None and not grammar.accepts(text):
            # the search ran out of audio inside a sentence: a fragment, not a command
            log.debug("pocketsphinx: %r is not a whole sentence of the grammar", text)
            confidence = 0.0
        elif grammar is not None and self.config.confidence == "words":
            fits = [WordFit(w, s.end_frame - s.start_frame + 1, log_score(s.ascore))
                    for w, s in zip(words, segments, strict=True)]
            confidence = command_confidence(fits, grammar.skip_words)
        else:
            confidence = self.path_confidence(decoder)
        return Transcript(text, confidence, self.config.language, tokens=tuple(words))
