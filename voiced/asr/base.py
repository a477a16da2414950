"""The `Transcriber` backend interface (the factory is in voiced.asr.service)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.intents.recognizer import IntentRecognizer


class AsrStream(ABC):
    """Incremental decoding of one utterance while it is being spoken.

    Methods are blocking; the pipeline calls them through the inference engine, one at a
    time per stream.
    """

    @abstractmethod
    def feed(self, pcm: bytes) -> None:
        """Decode more audio (internal format)."""

    @abstractmethod
    def finish(self) -> Transcript:
        """Finish decoding and return the final transcript."""

    def partial(self) -> str | None:
        """Best hypothesis so far, if the backend can tell."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Abandon the utterance (it was too short, or the session ended)."""


class Transcriber(ABC):
    """A speech recognizer. `transcribe` is the one required method.

    Methods are blocking and are called through the inference engine, never on the
    event loop. Heavy imports happen in `load()`.
    """

    name: str = "transcriber"

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model and warm it up (called once before readiness)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release models and worker processes (daemon shutdown)."""

    def reload(self, intents: IntentRecognizer) -> None:  # noqa: B027 - optional hook
        """Rebuild what depends on the intents (grammar, prompt) after they changed."""

    @abstractmethod
    def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one whole utterance."""

    def transcribe_batch(self, pcms: Sequence[bytes]) -> list[Transcript]:
        """Transcribe several utterances; backends that batch override this."""
        return [self.transcribe(p) for p in pcms]

    @property
    def supports_streaming(self) -> bool:
        """True when `start_stream` decodes while the person speaks."""
        return False

    @property
    def supports_batching(self) -> bool:
        """True when `transcribe_batch` is faster than one call per utterance."""
        return False

    def start_stream(self) -> AsrStream:
        """Begin incremental decoding of a new utterance."""
        raise NotImplementedError(f"{self.name} does not stream")
