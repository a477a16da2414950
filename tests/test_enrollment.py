"""Enrollment by voice with the real resemblyzer service and real flite voices."""

from __future__ import annotations

from pathlib import Path

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.enrollment import VoiceEnrollment
from voiced.inference import InferenceEngine
from voiced.models import NO_SPEAKER, SpeakerMatch
from voiced.speakers import voices
from voiced.speakers.service import create_speaker_service


async def test_voice_enrollment_rules_and_result(tmp_path: Path) -> None:
    engine = InferenceEngine(1)
    service = create_speaker_service(SpeakersConfig(backend="resemblyzer"), tmp_path, engine)
    assert service is not None
    await engine.run(service.load)
    enroll_wavs, test_wavs = voices.enrollment_and_test(voices.ALL_VOICES["flite-awb"],
                                                        tmp_path / "wavs", 3, 1)
    try:
        closed = VoiceEnrollment(service, allow_new=False)
        assert closed.start("hall", "alice", NO_SPEAKER).outcome == "refused"
        assert not closed.active("hall")

        flow = VoiceEnrollment(service, allow_new=True, samples=3)
        turn = flow.start("hall", "alice", NO_SPEAKER)
        assert turn.more and "Please say" in turn.text and flow.active("hall")
        for i, wav in enumerate(enroll_wavs):
            turn = await flow.add("hall", read_wav_file(wav))
            assert turn.more == (i < 2), turn
        assert turn.outcome == "enrolled", turn.text
        assert not flow.active("hall")
        match = await service.identify(read_wav_file(test_wavs[0]))
        assert match.name == "alice"

        # alice exists now: only alice may add to her voice
        refused = flow.start("hall", "alice", SpeakerMatch("bob", 0.9))
        assert refused.outcome == "refused" and "Only alice" in refused.text
        assert flow.start("hall", "alice", SpeakerMatch("alice", 0.9)).more
        # a too-short sample is refused with a reason to say
        for _ in range(2):
            await flow.add("hall", read_wav_file(enroll_wavs[0]))
        bad = await flow.add("hall", bytes(3200))
        assert bad.outcome == "error" and "could not learn" in bad.text
    finally:
        await service.close()
        engine.close()
