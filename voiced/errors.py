"""Errors with a machine-readable code, one subclass per pipeline stage."""

from __future__ import annotations


class VoicedError(Exception):
    """Base error: `code` is stable and machine-readable, `message` is for people."""

    component = "voiced"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConfigError(VoicedError):
    """voiced.yaml or a command-line option is wrong."""

    component = "config"


class AudioFormatError(VoicedError):
    """An audio payload could not be understood (broken WAV, unsupported format, size)."""

    component = "audioServer"


class TransportError(VoicedError):
    """A message on MQTT was malformed or not allowed."""

    component = "transport"


class AsrError(VoicedError):
    """Speech recognition failed or its model could not be loaded."""

    component = "asr"


class SpeakerError(VoicedError):
    """Speaker identification or enrollment failed."""

    component = "speakers"


class IntentError(VoicedError):
    """Intent files could not be loaded or recognition failed."""

    component = "nlu"


class PluginError(VoicedError):
    """A plugin failed to load, start or handle a request."""

    component = "handler"
