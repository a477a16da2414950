"""Enrollment by voice with the real resemblyzer service and real flite voices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.enrollment import VoiceEnrollment
from voiced.inference import InferenceEngine
from voiced.models import NO_SPEAKER, SpeakerMatch
from voiced.speakers import voices
from voiced.speakers.service import create_speaker_service


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Any]:
    """The real resemblyzer speaker service, loaded, with its own state folder."""
    engine = InferenceEngine(1)
    speakers = create_speaker_service(SpeakersConfig(backend="resemblyzer"),
                                      tmp_path / "state", engine)
    assert speakers is not None
    await engine.run(speakers.load)
    try:
        yield speakers
    finally:
        await speakers.close()
        engine.close()


async def test_voice_enrollment_rules_and_result(service: Any, tmp_path: Path) -> None:
    enroll_wavs, test_wavs = voices.enrollment_and_test(voices.ALL_VOICES["flite-awb"],
                                                        tmp_path / "wavs", 3, 1)
    trigger = read_wav_file(test_wavs[0])  # "learn my voice as alice", in her voice
    closed = VoiceEnrollment(service, allow_new=False)
    assert closed.start("hall", "alice", NO_SPEAKER, trigger).outcome == "refused"
    assert not closed.active("hall")

    flow = VoiceEnrollment(service, allow_new=True, samples=3)
    assert flow.start("hall", "alice", NO_SPEAKER).outcome == "refused"  # no audio
    turn = flow.start("hall", "alice", NO_SPEAKER, trigger)
    assert turn.more and "Please say" in turn.text and flow.active("hall")
    for i, wav in enumerate(enroll_wavs):
        turn = await flow.add("hall", read_wav_file(wav))
        assert turn.more == (i < 2), turn
    assert turn.outcome == "enrolled", turn.text
    assert not flow.active("hall")
    match = await service.identify(read_wav_file(test_wavs[0]))
    assert match.name == "alice"

    # alice exists now: only alice may add to her voice
    refused = flow.start("hall", "alice", SpeakerMatch("bob", 0.9), trigger)
    assert refused.outcome == "refused" and "Only alice" in refused.text
    assert flow.start("hall", "alice", SpeakerMatch("alice", 0.9), trigger).more
    # a sample that is not her voice (here: silence) ends it, nothing stored
    for _ in range(2):
        await flow.add("hall", read_wav_file(enroll_wavs[0]))
    bad = await flow.add("hall", bytes(3200))
    assert bad.outcome == "refused" and "stored nothing" in bad.text


async def test_a_stranger_cannot_speak_someone_elses_samples(service: Any,
                                                              tmp_path: Path) -> None:
    """Alice asks to add to her voice; someone else speaks the follow-up sentences. Each
    sample is verified: the first stranger's sample ends it and nothing is stored."""
    alice_wavs, alice_tests = voices.enrollment_and_test(voices.ALL_VOICES["flite-awb"],
                                                         tmp_path / "alice", 3, 2)
    stranger_wavs, stranger_tests = voices.enrollment_and_test(
        voices.ALL_VOICES["festival-ked"], tmp_path / "stranger", 3, 1)
    result = await service.enroll("alice", [read_wav_file(w) for w in alice_wavs])
    assert result.ok
    before = {p.name: p.enrolled for p in service.store.people(service.model_id)}
    trigger = read_wav_file(alice_tests[0])
    speaker = await service.verify(trigger)
    assert speaker.name == "alice"
    flow = VoiceEnrollment(service, allow_new=False)
    assert flow.start("hall", "alice", speaker, trigger).more
    turn = await flow.add("hall", read_wav_file(stranger_wavs[0]))
    assert turn.outcome == "refused" and "stored nothing" in turn.text
    assert not flow.active("hall")
    after = {p.name: p.enrolled for p in service.store.people(service.model_id)}
    assert after == before
    assert (await service.verify(read_wav_file(stranger_tests[0]))).name != "alice"
    # alice herself: accepted, sample by sample
    assert flow.start("hall", "alice", speaker, trigger).more
    for wav in [alice_tests[1], *alice_wavs[:2]]:
        turn = await flow.add("hall", read_wav_file(wav))
    assert turn.outcome == "enrolled", turn.text
    # adding by voice can be turned off
    off = VoiceEnrollment(service, allow_new=False, allow_add=False)
    assert off.start("hall", "alice", speaker, trigger).outcome == "refused"


async def test_a_new_voice_must_stay_the_same_voice(service: Any, tmp_path: Path) -> None:
    """New people by voice (when turned on): the samples must be the voice that asked;
    a known voice cannot become a second person; off by default."""
    carol, carol_tests = voices.enrollment_and_test(voices.ALL_VOICES["flite-slt"],
                                                    tmp_path / "carol", 3, 1)
    other, _ = voices.enrollment_and_test(voices.ALL_VOICES["flite-rms"], tmp_path / "other",
                                          1, 0)
    trigger = read_wav_file(carol_tests[0])
    assert VoiceEnrollment(service, allow_new=False).start(
        "hall", "carol", NO_SPEAKER, trigger).outcome == "refused"
    flow = VoiceEnrollment(service, allow_new=True)
    assert flow.start("hall", "carol", NO_SPEAKER, trigger).more
    turn = await flow.add("hall", read_wav_file(other[0]))
    assert turn.outcome == "refused"
    assert service.store.people(service.model_id) == []
    assert flow.start("hall", "carol", NO_SPEAKER, trigger).more
    for wav in carol:
        turn = await flow.add("hall", read_wav_file(wav))
    assert turn.outcome == "enrolled", turn.text
    # carol is known now: her voice cannot also enroll as "dave"
    known = await service.verify(trigger)
    assert known.name == "carol"
    again = flow.start("hall", "dave", known, trigger)
    assert again.outcome == "refused" and "already know" in again.text
