"""Built-in speech (voiced/tts.py) with the real espeak-ng, and a stand-in piper program
that checks the command line it is given."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import time
import wave
from array import array
from pathlib import Path

import pytest

from voiced.errors import PluginError
from voiced.tts import PIPER_VOICE_ENV, find_tts, synthesize


@pytest.fixture(autouse=False)
def espeak() -> None:
    """espeak-ng must be there (`make test` installs it): a missing one fails, never skips."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed (run `make test`, which installs it)")


# Writes a 0.5 s 440 Hz tone to the -f file after checking the arguments and reading stdin.
FAKE_PIPER = f"""#!{sys.executable}
import math, struct, sys, time, wave
args = sys.argv[1:]
assert args[0] == "-m" and args[1].endswith(".onnx") and args[2] == "-f", args
text = sys.stdin.read()
if "hang" in text:
    time.sleep(30)
with wave.open(args[3], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(11025)))
"""


def read_wav(data: bytes) -> tuple[wave._wave_params, array[int]]:
    with wave.open(io.BytesIO(data)) as wav:
        params = wav.getparams()
        frames = wav.readframes(params.nframes)
    samples = array("h", frames)
    return params, samples


@pytest.fixture
def no_piper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """PATH without any piper (this machine may have one) but with espeak-ng."""
    espeak = shutil.which("espeak-ng")
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "piper").exists()]
    if espeak:
        dirs.append(str(Path(espeak).parent))
    monkeypatch.setenv("PATH", os.pathsep.join(dirs))
    monkeypatch.delenv(PIPER_VOICE_ENV, raising=False)


@pytest.fixture
def fake_piper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A `piper` on PATH and a voice model file; returns the model path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "piper"
    program.write_text(FAKE_PIPER)
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    model = tmp_path / "en_US-test-medium.onnx"
    model.write_bytes(b"not a real model")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return model


@pytest.mark.usefixtures("espeak")
@pytest.mark.usefixtures("no_piper")
async def test_espeak_makes_a_valid_wav() -> None:
    assert find_tts() == "espeak-ng"
    data = await synthesize("The kitchen timer is done.")
    params, samples = read_wav(data)
    assert (params.nchannels, params.sampwidth) == (1, 2)
    # the header sizes are real, not espeak-ng's streaming placeholders
    assert len(data) == 44 + params.nframes * 2
    seconds = params.nframes / params.framerate
    assert 0.8 < seconds < 5.0
    assert max(abs(s) for s in samples) > 1000  # speech, not silence


@pytest.mark.usefixtures("espeak")
@pytest.mark.usefixtures("no_piper")
async def test_text_is_never_an_option() -> None:
    """Text that looks like a command-line option is spoken, not obeyed."""
    params, _ = read_wav(await synthesize("--version -w /tmp/x hello"))
    assert params.nframes / params.framerate > 1.0


@pytest.mark.usefixtures("espeak")
@pytest.mark.usefixtures("no_piper")
async def test_espeak_voice_and_unknown_voice() -> None:
    params, _ = read_wav(await synthesize("guten Tag", voice="de"))
    assert params.nframes > 0
    with pytest.raises(PluginError) as err:
        await synthesize("hello", voice="qqq-unknown")
    assert err.value.code == "tts_failed"
    assert "voice" in err.value.message


async def test_empty_text() -> None:
    with pytest.raises(PluginError) as err:
        await synthesize("   ")
    assert err.value.code == "tts_failed"


async def test_no_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_tts() is None
    with pytest.raises(PluginError) as err:
        await synthesize("hello")
    assert err.value.code == "tts_missing"
    assert "espeak-ng" in err.value.message and PIPER_VOICE_ENV in err.value.message


async def test_piper_needs_a_voice(fake_piper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPER_VOICE_ENV, raising=False)
    assert find_tts() == ("espeak-ng" if shutil.which("espeak-ng") else None)
    assert find_tts(str(fake_piper.with_name("missing.onnx"))) != "piper"
    assert find_tts(str(fake_piper)) == "piper"
    monkeypatch.setenv(PIPER_VOICE_ENV, str(fake_piper))
    assert find_tts() == "piper"
    assert find_tts("en-us") == "piper"  # an espeak-ng voice name does not hide the model


async def test_piper_is_run_with_model_and_output_file(
    fake_piper: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIPER_VOICE_ENV, str(fake_piper))
    params, samples = read_wav(await synthesize("Timer done"))
    assert (params.framerate, params.nframes) == (22050, 11025)
    assert max(samples) > 7000


async def test_piper_timeout(fake_piper: Path) -> None:
    started = time.monotonic()
    with pytest.raises(PluginError) as err:
        await synthesize("please hang", voice=str(fake_piper), timeout_s=0.5)
    assert err.value.code == "tts_timeout"
    assert time.monotonic() - started < 3
