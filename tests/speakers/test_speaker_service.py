"""SpeakerService as the daemon uses it: the inference engine, micro-batching, enrollment by
voice, live reload of the store, and bounded, reversible adaptation (real resemblyzer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.inference import InferenceEngine
from voiced.models import UNKNOWN_SPEAKER
from voiced.speakers.resemblyzer import ResemblyzerEmbedder
from voiced.speakers.service import ServiceOptions, SpeakerService, create_speaker_service
from voiced.speakers.store import SpeakerStore

Wavs = Callable[..., tuple[list[Path], list[Path]]]


def pcms(paths: list[Path]) -> list[bytes]:
    return [read_wav_file(p) for p in paths]


@pytest.fixture
async def service(
    make_service: Callable[[ServiceOptions], Awaitable[SpeakerService]],
) -> SpeakerService:
    return await make_service(ServiceOptions(adapt=True, adapt_keep=2, batch_window_ms=50))


def test_factory_follows_the_backend(tmp_path: Path) -> None:
    engine = InferenceEngine(workers=1)
    try:
        assert create_speaker_service(SpeakersConfig(), tmp_path, engine) is None
        svc = create_speaker_service(SpeakersConfig(backend="resemblyzer"), tmp_path, engine)
        assert isinstance(svc, SpeakerService)
        assert isinstance(svc.embedder, ResemblyzerEmbedder)
        assert (tmp_path / "speakers.db").is_file()
        svc.store.close()
    finally:
        engine.close()


async def test_enroll_identify_batch_reload_and_adapt(
    service: SpeakerService, make_wavs: Wavs, tmp_path: Path
) -> None:
    awb_enroll, awb_test = make_wavs("flite-awb", n_enroll=3)
    rms_enroll, rms_test = make_wavs("flite-rms", n_enroll=3)
    slt_enroll, slt_test = make_wavs("flite-slt", n_enroll=3)

    assert (await service.identify(read_wav_file(awb_test[0]))).name == UNKNOWN_SPEAKER

    for name, files in (("awb", awb_enroll), ("rms", rms_enroll)):
        result = await service.enroll(name, pcms(files), source="satellite:kitchen")
        assert result.ok and result.total == 3

    # three satellites finish speaking together: one batch, three answers
    utterances = [awb_test[0], rms_test[0], slt_test[0]]
    matches = await asyncio.gather(*(service.identify(read_wav_file(f)) for f in utterances))
    assert [m.name for m in matches] == ["awb", "rms", UNKNOWN_SPEAKER]
    assert service._batcher is not None and service._batcher.history[-1].size == 3

    # the command line enrolls slt while the daemon runs: the next utterance knows her
    with SpeakerStore.open(tmp_path) as cli_store:
        vectors = service.embedder.embed_batch(pcms(slt_enroll))
        cli_store.add_enrollment("slt", service.model_id, vectors)
    assert (await service.identify(read_wav_file(slt_test[0]))).name == "slt"

    # adaptation kept at most 2 vectors per person, and is undone on request
    for f in awb_test:
        assert (await service.identify(read_wav_file(f))).name == "awb"
    awb = next(p for p in service.store.people(service.model_id) if p.name == "awb")
    assert service.adapted >= 1
    assert 1 <= awb.adapted <= 2
    assert service.store.clear_adapted("awb") == awb.adapted
    assert (await service.identify(read_wav_file(awb_test[0]))).name == "awb"


async def test_enrollment_by_voice_refuses_bad_recordings(
    service: SpeakerService, make_wavs: Wavs
) -> None:
    files, _ = make_wavs("flite-awb", n_enroll=3)
    good = pcms(files)
    too_short = good[0][: len(good[0]) // 6]
    result = await service.enroll("awb", [*good[:2], too_short])
    assert not result.ok
    assert [i for i, _ in result.refused()] == [2]
    assert result.refused()[0][1].problems[0].code == "too_little_speech"
    assert service.store.people(service.model_id) == []  # all or nothing
