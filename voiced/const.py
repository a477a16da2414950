"""Audio format constants; every size in voiced is derived from these."""

from typing import Final

SAMPLE_RATE: Final = 16_000
"""Internal sample rate (Hz): every stage after ingest sees 16 kHz audio."""
SAMPLE_WIDTH: Final = 2
"""Bytes per sample (signed 16-bit little-endian)."""
CHANNELS: Final = 1
"""Mono."""

BYTES_PER_SECOND: Final = SAMPLE_RATE * SAMPLE_WIDTH * CHANNELS
SAMPLES_PER_MS: Final = SAMPLE_RATE // 1000

VAD_FRAME_MS: Final = 20
"""Frame length fed to webrtcvad (it accepts 10, 20 or 30 ms)."""
VAD_FRAME_SAMPLES: Final = VAD_FRAME_MS * SAMPLES_PER_MS
VAD_FRAME_BYTES: Final = VAD_FRAME_SAMPLES * SAMPLE_WIDTH

SATELLITE_FRAME_MS: Final = 20
"""Frame length the satellite client sends."""

MAX_AUDIO_PAYLOAD: Final = 1_000_000
"""Largest audio message accepted on MQTT (bytes); larger ones are rejected."""


def ms_to_bytes(ms: float) -> int:
    """Size in bytes of `ms` milliseconds of internal-format audio (whole samples)."""
    return int(ms * SAMPLES_PER_MS) * SAMPLE_WIDTH


def bytes_to_ms(n: int) -> float:
    """Duration in milliseconds of `n` bytes of internal-format audio."""
    return n / SAMPLE_WIDTH / SAMPLES_PER_MS

SUPPORTED_RATES: Final = (8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100,
                          48_000, 88_200, 96_000, 176_400, 192_000)
"""Sample rates (Hz) accepted from satellites and files. Each converts to SAMPLE_RATE with a
resampling filter of at most 12801 taps (20 × 640 + 1, for 11025 Hz) and at most 241 taps
per output sample (192 kHz), built once per rate and cached; an arbitrary rate such as
191999 Hz would need millions of taps."""

MAX_MESSAGE_AUDIO_MS: Final = 2_000
"""Most audio one MQTT message may hold (ms). Rhasspy sends 64 ms per message and the
voiced satellite 20 ms; a longer message is rejected, so one message is bounded work."""
