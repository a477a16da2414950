"""silero-vad's network in numpy (`vad.engine: silero`): the same probabilities as the
package's own TorchScript model, real decisions on real (espeak-ng) speech and noise, a
restricted reader for the weights, and the daemon using it end to end."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import FIXTURES, Mosquitto, make_config, running_daemon, segment_with

from voiced.audio.wav import read_wav_file
from voiced.config import VadConfig, load_config
from voiced.const import SAMPLE_WIDTH, VAD_FRAME_BYTES, ms_to_bytes
from voiced.errors import AudioFormatError, ConfigError
from voiced.models import EndReason
from voiced.satellite import Satellite
from voiced.vad.detectors import new_detector
from voiced.vad.silero import (
    CONTEXT,
    WINDOW,
    SileroModel,
    SileroVad,
    read_torchscript_tensors,
    shared_model,
    weights_path,
)
from voiced.vad.webrtc import WebrtcVad

RNG_SEEDS = (11, 12, 13)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """An espeak-ng command as float samples (internal format values)."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (run `make test`, which installs it)")
    path = tmp_path_factory.mktemp("silero") / "cmd.wav"
    subprocess.run(["espeak-ng", "-v", "en-gb", "-s", "150", "-w", str(path),
                    "set a timer for twenty five minutes"], check=True, timeout=30)
    return np.frombuffer(read_wav_file(path), dtype="<i2").astype(np.float64)


def _pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def _frames(pcm: bytes, size: int = VAD_FRAME_BYTES) -> list[bytes]:
    return [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, size)]


def _brown(rng: np.random.Generator, n: int) -> np.ndarray:
    walk = np.cumsum(rng.normal(0, 1, n))
    walk -= np.convolve(walk, np.ones(400) / 400, "same")  # no drift below ~40 Hz
    return walk / np.std(walk)


def test_the_numpy_network_gives_the_torchscript_models_probabilities(
        speech: np.ndarray) -> None:
    """Step by step over speech in noise, against the package's model file run by torch."""
    torch = pytest.importorskip("torch")  # a locked dependency: this never skips in `make test`
    reference = torch.jit.load(str(weights_path()), map_location="cpu")
    reference.reset_states()
    rng = np.random.default_rng(RNG_SEEDS[0])
    pad = np.zeros(8000)
    audio = np.concatenate([pad, speech, pad]) + rng.normal(0, 300, len(speech) + 16000)
    audio = (audio / 32768.0).astype(np.float32)
    model, state = shared_model(), SileroModel.new_state()
    context = np.zeros(CONTEXT, dtype=np.float32)
    ours, theirs = [], []
    with torch.no_grad():
        for start in range(0, len(audio) - WINDOW + 1, WINDOW):
            window = audio[start:start + WINDOW]
            theirs.append(float(reference(torch.from_numpy(window.copy()), 16000)))
            prob, state = model.step(np.concatenate([context, window])[None, :], state)
            context = window[-CONTEXT:]
            ours.append(float(prob[0]))
    assert max(ours) > 0.9 and min(ours) < 0.1  # the comparison covers both kinds
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_batch_of_streams_steps_like_each_stream_alone(speech: np.ndarray) -> None:
    rng = np.random.default_rng(RNG_SEEDS[1])
    streams = [speech[:16000], rng.normal(0, 2000, 16000), speech[-16000:] * 0.1]
    model = shared_model()
    alone = []
    for samples in streams:
        state, probs = SileroModel.new_state(), []
        x = (np.asarray(samples) / 32768).astype(np.float32)
        for start in range(CONTEXT, len(x) - WINDOW + 1, WINDOW):
            prob, state = model.step(x[None, start - CONTEXT:start + WINDOW], state)
            probs.append(prob[0])
        alone.append(probs)
    state = SileroModel.new_state(len(streams))
    batch = np.stack([(np.asarray(s) / 32768).astype(np.float32) for s in streams])
    together = []
    for start in range(CONTEXT, batch.shape[1] - WINDOW + 1, WINDOW):
        probs, state = model.step(batch[:, start - CONTEXT:start + WINDOW], state)
        together.append(probs)
    np.testing.assert_allclose(np.array(together).T, np.array(alone), atol=1e-5)


def test_speech_is_found_and_loud_steady_noise_is_not(speech: np.ndarray) -> None:
    """Steady noise loud enough that webrtcvad calls it speech is not speech to silero;
    speech 5 dB over white noise is speech inside and silence around it."""
    for seed in RNG_SEEDS:
        rng = np.random.default_rng(seed)
        for noise in (rng.normal(0, 1, 48000), _brown(rng, 48000)):
            frames = _frames(_pcm(noise * 3000))
            silero, webrtc = SileroVad(), WebrtcVad(2)
            assert sum(silero.is_speech(f) for f in frames) == 0
            assert sum(webrtc.is_speech(f) for f in frames) > len(frames) // 2
        level = np.sqrt(np.mean(speech[np.abs(speech) > 100] ** 2))
        pad = np.zeros(16000)
        audio = np.concatenate([pad, speech, pad])
        audio = audio + rng.normal(0, level / 10 ** (5 / 20), len(audio))
        vad = SileroVad()
        decisions = [vad.is_speech(f) for f in _frames(_pcm(audio))]
        per_frame = VAD_FRAME_BYTES // SAMPLE_WIDTH
        first, last = len(pad) // per_frame, (len(pad) + len(speech)) // per_frame
        inside = decisions[first + 5:last - 5]
        assert sum(inside) >= 0.8 * len(inside)
        assert not any(decisions[:first - 2]) and not any(decisions[last + 15:])


def test_the_segmenter_over_silero_cuts_one_utterance(speech: np.ndarray) -> None:
    pad = ms_to_bytes(1000)
    quiet = _pcm(np.random.default_rng(RNG_SEEDS[2]).normal(0, 5, pad))
    pcm = quiet + _pcm(speech) + quiet
    vad = new_detector(VadConfig(engine="silero"))
    assert isinstance(vad, SileroVad)
    started, ended, _ = segment_with(vad, pcm)
    assert len(started) == len(ended) == 1
    assert ended[0].reason == EndReason.SILENCE
    # the utterance holds all of the speech, and not much of the quiet around it
    assert len(speech) * SAMPLE_WIDTH <= len(ended[0].audio) <= len(speech) * SAMPLE_WIDTH + pad


def test_frames_of_any_length_give_the_same_decisions(speech: np.ndarray) -> None:
    """10 ms frames and 20 ms frames are judged on the same 32 ms windows."""
    pcm = _pcm(np.concatenate([np.zeros(8000), speech, np.zeros(8000)]))
    coarse, fine = SileroVad(), SileroVad()
    by20 = [coarse.is_speech(f) for f in _frames(pcm, 640)]
    by10 = [fine.is_speech(f) for f in _frames(pcm, 320)]
    assert by10[1::2] == by20
    assert fine.probability == coarse.probability


def test_bad_frames_and_settings_are_refused() -> None:
    vad = SileroVad()
    with pytest.raises(AudioFormatError, match="whole 16-bit samples"):
        vad.is_speech(b"\x00" * 641)
    with pytest.raises(AudioFormatError):
        vad.is_speech(b"")
    with pytest.raises(ValueError, match="threshold"):
        SileroVad(1.5)
    with pytest.raises(ValueError, match="576"):
        shared_model().step(np.zeros((1, 512), dtype=np.float32), SileroModel.new_state())


def test_the_config_chooses_the_engine(tmp_path: Path) -> None:
    path = tmp_path / "voiced.yaml"
    path.write_text("vad: {engine: silero, silero_threshold: 0.6}\n")
    config = load_config(path)
    assert config.vad.engine == "silero"
    detector = new_detector(config.vad)
    assert isinstance(detector, SileroVad) and detector.threshold == 0.6
    assert isinstance(new_detector(VadConfig()), WebrtcVad)  # the default
    path.write_text("vad: {engine: cobra}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "vad.engine" in str(err.value) and "silero" in str(err.value)


def test_the_weights_reader_runs_nothing_from_the_file(tmp_path: Path) -> None:
    """A model archive whose pickle names a function (here one that would write a file)
    is read as data: the function is never resolved, let alone called."""
    target = tmp_path / "pwned"

    class Writes:
        def __reduce__(self) -> tuple[object, ...]:
            return (Path.write_text, (target, "ran"))

    class Shell:
        def __reduce__(self) -> tuple[object, ...]:
            import os
            return (os.system, (f"touch {target}",))

    archive = tmp_path / "evil.jit"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("evil/data.pkl", pickle.dumps({"x": Shell()}, protocol=2))
    assert read_torchscript_tensors(archive) == {}  # os.system became an inert stub
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("evil/data.pkl", pickle.dumps({"x": Writes()}, protocol=2))
    with pytest.raises(ConfigError, match="cannot read its tensors"):
        read_torchscript_tensors(archive)  # a stub is not callable: refused, not run
    assert not target.exists()
    archive.write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a TorchScript archive"):
        read_torchscript_tensors(archive)
    # the real file: both networks of silero's archive, read without torch
    tensors = read_torchscript_tensors(weights_path())
    assert tensors["_model.encoder.0.reparam_conv.weight"].shape == (128, 129, 3)
    assert tensors["_model_8k.encoder.0.reparam_conv.weight"].shape == (128, 65, 3)


@pytest.mark.slow
async def test_a_site_with_silero_understands_a_command(mosquitto: Mosquitto,
                                                         tmp_path: Path) -> None:
    """The daemon with `vad.engine: silero`: commands over MQTT end and are understood."""
    import yaml

    manifest = yaml.safe_load((FIXTURES / "commands.yaml").read_text())
    entries = [e for e in manifest["commands"]
               if not (e.get("context") or {}).get("speaker")][:4]
    config = make_config(tmp_path, mosquitto.port, vad={"engine": "silero"})
    async with running_daemon(config) as daemon:
        async with Satellite("127.0.0.1", mosquitto.port, "porch") as sat:
            for entry in entries:
                answer = await sat.command(read_wav_file(FIXTURES / entry["file"]), timeout=60)
                assert answer.intent == entry["intent"], (entry, answer)
                assert answer.termination == "nominal", answer
        assert isinstance(daemon.sites["porch"]._vad, SileroVad)
