"""Audio ingest: WAV parsing/building, conversion to the internal format, re-framing."""

from voiced.audio.buffers import FrameBuffer
from voiced.audio.wav import (
    StreamConverter,
    WavAudio,
    build_wav,
    convert_wav,
    parse_wav,
    read_wav_file,
    write_wav_file,
)

__all__ = [
    "FrameBuffer",
    "StreamConverter",
    "WavAudio",
    "build_wav",
    "convert_wav",
    "parse_wav",
    "read_wav_file",
    "write_wav_file",
]
