"""The worker side of `voiced bench accuracy`: speak, apply the condition, find the speech,
recognize it as the daemon does, and judge the result.

Each worker process loads the intent catalog and the configured pocketsphinx recognizer
once (`voiced transcribe`'s code path: `load_catalog`, `create_transcriber` in-process,
`transcribe_pcm` with `asr.min_confidence` and the intent context). Per utterance:

1. the speech is synthesized once per voice and text (cached);
2. the condition is applied (cached by text, voice and condition);
3. webrtcvad and the endpointing segmenter, with the `vad:` settings, cut the audio into
   utterances as a site worker does (an utterance still open when the audio ends is ended
   there, as by a session timeout);
4. each utterance is decoded and matched like `UtteranceRun` does: low-confidence
   transcripts never reach the intents, a confirmation code outside a confirmation turn is
   no command, a speaker-gated intent the context refuses is no command.

Cepstral mean: the daemon adapts one estimate over the utterances it hears. Here every
(voice, condition) first says `PRIMING_TEXT` from the model's initial estimate, and every
trial of it starts, on a new decoder, from the estimate that left: as if the daemon had
already heard that voice in that room once. Results therefore do not depend on the
order, the number of jobs or the size of the run.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voiced.bench import conditions as cond
from voiced.bench.corpus import PRIMING_TEXT, BenchVoice, Sentence

if TYPE_CHECKING:
    from voiced.asr.pocketsphinx import PocketsphinxTranscriber
    from voiced.config import Config, VadConfig
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

COMMAND_OUTCOMES = ("understood", "wrong", "no_intent", "low_confidence", "empty",
                    "no_speech")
"""What happened to a command, best first; a failure is named by its first step that
went wrong (the VAD found nothing, the search ended empty, too little confidence, text
no intent matches, another command)."""


@dataclass(frozen=True, slots=True)
class Unit:
    """The trials of one voice in one condition (they share the priming)."""

    voice: BenchVoice
    condition: str
    split: str
    sentences: tuple[Sentence, ...]
    babble: tuple[tuple[BenchVoice, str], ...]
    """Other voices' utterances for babble and tv noise."""


@dataclass(slots=True)
class _State:
    config: Config
    recognizer: IntentRecognizer
    transcriber: PocketsphinxTranscriber
    context: dict[str, Any]
    cache: Path
    seed: int
    initial_cmn: str


_state: _State | None = None


def speech_path(cache: Path, voice: BenchVoice, text: str) -> Path:
    """The cached synthesized speech of `text` by `voice`."""
    v = voice.voice
    key = f"{v.synth}|{v.voice}|{v.rate}|{v.pitch}|{text}"
    return cache / "speech" / voice.id / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.wav"


def synthesize(cache: Path, voice: BenchVoice, text: str) -> str | None:
    """Make the cached speech if missing; an error message on failure."""
    from voiced.speakers.voices import synthesize as speak

    path = speech_path(cache, voice, text)
    if path.is_file():
        return None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        speak(voice.voice, text, tmp)
        tmp.replace(path)
    except Exception as exc:  # a synthesizer that fails names the voice, the run goes on
        tmp.unlink(missing_ok=True)
        return f"{voice.id}: {text!r}: {exc}"
    return None


def load_speech(cache: Path, voice: BenchVoice, text: str) -> np.ndarray:
    """The synthesized speech as floats (full scale 1.0); made now if not cached."""
    from voiced.audio.wav import read_wav_file

    path = speech_path(cache, voice, text)
    if not path.is_file():
        error = synthesize(cache, voice, text)
        if error:
            raise RuntimeError(error)
    pcm = read_wav_file(path)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def rendered_pcm(cache: Path, seed: int, voice: BenchVoice, text: str, condition: str,
                 babble: Sequence[tuple[BenchVoice, str]]) -> bytes:
    """`text` by `voice` in `condition`, as internal-format audio (cached)."""
    from voiced.audio.wav import read_wav_file, write_wav_file

    parsed = cond.parse_condition(condition)
    others = [(v, t) for v, t in babble if v.voice.person != voice.voice.person] \
        if parsed.needs_talkers else []
    key = "|".join([str(cond.VERSION), str(seed), condition, voice.id, text,
                    *(f"{v.id}:{t}" for v, t in others)])
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = cache / "mixed" / parsed.name / voice.id / f"{digest[:16]}.wav"
    if path.is_file():
        return read_wav_file(path)
    rng = np.random.default_rng(int(digest[16:32], 16))
    talkers = [load_speech(cache, v, t) for v, t in others]
    pcm = cond.render(parsed, load_speech(cache, voice, text), rng, talkers).pcm()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_wav_file(tmp, pcm)
    tmp.replace(path)
    return pcm


def endpoint(pcm: bytes, vad: VadConfig) -> list[bytes]:
    """The utterances a site worker would cut from `pcm` (webrtcvad + segmenter)."""
    from voiced.const import VAD_FRAME_BYTES
    from voiced.models import EndReason
    from voiced.vad.segmenter import Segmenter, SegmenterSettings, SpeechEnded
    from voiced.vad.webrtc import WebrtcVad

    detector = WebrtcVad(vad.aggressiveness)
    segmenter = Segmenter(SegmenterSettings.from_config(vad))
    found = []
    for i in range(0, len(pcm) - VAD_FRAME_BYTES + 1, VAD_FRAME_BYTES):
        frame = pcm[i:i + VAD_FRAME_BYTES]
        found += segmenter.process(frame, detector.is_speech(frame))
    found += segmenter.stop(EndReason.TIMEOUT)
    return [e.audio for e in found if isinstance(e, SpeechEnded)]


def init(config: Config, paths: Sequence[Path] | None, context: Mapping[str, Any],
         cache: Path, seed: int) -> None:
    """Load the catalog and the recognizer in this process (a pool initializer)."""
    global _state
    from voiced.asr.service import asr_intents, create_transcriber
    from voiced.config import AsrConfig
    from voiced.intents.catalog import load_catalog

    logging.basicConfig(level=logging.ERROR)
    recognizer = load_catalog(config, paths)
    asr = AsrConfig.model_validate({**config.asr.model_dump(), "processes": 1})
    transcriber: Any = create_transcriber(asr, asr_intents(recognizer), config.state_dir)
    transcriber.load()
    _state = _State(config, recognizer, transcriber, dict(context), cache, seed,
                    transcriber.cmn)


def synth_task(item: tuple[BenchVoice, str]) -> str | None:
    """Pool task: synthesize one utterance into the cache."""
    assert _state is not None
    return synthesize(_state.cache, *item)


def _confirm_intent() -> str | None:
    """The internal confirmation-code intent, which is no command outside a confirmation
    turn (as in `UtteranceRun`); None where voiced has none."""
    try:
        from voiced.protect import CONFIRM_INTENT
    except ImportError:
        return None
    return CONFIRM_INTENT


def _fresh_decoder(transcriber: PocketsphinxTranscriber, cmn: str) -> None:
    """Make the next stream start on a new decoder from the cepstral mean `cmn`.

    A pooled decoder carries more than the cepstral mean from one utterance to the next
    (the same audio decodes differently after other audio, measured), so results would
    depend on which trials a worker ran before; a new decoder costs about 20 ms.
    """
    transcriber._pool.clear()
    transcriber.cmn = cmn


def _decode(state: _State, pcm: bytes, cmn: str) -> list[dict[str, Any]]:
    from voiced.commands.transcribe import transcribe_pcm
    from voiced.const import BYTES_PER_SECOND

    heard = []
    for audio in endpoint(pcm, state.config.vad):
        _fresh_decoder(state.transcriber, cmn)
        line = transcribe_pcm(state.transcriber, state.recognizer, audio,
                              state.config.asr.min_confidence, state.context)
        if line["intent"] == _confirm_intent():
            line["intent"], line["slots"] = None, {}
        heard.append({"text": line["text"], "confidence": line["confidence"],
                      "intent": line["intent"], "slots": line["slots"],
                      "seconds": round(len(audio) / BYTES_PER_SECOND, 2)})
    return heard


def judge(sentence: Sentence, heard: Sequence[Mapping[str, Any]],
          min_confidence: float) -> str:
    """The outcome of one trial: for a command one of COMMAND_OUTCOMES, for everyday
    speech "accepted" (it became a command) or "rejected"."""
    commands = [(h["intent"], h["slots"]) for h in heard if h["intent"] is not None]
    if sentence.intent is None:
        return "accepted" if commands else "rejected"
    want = (sentence.intent, dict(sentence.slots))
    if any(c != want for c in commands):
        return "wrong"
    if commands:
        return "understood"
    if not heard:
        return "no_speech"
    if any(h["text"].strip() and h["confidence"] >= min_confidence for h in heard):
        return "no_intent"
    if any(h["text"].strip() for h in heard):
        return "low_confidence"
    return "empty"


def unit_task(unit: Unit) -> list[dict[str, Any]]:
    """Pool task: every trial of one voice in one condition."""
    assert _state is not None
    state = _state
    cache, seed = state.cache, state.seed
    priming = rendered_pcm(cache, seed, unit.voice, PRIMING_TEXT, unit.condition, unit.babble)
    _fresh_decoder(state.transcriber, state.initial_cmn)
    for audio in endpoint(priming, state.config.vad):
        state.transcriber.transcribe(audio)  # adapts the cepstral mean
    cmn = state.transcriber.cmn
    out = []
    for sentence in unit.sentences:
        pcm = rendered_pcm(cache, seed, unit.voice, sentence.text, unit.condition, unit.babble)
        heard = _decode(state, pcm, cmn)
        out.append({
            "voice": unit.voice.id, "family": unit.voice.family, "split": unit.split,
            "condition": unit.condition, "kind": sentence.kind, "text": sentence.text,
            "expected": None if sentence.intent is None else
            {"intent": sentence.intent, "slots": dict(sentence.slots)},
            "heard": heard,
            "outcome": judge(sentence, heard, state.config.asr.min_confidence),
        })
    return out
