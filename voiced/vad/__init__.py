"""Voice activity detection and endpointing.

`segmenter` is pure (no I/O, no VAD library); `webrtc` wraps webrtcvad and is imported
only where it is used.
"""

from voiced.vad.segmenter import (
    Segmenter,
    SegmenterSettings,
    SegmentEvent,
    SpeechAudio,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
)

__all__ = [
    "SegmentEvent",
    "Segmenter",
    "SegmenterSettings",
    "SpeechAudio",
    "SpeechDiscarded",
    "SpeechEnded",
    "SpeechStarted",
]
