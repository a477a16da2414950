"""Voice activity detection with webrtcvad (from the `webrtcvad-wheels` package)."""

from __future__ import annotations

import logging

from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH, SAMPLES_PER_MS
from voiced.errors import AudioFormatError

log = logging.getLogger(__name__)

FRAME_MS_ALLOWED = (10, 20, 30)
"""Frame lengths webrtcvad accepts (ms)."""
_FRAME_SIZES = {ms * SAMPLES_PER_MS * SAMPLE_WIDTH: ms for ms in FRAME_MS_ALLOWED}


class WebrtcVad:
    """Per-frame speech/non-speech decisions on internal-format audio.

    One instance per stream: webrtcvad keeps a little state between frames.
    """

    def __init__(self, aggressiveness: int = 2) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        # imported here so that `import voiced` does not load the C extension
        import webrtcvad

        self.aggressiveness = aggressiveness
        """0 (least) to 3 (most eager to call a frame non-speech)."""
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        """True when the 10, 20 or 30 ms frame (16 kHz, 16-bit mono) holds speech.

        Raises AudioFormatError("vad_frame_size") for any other frame length
        (VAD_FRAME_BYTES is the one voiced uses).
        """
        if len(frame) not in _FRAME_SIZES:
            sizes = ", ".join(f"{n} ({ms} ms)" for n, ms in _FRAME_SIZES.items())
            raise AudioFormatError(
                "vad_frame_size", f"VAD frame is {len(frame)} bytes; expected one of {sizes}"
            )
        return bool(self._vad.is_speech(frame, SAMPLE_RATE))
