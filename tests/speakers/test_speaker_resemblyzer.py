"""Real resemblyzer on real-speaker voices: enrolled people are identified, strangers are not.

Enrolled: awb, rms, slt (flite) and ked (festival), 5 sentences each. Strangers: Kal (never
enrolled, in both of his voices, flite kal16 and festival kal) and an espeak-ng voice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from voiced.audio.wav import read_wav_file
from voiced.config import SpeakersConfig
from voiced.models import UNKNOWN_SPEAKER
from voiced.speakers.enrollment import enroll
from voiced.speakers.matching import calibrate
from voiced.speakers.resemblyzer import ResemblyzerEmbedder
from voiced.speakers.service import SpeakerService
from voiced.speakers.store import SpeakerStore

ENROLLED = {"awb": "flite-awb", "rms": "flite-rms", "slt": "flite-slt", "ked": "festival-ked"}
STRANGERS = ("flite-kal16", "festival-kal", "espeak-en-us+m3")

Wavs = Callable[..., tuple[list[Path], list[Path]]]


@pytest.fixture(scope="module")
def household(
    tmp_path_factory: pytest.TempPathFactory,
    resemblyzer_embedder: ResemblyzerEmbedder,
    make_wavs: Wavs,
) -> SpeakerService:
    """Four people enrolled with real resemblyzer, threshold calibrated from their samples."""
    state = tmp_path_factory.mktemp("household")
    store = SpeakerStore.open(state)
    for name, voice in ENROLLED.items():
        files, _ = make_wavs(voice)
        result = enroll(resemblyzer_embedder, store, name, [read_wav_file(f) for f in files])
        assert result.ok, [r.describe() for r in result.reports]
        assert result.total == 5
    model = resemblyzer_embedder.model_id
    store.set_calibration(model, calibrate(store.enrollments(model), probes=store.probes(model)))
    return SpeakerService(SpeakersConfig(backend="resemblyzer"), resemblyzer_embedder, store)


def test_vectors_are_unit_length_and_batching_changes_nothing(
    resemblyzer_embedder: ResemblyzerEmbedder, make_wavs: Wavs
) -> None:
    _, tests = make_wavs("flite-awb")
    pcms = [read_wav_file(f) for f in tests]
    batch = resemblyzer_embedder.embed_batch(pcms)
    for pcm, vector in zip(pcms, batch, strict=True):
        assert vector.shape == (256,)
        assert float(np.linalg.norm(vector)) == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(resemblyzer_embedder.embed(pcm), vector, atol=1e-5)
    assert resemblyzer_embedder.model_id.startswith("resemblyzer:")
    assert ResemblyzerEmbedder().peek_model_id() == resemblyzer_embedder.model_id


def test_calibrated_threshold_is_sane(household: SpeakerService) -> None:
    threshold = household.threshold()
    assert household.store.calibrated_threshold(household.model_id) == threshold
    assert 0.6 < threshold < 0.9


@pytest.mark.parametrize("name", sorted(ENROLLED))
def test_enrolled_voices_are_identified(
    household: SpeakerService, make_wavs: Wavs, name: str
) -> None:
    _, tests = make_wavs(ENROLLED[name])
    matches = household.identify_batch([read_wav_file(f) for f in tests], adapt=False)
    for f, match in zip(tests, matches, strict=True):
        assert match.name == name, f"{f.name}: {dict(match.scores)}"
        assert match.confidence >= household.threshold()
        assert set(match.scores) == set(ENROLLED)


@pytest.mark.parametrize("voice", STRANGERS)
def test_voices_never_enrolled_are_unknown(
    household: SpeakerService, make_wavs: Wavs, voice: str
) -> None:
    _, tests = make_wavs(voice)
    matches = household.identify_batch([read_wav_file(f) for f in tests], adapt=False)
    for f, match in zip(tests, matches, strict=True):
        assert match.name == UNKNOWN_SPEAKER, f"{f.name}: {dict(match.scores)}"
        assert match.confidence == 0.0


def test_too_short_audio_is_unknown_without_embedding(household: SpeakerService) -> None:
    match = household.identify_batch([b"\x01\x00" * 1000], adapt=False)[0]
    assert match.name == UNKNOWN_SPEAKER and match.scores == {}
