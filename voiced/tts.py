"""Built-in speech for the ``say`` plugin: a TTS program turns text into a WAV.

Two programs are supported, both run as subprocesses (never through a shell; the text
goes to their standard input, so it is never parsed as an option):

- **piper** (neural, sounds natural), used when ``piper`` is on PATH *and* a voice model
  is configured: the ``piper_voice`` argument, or the ``VOICED_PIPER_VOICE`` environment
  variable, naming an existing ``.onnx`` file (its ``.onnx.json`` beside it);
- **espeak-ng** (robotic, tiny, in every distribution: ``apt install espeak-ng``).

When neither is there, `find_tts` returns None and the daemon publishes ``hermes/tts/say``
for an external TTS instead.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import shutil
import struct
import tempfile
import wave
from pathlib import Path

from voiced.errors import PluginError

__all__ = ["PIPER_VOICE_ENV", "find_tts", "synthesize"]

log = logging.getLogger(__name__)

PIPER_VOICE_ENV = "VOICED_PIPER_VOICE"
"""Environment variable naming the piper voice model (.onnx)."""
DEFAULT_ESPEAK_VOICE = "en-us"
_STDERR_TAIL = 300


def _piper_model(piper_voice: str | None) -> Path | None:
    """The piper model file: `piper_voice` if it is one, else ``$VOICED_PIPER_VOICE``."""
    for candidate in (piper_voice, os.environ.get(PIPER_VOICE_ENV)):
        if candidate and candidate.endswith(".onnx"):
            path = Path(candidate).expanduser()
            if path.is_file():
                return path
    return None


def find_tts(piper_voice: str | None = None) -> str | None:
    """The TTS program to use: "piper", "espeak-ng", or None when neither is usable.

    piper needs both the program on PATH and an existing ``.onnx`` voice model:
    `piper_voice` (pass ``tts.voice`` from voiced.yaml; an espeak-ng voice name there is
    ignored), else the ``VOICED_PIPER_VOICE`` environment variable.
    """
    if shutil.which("piper") and _piper_model(piper_voice) is not None:
        return "piper"
    if shutil.which("espeak-ng"):
        return "espeak-ng"
    return None


def _fix_wav(data: bytes) -> bytes:
    """Rewrite a streamed WAV (placeholder sizes, as espeak-ng --stdout writes) as a valid one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PluginError("tts_failed", "the TTS program did not produce a WAV file")
    pos = 12
    params: tuple[int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if fmt != 1:
                raise PluginError("tts_failed", f"the TTS program wrote WAV format {fmt}, not PCM")
            params = (channels, rate, bits // 8)
        elif chunk_id == b"data":
            if params is None:
                break
            # the stated size may be a streaming placeholder: trust the bytes we have
            pcm = data[body : min(len(data), body + size)]
            channels, rate, width = params
            pcm = pcm[: len(pcm) - len(pcm) % (channels * width)]
            out = io.BytesIO()
            with wave.open(out, "wb") as wav:
                wav.setnchannels(channels)
                wav.setsampwidth(width)
                wav.setframerate(rate)
                wav.writeframes(pcm)
            return out.getvalue()
        pos = body + size + (size & 1)
    raise PluginError("tts_failed", "the TTS program wrote a WAV without audio")


async def _run(argv: list[str], text: str, timeout_s: float) -> bytes:
    """Run a TTS program with `text` on stdin; return its stdout."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise PluginError("tts_missing", f"cannot run {argv[0]}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate(text.encode())
    except TimeoutError as exc:
        raise PluginError(
            "tts_timeout", f"{argv[0]} did not finish within {timeout_s:g} s and was killed"
        ) from exc
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
        raise PluginError("tts_failed", f"{argv[0]} exited with status {proc.returncode}: {tail}")
    if err.strip():
        # espeak-ng reports an unknown voice on stderr but exits 0 with no audio
        log.debug("%s said on stderr: %s", argv[0], err.decode(errors="replace").strip())
        if not out:
            tail = err.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise PluginError("tts_failed", f"{argv[0]}: {tail}")
    return out


async def synthesize(
    text: str,
    voice: str | None = None,
    *,
    piper_voice: str | None = None,
    timeout_s: float = 30.0,
) -> bytes:
    """Speak `text` into a complete WAV file (bytes) with piper or espeak-ng.

    `voice` is an espeak-ng voice name ("en-us", "de") or, for piper, a model path
    (".onnx"); `piper_voice` forces a piper model. Raise PluginError ``tts_missing``
    (no program), ``tts_timeout`` (killed after `timeout_s`) or ``tts_failed``.
    """
    if not text.strip():
        raise PluginError("tts_failed", "nothing to say: the text is empty")
    model_hint = piper_voice or voice
    engine = find_tts(model_hint)
    if engine is None:
        raise PluginError(
            "tts_missing",
            "no TTS program found: install espeak-ng (apt install espeak-ng), or piper "
            f"with a voice model named by {PIPER_VOICE_ENV}",
        )
    if engine == "piper":
        model = _piper_model(model_hint)
        assert model is not None
        with tempfile.TemporaryDirectory(prefix="voiced-tts-") as tmp:
            target = Path(tmp) / "speech.wav"
            await _run(["piper", "-m", str(model), "-f", str(target)], text, timeout_s)
            try:
                data = target.read_bytes()
            except OSError as exc:
                raise PluginError("tts_failed", f"piper wrote no audio file: {exc}") from exc
    else:
        espeak_voice = voice if voice and not voice.endswith(".onnx") else DEFAULT_ESPEAK_VOICE
        data = await _run(["espeak-ng", "--stdout", "--stdin", "-v", espeak_voice], text, timeout_s)
    wav = _fix_wav(data)
    log.debug("%s spoke %d characters into %d bytes of WAV", engine, len(text), len(wav))
    return wav
