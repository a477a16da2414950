"""The `Transcriber` backend interface and `AsrIntents`, what a backend knows of the
intents (the factory and the conversion from the recognizer are in voiced.asr.service)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from voiced.languages import pick_language
from voiced.models import Transcript

if TYPE_CHECKING:
    from hassil import Intents


@dataclass(frozen=True, slots=True)
class AsrIntents:
    """What a speech recognizer needs to know of the intents: plain data, no matcher.

    Built from the loaded intents by `voiced.asr.service.asr_intents`; backends use it to
    constrain (pocketsphinx grammar) or to guide (Whisper prompt) what they hear.
    """

    language: str
    """The main language's code (lower case, `-` between parts: `en`, `pt-br`)."""
    intents: Intents
    """The main language's hassil intents: the sentences a grammar is compiled from."""
    document: dict[str, Any] | None
    """The main language's merged YAML document the `intents` were built from (plain
    data: it is pickled to worker processes, which rebuild the `intents` from it); None
    when the intents were built in code, not loaded from files."""
    vocabulary: dict[str, frozenset[str]]
    """Lower-case words of every language's templates, list values and expansion rules,
    by language code; the main language first."""

    def words_for(self, language: str) -> frozenset[str]:
        """The vocabulary of the sentences heard in `language`.

        The same choice as `IntentRecognizer.for_language`: the set of that language
        (matched exactly, then by the part before `-`: Whisper says `pt` for a `pt-BR`
        set), else the main language's.
        """
        return self.vocabulary[pick_language(language, self.language, self.vocabulary)]

    def all_words(self) -> frozenset[str]:
        """The vocabulary of every language together."""
        return frozenset().union(*self.vocabulary.values())


class Completion(StrEnum):
    """How far a (partial) hypothesis got through the grammar (adaptive endpointing)."""

    COMPLETE = "complete"
    """A whole sentence, and no sentence goes on from it: the command is over."""
    CONTINUABLE = "continuable"
    """A whole sentence that a longer one also starts with ("... ten minutes" → "... ten
    minutes and five seconds")."""
    PREFIX = "prefix"
    """Not a sentence yet, but the start of one ("set the lights to", "... twenty")."""
    NONE = "none"
    """Neither (no words, or words no sentence starts with)."""
    UNSURE = "unsure"
    """A whole sentence, but heard with too little confidence to end before the usual
    silence (`asr.early_end_confidence`): an everyday sentence whose first part reads as
    a command, or a command misheard at a pause, is not cut there."""


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

    @property
    def completion_known(self) -> bool:
        """True when `completion()` is answered from what the last `feed` brought back,
        with no work: it may then be called on the event loop (worker pools judge every
        feed)."""
        return False

    def completion(self) -> Completion | None:
        """Is the hypothesis after all the audio fed so far a whole command, and can it go
        on (adaptive endpointing, `vad.endpoint`)? None: the backend cannot tell, and the
        utterance ends on silence alone."""
        return None

    def hurry(self) -> None:  # noqa: B027 - optional hook
        """The utterance is at its end (its silence is being judged): from now on its
        feeds go before those of utterances still being spoken, where the backend queues
        work (worker pools)."""

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

    def reload(self, intents: AsrIntents) -> None:  # noqa: B027 - optional hook
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

    def start_stream_for(self, site: str) -> AsrStream:
        """Begin incremental decoding of a new utterance from `site`; backends that keep
        state per site (pocketsphinx's cepstral mean) override this."""
        return self.start_stream()
