"""Audio in HTTP requests: multipart uploads or a raw body, decoded to internal-format PCM.

Accepted: `multipart/form-data` with one or more files (any field name; other fields are
read as text parameters), or the file itself as the body with its type: WAV (`audio/wav`),
FLAC, OGG (Vorbis or Opus) and MP3 (recognized by their first bytes whatever the declared
audio type, `application/octet-stream` included), or raw 16-bit PCM as
`audio/L16;rate=R[;channels=N][;endian=little]` (big-endian unless `endian=little`, as
RFC 3551 defines L16). Any sample rate voiced supports, any channel count up to 32; every
file is converted to 16 kHz 16-bit mono with the same resampler as satellite audio.

Bounded: the body by `http.max_upload_mb` (413, counted while reading, whatever
Content-Length said), each file by `http.max_audio_s` of decoded audio (413), at most
`MAX_FILES` files. Decoding is blocking work: callers run `decode` on the inference engine.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype

from voiced.audio.wav import StreamConverter, check_format, parse_wav
from voiced.const import BYTES_PER_SECOND, SUPPORTED_RATES
from voiced.errors import AudioFormatError
from voiced.http.errors import ApiError, too_large
from voiced.sites import safe_repr

MAX_FILES = 32
"""Files per request at most."""
MAX_FIELD_BYTES = 4096
"""A multipart text field (name, site, flags) at most."""
MAX_FIELDS = 64
CHUNK = 64 * 1024
WAV_TYPES = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"})
SNDFILE_TYPES = frozenset({"audio/flac", "audio/x-flac", "audio/ogg", "audio/vorbis",
                           "audio/opus", "application/ogg", "audio/mpeg", "audio/mp3",
                           "audio/x-mpeg", "audio/mpeg3"})
RAW_TYPE = "audio/l16"
BODY_TYPES = WAV_TYPES | SNDFILE_TYPES | {RAW_TYPE, "application/octet-stream"}
EXPECTED = ("multipart/form-data with audio files, or the audio as the body: audio/wav, "
            "audio/flac, audio/ogg, audio/mpeg or audio/L16;rate=16000 (raw 16-bit PCM)")
FORMATS = "WAV, FLAC, OGG or MP3"


@dataclass(frozen=True, slots=True)
class AudioFile:
    """One uploaded file, not yet decoded."""

    name: str
    """The file name (multipart), else the form field or "body"."""
    source: str
    """Where it came from, for error messages: the multipart field, or "body"."""
    data: bytes
    content_type: str
    """Declared type, lower case without parameters ("" when none)."""
    params: Mapping[str, str] = field(default_factory=dict)
    """Content-Type parameters (rate, channels, endian for audio/L16)."""


@dataclass(slots=True)
class Upload:
    """What a request carried: audio files and text fields."""

    files: list[AudioFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


async def read_upload(request: web.Request, limit: int) -> Upload:
    """The files (and text fields) of a request; ApiError for anything else."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    ctype = request.content_type.lower()
    if ctype == "multipart/form-data":
        return await _read_multipart(request, limit)
    if ctype in BODY_TYPES:
        data = await _read_all(request.content, limit)
        mime = parse_mimetype(request.headers.get("Content-Type", ""))
        params = {k.lower(): v for k, v in mime.parameters.items()}
        return Upload([AudioFile("body", "body", data, ctype, params)])
    shown = request.headers.get("Content-Type") or "none"
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {safe_repr(shown, 80)}; expected {EXPECTED}",
                   field="Content-Type")


async def _read_all(stream: object, limit: int, used: int = 0,
                    error: ApiError | None = None) -> bytes:
    """Everything left in a body stream or part, bounded (`used`: bytes read before);
    over the limit raises `error` (default: 413 for the body)."""
    out = bytearray()
    read = stream.read_chunk if isinstance(stream, BodyPartReader) else None
    while True:
        try:
            if read is not None:
                chunk = await read(CHUNK)
            else:
                chunk = await stream.read(CHUNK)  # type: ignore[attr-defined]
        except web.RequestPayloadError as exc:  # e.g. broken chunked framing
            raise ApiError(400, "body_invalid", f"the body cannot be read: {exc}",
                           field="body") from None
        if not chunk:
            return bytes(out)
        out += chunk
        if used + len(out) > limit:
            raise error or too_large(limit)


async def _read_multipart(request: web.Request, limit: int) -> Upload:
    upload = Upload()
    used = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "multipart_invalid", "nested multipart bodies are not "
                               f"accepted; expected {EXPECTED}", field="body")
            name = part.name or ""
            if part.filename is not None or (part.headers.get("Content-Type", "")
                                             .lower().startswith("audio/")):
                if len(upload.files) >= MAX_FILES:
                    raise ApiError(400, "too_many_files",
                                   f"more than {MAX_FILES} files in one request", field=name)
                data = await _read_all(part, limit, used)
                used += len(data)
                mime = parse_mimetype(part.headers.get("Content-Type", ""))
                ctype = f"{mime.type}/{mime.subtype}".lower() if mime.type else ""
                params = {k.lower(): v for k, v in mime.parameters.items()}
                upload.files.append(AudioFile(part.filename or name or "file", name or "file",
                                              data, ctype, params))
            else:
                raw = await _read_all(part, MAX_FIELD_BYTES, error=ApiError(
                    400, "field_too_long", f"form field {safe_repr(name)} is longer than "
                    f"{MAX_FIELD_BYTES} bytes; a file needs a filename (curl -F "
                    "file=@command.wav) or an audio/* Content-Type", field=name))
                used += len(raw)
                if used > limit:
                    raise too_large(limit)
                if len(upload.fields) >= MAX_FIELDS:
                    raise ApiError(400, "too_many_fields",
                                   f"more than {MAX_FIELDS} form fields", field=name)
                try:
                    upload.fields[name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(400, "field_invalid", f"form field {safe_repr(name)} is not "
                                   "UTF-8 text; a file needs a filename (curl -F "
                                   "file=@command.wav) or an audio/* Content-Type",
                                   field=name) from None
    except ApiError:
        raise
    except (ValueError, AssertionError, KeyError, web.RequestPayloadError) as exc:
        raise ApiError(400, "multipart_invalid", f"the multipart body cannot be read: {exc}",
                       field="body") from None
    return upload


def _sniff(data: bytes) -> str | None:
    """"wav", "sndfile" (FLAC, OGG, MP3) or None, from the first bytes."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] in (b"fLaC", b"OggS") or data[:3] == b"ID3":
        return "sndfile"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        return "sndfile"  # an MPEG audio frame header
    return None


def decode(audio: AudioFile, max_audio_s: float) -> bytes:
    """Internal-format PCM (16 kHz 16-bit mono) of one file; ApiError when it cannot be
    read (400), is empty (400) or lasts longer than `max_audio_s` (413). Blocking."""
    if not audio.data:
        raise ApiError(400, "audio_empty", f"{audio.name}: the file is empty; expected "
                       f"{FORMATS} audio", field=audio.source)
    try:
        if audio.content_type == RAW_TYPE:
            pcm = _decode_l16(audio, max_audio_s)
        else:
            kind = _sniff(audio.data)
            if kind == "wav":
                pcm = _decode_wav(audio, max_audio_s)
            elif kind == "sndfile":
                pcm = _decode_sndfile(audio, max_audio_s)
            else:
                raise ApiError(400, "audio_unreadable",
                               f"{audio.name}: not a {FORMATS} file (it starts with "
                               f"{safe_repr(audio.data[:12])}); raw PCM needs Content-Type "
                               "audio/L16;rate=16000", field=audio.source)
    except AudioFormatError as exc:
        raise ApiError(400, "audio_unreadable", f"{audio.name}: {exc.message}",
                       field=audio.source) from None
    if not pcm:
        raise ApiError(400, "audio_empty", f"{audio.name}: holds no audio samples",
                       field=audio.source)
    return pcm


def _too_long(audio: AudioFile, seconds: float | None, max_audio_s: float) -> ApiError:
    length = f" ({seconds:.1f} s)" if seconds is not None else ""
    return ApiError(413, "audio_too_long", f"{audio.name}: the audio{length} is longer than "
                    f"the {max_audio_s:g} s limit (http.max_audio_s)", field=audio.source,
                    limit_s=max_audio_s)


def _decode_wav(audio: AudioFile, max_audio_s: float) -> bytes:
    wav = parse_wav(audio.data, max_bytes=None)
    if wav.duration_s > max_audio_s:
        raise _too_long(audio, wav.duration_s, max_audio_s)
    converter = StreamConverter()
    return converter.convert(wav.pcm, wav.rate, wav.width, wav.channels,
                             wav.float_format) + converter.flush()


def _decode_sndfile(audio: AudioFile, max_audio_s: float) -> bytes:
    import soundfile

    converter = StreamConverter()
    out = bytearray()
    try:
        with soundfile.SoundFile(io.BytesIO(audio.data)) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            check_format(rate, 4, channels, True)
            max_frames = int(max_audio_s * rate)
            if 0 < f.frames < 2**62 and f.frames > max_frames:
                raise _too_long(audio, f.frames / rate, max_audio_s)
            done = 0
            # block by block: a small file that decodes to hours (or to nothing but
            # silence) costs no more than the limit allows
            for block in f.blocks(blocksize=rate, dtype="float32", always_2d=True):
                done += len(block)
                if done > max_frames:
                    raise _too_long(audio, None, max_audio_s)
                out += converter.convert(np.ascontiguousarray(block, dtype="<f4").tobytes(),
                                         rate, 4, channels, True)
    except (RuntimeError, soundfile.SoundFileError) as exc:
        raise ApiError(400, "audio_unreadable", f"{audio.name}: cannot be decoded as "
                       f"{FORMATS}: {exc}", field=audio.source) from None
    out += converter.flush()
    return bytes(out)


def _decode_l16(audio: AudioFile, max_audio_s: float) -> bytes:
    params = audio.params
    where = f"{audio.source} Content-Type" if audio.source != "body" else "Content-Type"
    try:
        rate = int(params["rate"])
        channels = int(params.get("channels", "1"))
    except (KeyError, ValueError):
        raise ApiError(400, "audio_format", f"{audio.name}: audio/L16 needs rate=HZ (and "
                       "optionally channels=N), e.g. audio/L16;rate=16000; supported rates: "
                       + ", ".join(str(r) for r in SUPPORTED_RATES), field=where) from None
    endian = params.get("endian", "big").lower()
    if endian not in ("big", "little"):
        raise ApiError(400, "audio_format", f"{audio.name}: endian={safe_repr(endian)}; "
                       "expected big (the default, as RFC 3551 defines L16) or little",
                       field=where)
    check_format(rate, 2, channels, False)
    frame = 2 * channels
    if len(audio.data) % frame:
        raise ApiError(400, "audio_format", f"{audio.name}: {len(audio.data)} bytes is not a "
                       f"whole number of {frame}-byte frames (16-bit x {channels} channels)",
                       field=audio.source)
    seconds = len(audio.data) / frame / rate
    if seconds > max_audio_s:
        raise _too_long(audio, seconds, max_audio_s)
    pcm = audio.data
    if endian == "big":
        pcm = np.frombuffer(pcm, dtype=">i2").astype("<i2").tobytes()
    converter = StreamConverter()
    return converter.convert(pcm, rate, 2, channels) + converter.flush()


def seconds_of(pcm: bytes) -> float:
    """Length of internal-format PCM in seconds."""
    return len(pcm) / BYTES_PER_SECOND
