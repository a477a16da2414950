"""What an utterance's result may depend on: its audio and its own site's history, never
what another site said before on a pooled decoder; the level-relative noise floor."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from voiced.asr.noise_floor import FLOOR_BELOW_DB, FLOOR_MIN_DBFS, FLOOR_WINDOW_MS, LevelFloor
from voiced.asr.pocketsphinx import INITIAL_CMN, PocketsphinxTranscriber
from voiced.asr.service import asr_intents
from voiced.config import AsrConfig
from voiced.const import SAMPLE_RATE
from voiced.intents.recognizer import IntentRecognizer
from voiced.models import Transcript

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def samples(name: str) -> np.ndarray:
    with wave.open(str(FIXTURES / name)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def noisy(name: str, seed: int, snr_db: float = 10.0) -> bytes:
    """A fixture in loud noise that changes over time (a room, not a test tone)."""
    speech = samples(name)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, len(speech)) * np.linspace(0.3, 1.7, len(speech))
    speech_rms = np.sqrt(np.mean(speech ** 2))
    noise *= speech_rms / np.sqrt(np.mean(noise ** 2)) * 10 ** (-snr_db / 20)
    return np.clip(speech + noise, -32768, 32767).astype("<i2").tobytes()


@pytest.fixture(scope="module")
def intents() -> IntentRecognizer:
    return IntentRecognizer.load([REPO / "config" / "intents"], fuzzy=False)


def fresh(intents: IntentRecognizer) -> PocketsphinxTranscriber:
    transcriber = PocketsphinxTranscriber(AsrConfig(processes=1), asr_intents(intents))
    transcriber.load()
    return transcriber


def decode(transcriber: PocketsphinxTranscriber, site: str | None, pcm: bytes) -> Transcript:
    stream = transcriber.start_stream_for(site)
    stream.feed(pcm)
    return stream.finish()


def test_a_site_never_hears_what_another_site_decoded_before(
        intents: IntentRecognizer) -> None:
    probes = [noisy("commands/lock_front.wav", 1), noisy("commands/timer_10m.wav", 2),
              noisy("commands/on_kitchen.wav", 3)]
    others = [noisy(f"out_of_grammar/{p.name}", 10 + i, snr_db=0.0)
              for i, p in enumerate(sorted((FIXTURES / "out_of_grammar").glob("*.wav")))]
    # site a alone, each probe on a decoder of its own
    alone = []
    for pcm in probes:
        transcriber = fresh(intents)
        alone.append(decode(transcriber, "a", pcm))
    # the same, but on one transcriber whose single pooled decoder first decodes loud
    # noise and other speech for site b before every probe of site a
    shared = fresh(intents)
    mixed = []
    for pcm in probes:
        for other in others:
            decode(shared, "b", other)
        shared.sites.pop("a", None)  # site a starts from scratch each time, as `alone`
        mixed.append(decode(shared, "a", pcm))
        assert len(shared._pool) == 1
    assert [(t.text, t.confidence) for t in mixed] == [(t.text, t.confidence) for t in alone]


def test_each_site_adapts_its_own_cepstral_mean(intents: IntentRecognizer) -> None:
    transcriber = fresh(intents)
    assert transcriber.cmn == INITIAL_CMN
    probe = noisy("commands/unlock_back.wav", 4)
    before = decode(transcriber, "kitchen", probe)
    transcriber.sites.pop("kitchen")
    for pcm in (noisy(f"out_of_grammar/{p.name}", 20 + i, snr_db=5.0)
                for i, p in enumerate(sorted((FIXTURES / "out_of_grammar").glob("*.wav")))):
        decode(transcriber, "garage", pcm)
    # the garage adapted to its noise; the kitchen and audio of no site did not move
    assert transcriber.sites["garage"] != INITIAL_CMN
    assert "kitchen" not in transcriber.sites and transcriber.cmn == INITIAL_CMN
    again = decode(transcriber, "kitchen", probe)
    assert (again.text, again.confidence) == (before.text, before.confidence)
    # and the kitchen's next utterance starts from what its last one left
    assert transcriber.site_cmn("kitchen") == transcriber.sites["kitchen"] != INITIAL_CMN


def test_short_utterances_leave_the_estimate_alone(intents: IntentRecognizer) -> None:
    transcriber = fresh(intents)
    decode(transcriber, "hall", bytes(SAMPLE_RATE // 4 * 2))  # 0.25 s
    assert "hall" not in transcriber.sites


def test_sites_kept_are_bounded(intents: IntentRecognizer,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    import voiced.asr.pocketsphinx as ps

    monkeypatch.setattr(ps, "MAX_SITES", 3)
    transcriber = fresh(intents)
    for i in range(5):
        transcriber.set_site_cmn(f"s{i}", INITIAL_CMN)
    transcriber.set_site_cmn("s2", INITIAL_CMN)  # heard again: kept longest
    assert list(transcriber.sites) == ["s3", "s4", "s2"]


@pytest.mark.parametrize("chunk", [1, 320, 333, 6400, 10 ** 6])
def test_floor_does_not_depend_on_chunking(chunk: int) -> None:
    audio = np.frombuffer(noisy("commands/music.wav", 5), dtype="<i2")
    whole = LevelFloor()
    expected = whole.push(audio) + whole.flush()
    floor = LevelFloor()
    parts = b"".join(floor.push(audio[i:i + chunk]) for i in range(0, len(audio), chunk))
    assert parts + floor.flush() == expected
    assert len(expected) == len(audio) * 2


@pytest.mark.parametrize("gain_db", [0.0, -25.0, -50.0])
def test_floor_follows_the_speech_level(gain_db: float) -> None:
    speech = samples("commands/music.wav")
    speech = speech / np.abs(speech).max() * 16384 * 10 ** (gain_db / 20)
    lead = SAMPLE_RATE // 5  # 200 ms of digital silence, as a satellite's pre-roll might be
    pcm = np.concatenate([np.zeros(lead), speech]).astype("<i2")
    floor = LevelFloor()
    out = np.frombuffer(floor.push(pcm) + floor.flush(), dtype="<i2").astype(np.float64)
    added = out - pcm
    window = pcm[: SAMPLE_RATE * FLOOR_WINDOW_MS // 1000].astype(np.float64).reshape(-1, 320)
    peak = 20 * np.log10(np.sqrt((window ** 2).mean(axis=1)).max() / 32768)
    want = max(FLOOR_MIN_DBFS, peak - FLOOR_BELOW_DB)
    for part in (added[:lead], added[-SAMPLE_RATE // 2:]):  # one level throughout
        got = 20 * np.log10(np.sqrt(np.mean(part ** 2)) / 32768)
        assert got == pytest.approx(want, abs=1.5)
    # digital silence always gets some noise
    assert np.count_nonzero(out[:lead]) > lead // 2


def test_the_grammars_files_go_with_the_recognizer(intents: IntentRecognizer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process and in worker processes, a recognizer's grammar folder is removed when
    it closes: worker processes end with os._exit, which runs no finalizer, and each used
    to leave its `voiced-ps-*` folder behind in /tmp."""
    import tempfile

    from voiced.asr.workers import PooledTranscriber

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again, here too
    single = PocketsphinxTranscriber(AsrConfig(), asr_intents(intents))
    single.load()
    pool = PooledTranscriber(AsrConfig(), asr_intents(intents), processes=2)
    pool.load()
    folders = sorted(p.name for p in tmp_path.glob("voiced-ps-*"))
    assert len(folders) == 3, folders  # this process's and each worker's
    single.close()
    pool.close()
    assert sorted(p.name for p in tmp_path.glob("voiced-ps-*")) == []
