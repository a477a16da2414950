"""Real webrtcvad on real (espeak-ng) speech, and the segmenter over its decisions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import segment_with

from voiced.audio.wav import read_wav_file
from voiced.const import SAMPLE_WIDTH, VAD_FRAME_BYTES, ms_to_bytes
from voiced.errors import AudioFormatError
from voiced.models import EndReason
from voiced.vad.segmenter import SpeechDiscarded
from voiced.vad.webrtc import WebrtcVad

SILENCE_MS = 1000


@pytest.fixture(scope="module")
def padded_speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, int, int]:
    """(pcm, speech_start, speech_end): an espeak-ng command between 1 s of quiet-room noise.

    Offsets are in bytes of internal-format audio.
    """
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (run `make test`, which installs it)")
    path: Path = tmp_path_factory.mktemp("speech") / "cmd.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "turn on the kitchen light"], check=True, timeout=30
    )
    speech = read_wav_file(path)  # espeak-ng writes 22.05 kHz: this also converts
    pad = ms_to_bytes(SILENCE_MS)
    noise = np.random.default_rng(1).normal(0, 5, (2 * pad) // SAMPLE_WIDTH)
    quiet = np.rint(noise).astype("<i2").tobytes()
    pcm = quiet[:pad] + speech + quiet[pad:]
    return pcm, pad, pad + len(speech)


def frames(pcm: bytes) -> list[bytes]:
    n = len(pcm) // VAD_FRAME_BYTES
    return [pcm[i * VAD_FRAME_BYTES : (i + 1) * VAD_FRAME_BYTES] for i in range(n)]


def test_speech_is_detected_inside_and_silence_outside(
    padded_speech: tuple[bytes, int, int],
) -> None:
    pcm, start, end = padded_speech
    vad = WebrtcVad(2)
    decisions = [vad.is_speech(f) for f in frames(pcm)]
    first, last = start // VAD_FRAME_BYTES, end // VAD_FRAME_BYTES
    margin = 5  # espeak-ng leaves ~50 ms of silence at each end of its output
    before, after = decisions[: first - 1], decisions[last + 1 :]
    inside = decisions[first + margin : last - margin]
    assert not any(before) and not any(after)
    assert sum(inside) >= 0.8 * len(inside)


def test_segmenter_over_real_decisions_finds_one_utterance(
    padded_speech: tuple[bytes, int, int],
) -> None:
    pcm, start, end = padded_speech
    started, ended, events = segment_with(WebrtcVad(2), pcm)
    assert len(started) == len(ended) == 1
    assert not any(isinstance(e, SpeechDiscarded) for e in events)
    utterance = ended[0]
    assert utterance.reason is EndReason.SILENCE
    # the utterance covers the whole command, with pre-roll before it
    offset = pcm.find(utterance.audio)
    assert offset >= 0
    assert offset <= start - ms_to_bytes(250)
    assert offset + len(utterance.audio) >= end
    assert utterance.speech_ms >= 0.7 * (end - start) / ms_to_bytes(1)


def test_wrong_frame_size_is_refused() -> None:
    vad = WebrtcVad(1)
    assert vad.is_speech(bytes(ms_to_bytes(10))) is False  # 10 ms frames are allowed
    with pytest.raises(AudioFormatError) as info:
        vad.is_speech(bytes(VAD_FRAME_BYTES + 2))
    assert info.value.code == "vad_frame_size"
    assert str(VAD_FRAME_BYTES) in info.value.message


def test_aggressiveness_is_checked() -> None:
    with pytest.raises(ValueError):
        WebrtcVad(4)
