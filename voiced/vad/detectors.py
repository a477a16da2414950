"""The per-frame speech detector a site uses, chosen by `vad.engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voiced.config import VadConfig


class SpeechDetector(Protocol):
    """Speech or not, frame by frame, for one stream (it may keep state between frames)."""

    def is_speech(self, frame: bytes) -> bool: ...


def new_detector(vad: VadConfig) -> SpeechDetector:
    """A detector for one stream, as `vad.engine` says (libraries imported on first use)."""
    if vad.engine == "silero":
        from voiced.vad.silero import SileroVad

        return SileroVad(vad.silero_threshold)
    from voiced.vad.webrtc import WebrtcVad

    return WebrtcVad(vad.aggressiveness)


def describe(vad: VadConfig) -> dict[str, object]:
    """The detector's settings, as the status API shows them."""
    if vad.engine == "silero":
        return {"backend": "silero-vad", "threshold": vad.silero_threshold}
    return {"backend": "webrtcvad", "aggressiveness": vad.aggressiveness}
