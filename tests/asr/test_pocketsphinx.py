"""Real pocketsphinx on the espeak-ng fixtures: grammar mode understands every command,
rejects the non-commands by confidence, streams, pools decoders, reloads, open mode."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import yaml

from voiced.asr.noise_floor import NoiseFloor
from voiced.asr.pocketsphinx import (
    RECOMMENDED_MIN_CONFIDENCE,
    PocketsphinxTranscriber,
    acoustic_confidence,
)
from voiced.asr.service import asr_intents
from voiced.config import AsrConfig
from voiced.const import SAMPLE_RATE, ms_to_bytes
from voiced.intents.recognizer import IntentRecognizer
from voiced.models import Transcript

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
MANIFEST = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
COMMANDS = MANIFEST["commands"]
OTHERS = MANIFEST["out_of_grammar"]


def pcm_of(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (SAMPLE_RATE, 2, 1)
        return w.readframes(w.getnframes())


@pytest.fixture(scope="module")
def recognizer() -> IntentRecognizer:
    # no fuzzy fallback: the decoded text itself must be the command
    return IntentRecognizer.load([REPO / "config" / "intents"], fuzzy=False)


@pytest.fixture(scope="module")
def asr(recognizer: IntentRecognizer) -> PocketsphinxTranscriber:
    transcriber = PocketsphinxTranscriber(AsrConfig(mode="grammar"), asr_intents(recognizer))
    transcriber.load()
    # a running server has heard speech before: adapt the cepstral mean on the demo
    # samples (not the fixtures under test), then start every test from that state
    for sample in sorted((REPO / "config" / "samples").glob("*.wav")):
        transcriber.transcribe(pcm_of(sample))
    return transcriber


@pytest.fixture()
def adapted(asr: PocketsphinxTranscriber) -> PocketsphinxTranscriber:
    if not hasattr(asr, "_adapted"):
        asr._adapted = asr.cmn  # type: ignore[attr-defined]
    asr.cmn = asr._adapted  # type: ignore[attr-defined]
    return asr


def stream(asr: PocketsphinxTranscriber, pcm: bytes, chunk: int) -> Transcript:
    s = asr.start_stream()
    for start in range(0, len(pcm), chunk):
        s.feed(pcm[start:start + chunk])
    return s.finish()


def test_grammar_has_every_example_word(asr: PocketsphinxTranscriber) -> None:
    assert asr.supports_streaming
    assert asr.missing_words == frozenset()
    assert asr.grammar is not None and asr.grammar.sentences >= 25


@pytest.mark.parametrize("entry", COMMANDS, ids=[e["file"] for e in COMMANDS])
def test_every_command_is_understood(adapted: PocketsphinxTranscriber,
                                     recognizer: IntentRecognizer, entry: dict) -> None:
    transcript = adapted.transcribe(pcm_of(FIXTURES / entry["file"]))
    result = recognizer.recognize(transcript.text, entry.get("context"))
    assert (result.name, result.slot_values()) == (entry["intent"], entry["slots"]), \
        f"said {entry['text']!r} ({entry['voice']}), heard {transcript.text!r}"
    assert RECOMMENDED_MIN_CONFIDENCE <= transcript.confidence <= 1.0, transcript
    assert transcript.tokens == tuple(transcript.text.split())


@pytest.mark.parametrize("entry", OTHERS, ids=[e["file"] for e in OTHERS])
def test_non_commands_are_rejected_by_confidence(adapted: PocketsphinxTranscriber,
                                                 recognizer: IntentRecognizer,
                                                 entry: dict) -> None:
    transcript = adapted.transcribe(pcm_of(FIXTURES / entry["file"]))
    # grammar mode forces speech into some sentence; the confidence must give it away
    assert transcript.confidence < RECOMMENDED_MIN_CONFIDENCE, transcript
    accepted = (transcript.confidence >= RECOMMENDED_MIN_CONFIDENCE
                and recognizer.recognize(transcript.text, {"speaker": "alice"}).recognized)
    assert not accepted


def test_confidence_mapping() -> None:
    assert acoustic_confidence(-60.0 * 100, 100) == pytest.approx(0.5)
    assert acoustic_confidence(-30.0 * 100, 100) > 0.97
    assert acoustic_confidence(-100.0 * 100, 100) < 0.01
    assert acoustic_confidence(-1e9, 1) < 1e-12
    assert acoustic_confidence(0.0, 0) == 0.0
    assert acoustic_confidence(float("-inf"), 10) == 0.0


def test_silence_and_nothing_give_empty_text(adapted: PocketsphinxTranscriber) -> None:
    noise = np.random.default_rng(1).normal(0, 300, SAMPLE_RATE).astype("<i2").tobytes()
    for pcm in (b"", bytes(SAMPLE_RATE * 2), noise):
        assert adapted.transcribe(pcm) == Transcript("", 0.0, "en")


@pytest.mark.parametrize("chunk", [ms_to_bytes(20), 333])
def test_streaming_in_chunks_matches_whole_decoding(adapted: PocketsphinxTranscriber,
                                                    chunk: int) -> None:
    for entry in COMMANDS[::6]:
        pcm = pcm_of(FIXTURES / entry["file"])
        cmn = adapted.cmn
        whole = adapted.transcribe(pcm)
        adapted.cmn = cmn
        streamed = stream(adapted, pcm, chunk)
        adapted.cmn = cmn
        assert streamed.text == whole.text == entry["text"]
        assert streamed.confidence == pytest.approx(whole.confidence, abs=0.02)


def test_concurrent_streams_have_their_own_decoders(adapted: PocketsphinxTranscriber) -> None:
    entries = COMMANDS[:3]
    pcms = [pcm_of(FIXTURES / e["file"]) for e in entries]
    streams = [adapted.start_stream() for _ in pcms]
    assert len({id(s._decoder) for s in streams}) == len(streams)  # type: ignore[attr-defined]
    step = ms_to_bytes(20)
    for start in range(0, max(map(len, pcms)), step):  # interleaved, like three satellites
        for s, pcm in zip(streams, pcms, strict=True):
            if start < len(pcm):
                s.feed(pcm[start:start + step])
    texts = [s.finish().text for s in streams]
    assert texts == [e["text"] for e in entries]
    # finished decoders go back to the pool and are reused
    before = len(adapted._pool)  # type: ignore[attr-defined]
    adapted.transcribe(pcms[0])
    assert len(adapted._pool) == before  # type: ignore[attr-defined]


def test_finished_stream_refuses_more_audio(adapted: PocketsphinxTranscriber) -> None:
    from voiced.errors import AsrError

    s = adapted.start_stream()
    s.feed(bytes(640))
    s.finish()
    with pytest.raises(AsrError):
        s.feed(bytes(640))
    with pytest.raises(AsrError):
        s.finish()


def test_noise_floor_does_not_depend_on_chunking() -> None:
    floor = NoiseFloor()
    samples = np.zeros(SAMPLE_RATE + 500, dtype="<i2")
    whole = floor.add(samples, 0, -60.0)
    parts = floor.add(samples[:777], 0, -60.0) + floor.add(samples[777:], 777, -60.0)
    assert whole == parts
    rms = float(np.sqrt(np.mean(np.frombuffer(whole, "<i2").astype(float) ** 2)))
    assert 25 < rms < 40  # -60 dBFS is ~33 LSB


def test_reload_rebuilds_the_grammar(tmp_path: Path) -> None:
    (tmp_path / "small.yaml").write_text(
        "language: en\nintents:\n  PlayMusic:\n    data:\n      - sentences:\n"
        "          - \"play my music\"\n          - \"play the zyzzyva\"\n", encoding="utf-8")
    first = IntentRecognizer.load([REPO / "config" / "intents"], fuzzy=False)
    asr = PocketsphinxTranscriber(AsrConfig(), asr_intents(first))
    asr.load()
    music = pcm_of(FIXTURES / "commands/music.wav")
    kitchen = pcm_of(FIXTURES / "commands/on_kitchen.wav")
    stream_before = asr.start_stream()
    asr.reload(asr_intents(IntentRecognizer.load([tmp_path], fuzzy=False)))
    assert asr.missing_words == {"zyzzyva"}
    assert asr.grammar is not None and asr.grammar.sentences == 1
    assert asr.transcribe(music).text == "play my music"
    # the kitchen command is no longer in the grammar: forced, and not confident
    forced = asr.transcribe(kitchen)
    assert forced.text in ("", "play my music")
    assert forced.confidence < RECOMMENDED_MIN_CONFIDENCE
    # a stream started before the reload finishes on its old grammar ("kitchen" is gone
    # from the new one)
    stream_before.feed(kitchen)
    assert "kitchen" in stream_before.finish().text.split()


def test_open_mode_produces_text(recognizer: IntentRecognizer) -> None:
    asr = PocketsphinxTranscriber(AsrConfig(mode="open"), None)
    asr.load()
    assert asr.grammar is None
    transcript = asr.transcribe(pcm_of(FIXTURES / "commands/on_kitchen.wav"))
    assert transcript.text and 0.0 <= transcript.confidence <= 1.0
    assert all(w.isalpha() or "'" in w for w in transcript.text.split())


def test_an_early_end_needs_a_confident_hypothesis(recognizer: IntentRecognizer) -> None:
    """`asr.early_end_confidence`: a whole command whose partial fits the audio less well
    than the floor is UNSURE (it waits the usual silence); at 0 it is COMPLETE."""
    pcm = pcm_of(FIXTURES / "commands" / "on_kitchen.wav")
    judged = {}
    for floor in (0.0, 0.5, 0.999):
        asr = PocketsphinxTranscriber(AsrConfig(early_end_confidence=floor),
                                      asr_intents(recognizer))
        asr.load()
        stream = asr.start_stream()
        stream.feed(pcm)
        stream.hurry()
        judged[floor] = str(stream.completion())
        decoder = stream._decoder  # type: ignore[attr-defined]
        confidence = asr.path_confidence(decoder)
        transcript = stream.finish()
        # the partial's confidence is the one the final transcript reports
        assert abs(confidence - transcript.confidence) < 0.02, (confidence, transcript)
        assert 0.5 < confidence < 0.999
    assert judged == {0.0: "complete", 0.5: "complete", 0.999: "unsure"}
