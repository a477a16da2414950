"""Adaptive endpointing (`vad.endpoint: adaptive`) through a real site worker.

Real parts: webrtcvad, the segmenter, pocketsphinx in worker processes (as the daemon
runs it) with the grammar of config/intents/, espeak-ng speech. Audio is queued faster
than real time; the endpoint does not depend on the clock (the completeness check is
awaited where the silence reached `vad.min_silence_ms`), so the results are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FakeStream, FakeTranscriber, RecordingSubscriber

from voiced.asr.base import Completion, Transcriber
from voiced.asr.service import AsrService, asr_intents
from voiced.asr.workers import PooledTranscriber
from voiced.audio.wav import read_wav_file
from voiced.config import AsrConfig, SiteMode, VadConfig
from voiced.const import BYTES_PER_SECOND, SAMPLE_RATE, ms_to_bytes
from voiced.events import EventSink
from voiced.inference import InferenceEngine
from voiced.intents.recognizer import IntentRecognizer
from voiced.models import EventType, Transcript, Utterance
from voiced.sessions import SiteWorker
from voiced.site_inbox import Audio
from voiced.speakers.voices import Voice, synthesize
from voiced.transport.native import INTERNAL_FORMAT

REPO = Path(__file__).resolve().parents[2]
COMMANDS = REPO / "tests" / "fixtures" / "commands"
VOICE = Voice("espeak-en-us", "espeak", "en-us", "espeak-en-us")


@pytest.fixture(scope="module")
def transcriber() -> Iterator[PooledTranscriber]:
    recognizer = IntentRecognizer.load([REPO / "config" / "intents"], fuzzy=False)
    pooled = PooledTranscriber(AsrConfig(mode="grammar"), asr_intents(recognizer), 2)
    pooled.load()
    yield pooled
    pooled.close()


def silence(ms: int) -> bytes:
    return bytes(ms_to_bytes(ms))


def spoken(text: str, folder: Path) -> np.ndarray:
    """`text` by espeak-ng, without the silence it was synthesized with."""
    pcm = read_wav_file(synthesize(VOICE, text, folder / f"{abs(hash(text))}.wav"))
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return samples[loud[0]:loud[-1] + 1]


def with_pause(first: str, pause_ms: int, second: str, folder: Path) -> bytes:
    """`first`, a pause of exactly `pause_ms` ms, `second`: said in two parts."""
    gap = np.zeros(pause_ms * SAMPLE_RATE // 1000, dtype="<i2")
    return np.concatenate([spoken(first, folder), gap, spoken(second, folder)]).tobytes()


async def run_site(transcriber: Transcriber, endpoint: str,
                   pcm: bytes) -> tuple[list[tuple[Utterance, str]], RecordingSubscriber]:
    """Queue 0.5 s of silence, `pcm` and 1.5 s of silence to one site in 20 ms chunks;
    the utterances it cut with their transcripts, and the events."""
    engine = InferenceEngine(2)
    sink = EventSink()
    recorder = RecordingSubscriber()
    sink.subscribe(recorder)
    heard: list[tuple[Utterance, str]] = []

    async def on_utterance(utt: Utterance, decode: Any, speaker: Any) -> None:
        transcript = await decode.conclude()
        heard.append((utt, transcript.text))

    vad = VadConfig(endpoint=endpoint)  # type: ignore[arg-type]
    worker = SiteWorker("den", SiteMode.ALWAYS, vad, 500, engine,
                        AsrService(transcriber, engine), sink, on_utterance)
    task = asyncio.create_task(worker.run())
    audio = silence(500) + pcm + silence(1500)
    step = BYTES_PER_SECOND // 50
    try:
        for i in range(0, len(audio), step):
            # made as it is queued: audio stamped long before would be shed as stale
            await worker.queue.put(Audio(audio[i:i + step], INTERNAL_FORMAT, False))
        worker.request_shutdown()
        await asyncio.wait_for(task, 60)
    finally:
        task.cancel()
        engine.close()
    assert worker.crashes == 0
    return heard, recorder


def ended(recorder: RecordingSubscriber) -> list[dict[str, Any]]:
    return [dict(e.data) for e in recorder.of(EventType.SPEECH_ENDED)]


async def test_a_complete_command_ends_sooner_than_the_fixed_silence(
        transcriber: PooledTranscriber) -> None:
    pcm = read_wav_file(COMMANDS / "on_kitchen.wav")
    fixed, fixed_events = await run_site(transcriber, "fixed", pcm)
    adaptive, adaptive_events = await run_site(transcriber, "adaptive", pcm)
    assert [text for _, text in fixed] == ["turn on the kitchen lights"]
    assert [text for _, text in adaptive] == ["turn on the kitchen lights"]
    (fixed_end,), (adaptive_end,) = ended(fixed_events), ended(adaptive_events)
    assert fixed_end["reason"] == "silence" and fixed_end["silenceMs"] == 500
    assert adaptive_end["reason"] == "complete" and adaptive_end["judged"] == "complete"
    assert adaptive_end["silenceMs"] == VadConfig().min_silence_ms
    assert "judged" not in fixed_end
    # the same speech, 300 ms less waiting: the utterance is that much shorter
    cut = len(fixed[0][0].pcm) - len(adaptive[0][0].pcm)
    assert cut == ms_to_bytes(500 - VadConfig().min_silence_ms)
    assert str(adaptive[0][0].end_reason) == "complete"


async def test_a_pause_after_a_prefix_does_not_cut_the_command(
        transcriber: PooledTranscriber, tmp_path: Path) -> None:
    # "set the bedroom lights to" is the start of a sentence, not one: the silence after
    # it may last `vad.max_silence_ms`, and the rest of the command joins the same
    # utterance; the fixed endpoint cuts it after 500 ms
    pcm = with_pause("set the bedroom lights to", 700, "fifty percent", tmp_path)
    heard, events = await run_site(transcriber, "adaptive", pcm)
    assert [text for _, text in heard] == ["set the bedroom lights to fifty percent"]
    assert [e["reason"] for e in ended(events)] == ["complete"]
    fixed, fixed_events = await run_site(transcriber, "fixed", pcm)
    assert len(fixed) == 2
    assert [e["reason"] for e in ended(fixed_events)] == ["silence", "silence"]


async def test_a_pause_inside_a_number_does_not_cut_the_command(
        transcriber: PooledTranscriber, tmp_path: Path) -> None:
    # "... to seventy" can go on ("seventy five"), and a sentence needs "percent" anyway
    pcm = with_pause("set the living room lights to seventy", 400, "five percent", tmp_path)
    heard, events = await run_site(transcriber, "adaptive", pcm)
    assert [text for _, text in heard] == ["set the living room lights to seventy five percent"]
    assert len(ended(events)) == 1


async def test_two_complete_commands_with_a_pause_are_two_utterances(
        transcriber: PooledTranscriber, tmp_path: Path) -> None:
    # the other side: a whole command is answered after the short silence, even when
    # the person goes on talking 400 ms later (the fixed endpoint would merge them)
    pcm = with_pause("lock the front door", 400, "turn off the office lights", tmp_path)
    adaptive, events = await run_site(transcriber, "adaptive", pcm)
    assert [text for _, text in adaptive] == ["lock the front door",
                                              "turn off the office lights"]
    assert [e["reason"] for e in ended(events)] == ["complete", "complete"]
    fixed, _ = await run_site(transcriber, "fixed", pcm)
    assert len(fixed) == 1


def test_streams_judge_the_hypothesis_of_all_audio_fed(transcriber: PooledTranscriber,
                                                       tmp_path: Path) -> None:
    whole = read_wav_file(COMMANDS / "set_bedroom_50.wav")
    stream = transcriber.start_stream()
    assert stream.completion() is None  # nothing fed yet
    stream.feed(whole + silence(200))
    assert stream.completion() == Completion.COMPLETE
    stream.close()
    prefix = spoken("set the bedroom lights to", tmp_path).tobytes()
    stream = transcriber.start_stream()
    stream.feed(silence(300) + prefix + silence(200))
    assert stream.completion() == Completion.PREFIX
    stream.close()


class _BrokenJudge(FakeStream):
    def completion(self) -> Completion | None:
        raise RuntimeError("the judge broke")


class _BrokenJudgeTranscriber(FakeTranscriber):
    def start_stream(self) -> FakeStream:
        stream = _BrokenJudge(self)
        with self._lock:
            self.streams.append(stream)
            self.open_streams += 1
        return stream


async def test_a_failing_judgement_leaves_the_end_to_the_silence() -> None:
    asr = _BrokenJudgeTranscriber(Transcript("lock the front door", 0.9))
    heard, events = await run_site(asr, "adaptive", read_wav_file(COMMANDS / "lock_front.wav"))
    assert [text for _, text in heard] == ["lock the front door"]
    assert [(e["reason"], e["silenceMs"]) for e in ended(events)] == [("silence", 500)]
