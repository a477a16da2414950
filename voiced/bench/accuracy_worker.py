"""The worker side of `voiced bench accuracy`: speak, apply the condition, find the speech,
recognize it as the daemon does, and judge the result.

Each worker process loads the intent catalog and the configured pocketsphinx recognizer
once (`voiced transcribe`'s code path: `load_catalog`, `create_transcriber` in-process,
`transcribe_pcm` with `asr.min_confidence` and the intent context). Per utterance:

1. the speech is synthesized once per voice and text (cached);
2. the condition is applied (cached by text, voice and condition);
3. webrtcvad and the endpointing segmenter, with the `vad:` settings, cut the audio into
   utterances as a site worker does (an utterance still open when the audio ends is ended
   there, as by a session timeout); with `vad.endpoint: adaptive` a pocketsphinx stream is
   fed alongside, as the site worker feeds it, and judges at each `EndpointCheck` whether
   the command is complete (docs/endpoint.md);
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from voiced.bench import conditions as cond
from voiced.bench.corpus import PRIMING_TEXT, BenchVoice, Sentence
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH

if TYPE_CHECKING:
    from voiced.asr.base import AsrStream
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
    paused: bool = False
    """Commands are spoken with pauses inside them (`paused_speech`)."""


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


PAUSE_MS = (150, 600)
"""Shortest and longest pause put inside a command of the paused set."""


def pause_plan(seed: int, voice: BenchVoice, text: str) -> list[tuple[str, int]]:
    """Where `voice` pauses in `text` (the paused set): the text cut at 1 or 2 word
    boundaries chosen by the seed, each part with the pause after it in ms (0 after the
    last). One word: no pause."""
    words = text.split()
    key = f"pauses|{seed}|{voice.id}|{text}".encode()
    rng = np.random.default_rng(int(hashlib.sha256(key).hexdigest()[:16], 16))
    boundaries = len(words) - 1
    if boundaries < 1:
        return [(text, 0)]
    count = min(boundaries, int(rng.integers(1, 3)))
    cuts = sorted(int(c) + 1 for c in rng.choice(boundaries, size=count, replace=False))
    parts = []
    for start, end in zip([0, *cuts], [*cuts, len(words)], strict=True):
        pause = int(rng.integers(PAUSE_MS[0], PAUSE_MS[1] + 1)) if end < len(words) else 0
        parts.append((" ".join(words[start:end]), pause))
    return parts


def paused_speech(cache: Path, seed: int, voice: BenchVoice, text: str) -> np.ndarray:
    """`text` said by `voice` in parts (each synthesized alone, like `load_speech`), the
    silence each part was synthesized with trimmed inside the command and exactly the
    planned pause put between them."""
    plan = pause_plan(seed, voice, text)
    pieces = []
    for i, (part, pause) in enumerate(plan):
        audio = load_speech(cache, voice, part)
        start, end = cond.active_span(audio)
        pieces.append(audio[0 if i == 0 else start:len(audio) if pause == 0 else end])
        if pause:
            pieces.append(np.zeros(pause * SAMPLE_RATE // 1000))
    return np.concatenate(pieces)


def rendered_pcm(cache: Path, seed: int, voice: BenchVoice, text: str, condition: str,
                 babble: Sequence[tuple[BenchVoice, str]], paused: bool = False) -> bytes:
    """`text` by `voice` in `condition`, as internal-format audio (cached); `paused`:
    with pauses inside (`paused_speech`)."""
    from voiced.audio.wav import read_wav_file, write_wav_file

    parsed = cond.parse_condition(condition)
    others = [(v, t) for v, t in babble if v.voice.person != voice.voice.person] \
        if parsed.needs_talkers else []
    key = "|".join([str(cond.VERSION), str(seed), condition, voice.id, text,
                    *(f"{v.id}:{t}" for v, t in others), *(["paused"] if paused else [])])
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = cache / "mixed" / parsed.name / voice.id / f"{digest[:16]}.wav"
    if path.is_file():
        return read_wav_file(path)
    rng = np.random.default_rng(int(digest[16:32], 16))
    talkers = [load_speech(cache, v, t) for v, t in others]
    speech = paused_speech(cache, seed, voice, text) if paused else \
        load_speech(cache, voice, text)
    pcm = cond.render(parsed, speech, rng, talkers).pcm()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_wav_file(tmp, pcm)
    tmp.replace(path)
    return pcm


@dataclass(frozen=True, slots=True)
class Cut:
    """One utterance the endpointer cut."""

    audio: bytes
    end: int
    """Where it ended in the audio (bytes)."""
    reason: str
    """Its end reason (`silence`, `complete`, ...)."""


def endpoint(pcm: bytes, vad: VadConfig,
             stream: Callable[[], AsrStream] | None = None) -> list[Cut]:
    """The utterances a site worker would cut from `pcm` (`vad.engine` + segmenter).

    With adaptive endpointing and `stream` (a new recognizer stream per utterance), each
    utterance is fed to a stream as the site worker feeds it (trailing silence beyond
    FEED_SILENCE_MS held back) and the stream judges every `EndpointCheck`.
    """
    from voiced.const import VAD_FRAME_BYTES
    from voiced.models import EndReason
    from voiced.site_feeds import FEED_SILENCE_FRAMES
    from voiced.vad.detectors import new_detector
    from voiced.vad.segmenter import (
        EndpointCheck,
        Segmenter,
        SegmenterSettings,
        SpeechAudio,
        SpeechEnded,
        SpeechStarted,
    )

    detector = new_detector(vad)
    segmenter = Segmenter(SegmenterSettings.from_config(vad))
    adaptive = stream is not None and vad.endpoint == "adaptive"
    current: AsrStream | None = None
    held: list[bytes] = []
    silence = 0
    found = []
    end = 0
    for i in range(0, len(pcm) - VAD_FRAME_BYTES + 1, VAD_FRAME_BYTES):
        frame = pcm[i:i + VAD_FRAME_BYTES]
        end = i + VAD_FRAME_BYTES
        speech = detector.is_speech(frame)
        events = segmenter.process(frame, speech)
        while events:
            event = events.pop(0)
            if isinstance(event, SpeechStarted) and adaptive:
                assert stream is not None
                current, held, silence = stream(), [], 0
                current.feed(event.audio)
            elif isinstance(event, SpeechAudio) and current is not None:
                # as UtteranceFeeds.push (voiced.site_feeds)
                if speech:
                    current.feed(b"".join(held) + event.audio)
                    held, silence = [], 0
                else:
                    silence += 1
                    if silence > FEED_SILENCE_FRAMES:
                        held.append(event.audio)
                    else:
                        current.feed(event.audio)
            elif isinstance(event, EndpointCheck) and current is not None:
                after = vad.adaptive_silence_ms(current.completion())
                if after is not None:
                    events += segmenter.end_after(event.epoch, after)
            elif isinstance(event, SpeechEnded):
                found.append(Cut(event.audio, end, str(event.reason)))
                current = None
            elif not segmenter.in_speech:
                current = None
    for event in segmenter.stop(EndReason.TIMEOUT):
        if isinstance(event, SpeechEnded):
            found.append(Cut(event.audio, end, str(event.reason)))
    return found


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


def _judge_stream(state: _State, cmn: str) -> Callable[[], AsrStream]:
    """New streams for the adaptive endpoint's judgement, from the cepstral mean `cmn`
    (never finished: they leave the shared estimate as it was)."""
    def start() -> AsrStream:
        _fresh_decoder(state.transcriber, cmn)
        return state.transcriber.start_stream()
    return start


def _decode(state: _State, pcm: bytes, cmn: str) -> list[dict[str, Any]]:
    from voiced.commands.transcribe import transcribe_pcm
    from voiced.const import BYTES_PER_SECOND

    heard = []
    for cut in endpoint(pcm, state.config.vad, _judge_stream(state, cmn)):
        audio = cut.audio
        _fresh_decoder(state.transcriber, cmn)
        line = transcribe_pcm(state.transcriber, state.recognizer, audio,
                              state.config.asr.min_confidence, state.context)
        if line["intent"] == _confirm_intent():
            line["intent"], line["slots"] = None, {}
        heard.append({"text": line["text"], "confidence": line["confidence"],
                      "intent": line["intent"], "slots": line["slots"],
                      "seconds": round(len(audio) / BYTES_PER_SECOND, 2),
                      "end": cut.end, "reason": cut.reason})
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
    for cut in endpoint(priming, state.config.vad):
        state.transcriber.transcribe(cut.audio)  # adapts the cepstral mean
    cmn = state.transcriber.cmn
    out = []
    for sentence in unit.sentences:
        paused = unit.paused and sentence.intent is not None
        pcm = rendered_pcm(cache, seed, unit.voice, sentence.text, unit.condition, unit.babble,
                           paused)
        heard = _decode(state, pcm, cmn)
        speech_start = int(cond.LEAD_S * SAMPLE_RATE) * SAMPLE_WIDTH
        speech_end = len(pcm) - int(cond.TAIL_S * SAMPLE_RATE) * SAMPLE_WIDTH
        out.append({
            "voice": unit.voice.id, "family": unit.voice.family, "split": unit.split,
            "condition": unit.condition, "kind": sentence.kind, "text": sentence.text,
            "expected": None if sentence.intent is None else
            {"intent": sentence.intent, "slots": dict(sentence.slots)},
            "heard": heard,
            "outcome": judge(sentence, heard, state.config.asr.min_confidence),
            "paused": paused,
            # the endpoint cut the command short: an utterance ended before its last word
            "truncated": sentence.intent is not None and any(
                speech_start < h["end"] < speech_end for h in heard),
        })
    return out
