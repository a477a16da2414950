"""A recognizer on another machine, with the local one as its fallback.

`RemoteTranscriber` wraps a remote client (`RemoteClient`: a Wyoming server, a Ray Serve
deployment) and an optional local `Transcriber`. Each utterance goes to the remote one;
when it cannot be reached or fails, that utterance is transcribed here instead, and for
`asr.remote_retry_s` after a failure every utterance goes straight to the fallback (no
timeout per command while the remote is down). Then the remote is tried again, and the
first success brings it back. Every remote transcript, fallback and failure is counted
(`status()`, shown as `asr_remote` in `voiced/status` and `/api/status`).

A stream keeps the utterance's audio, so a remote failure at any point (connect, feed,
final answer) still ends in a transcript from the fallback.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from voiced.asr.base import AsrIntents, AsrStream, Transcriber
from voiced.errors import AsrError
from voiced.models import Transcript

log = logging.getLogger(__name__)


class RemoteStream(AsrStream):
    """One utterance streamed to the remote recognizer (blocking, like any `AsrStream`);
    any exception means the remote failed and the fallback takes the kept audio."""


class RemoteClient(ABC):
    """What a remote recognizer offers; every call blocks and raises on failure."""

    kind: str = "remote"
    target: str = ""
    """Where it is (a URI), for status and logs."""

    def probe(self) -> None:  # noqa: B027 - optional hook
        """Check that the remote answers (start-up); raise when it does not."""

    @abstractmethod
    def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one whole utterance."""

    @property
    def supports_streaming(self) -> bool:
        """True when `start_stream` sends audio while the person speaks."""
        return False

    def start_stream(self) -> RemoteStream:
        """Open a stream for one utterance."""
        raise NotImplementedError

    def reload(self, intents: AsrIntents) -> None:  # noqa: B027 - optional hook
        """The intents changed (a prompt built from them, say)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def status(self) -> dict[str, Any]:
        """Backend-specific figures for `asr_remote`."""
        return {}


class RemoteTranscriber(Transcriber):
    """A remote recognizer, the local fallback, and the counts of both."""

    def __init__(self, client: RemoteClient, fallback: Transcriber | None,
                 retry_s: float) -> None:
        self.client = client
        self.fallback = fallback
        self.name = client.kind
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self.remote = 0
        """Utterances the remote recognizer transcribed."""
        self.fallbacks = 0
        """Utterances the fallback transcribed because the remote could not."""
        self.failures = 0
        """Remote attempts that failed (unreachable, timed out, refused, bad answer)."""
        self.recoveries = 0
        """Times the remote answered again after being down."""
        self.last_error: str | None = None
        self._down_since: float | None = None
        self._retry_at = 0.0

    # ---- state --------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """False from a failure until the remote answers again."""
        return self._down_since is None

    def _should_try(self) -> bool:
        with self._lock:
            return self._down_since is None or time.monotonic() >= self._retry_at

    def _succeeded(self) -> None:
        with self._lock:
            self.remote += 1
            if self._down_since is not None:
                self.recoveries += 1
                log.warning("%s recognizer %s answers again (down %.1f s)", self.name,
                            self.client.target, time.monotonic() - self._down_since)
                self._down_since = None

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"[:300]
        with self._lock:
            self.failures += 1
            self.last_error = text
            now = time.monotonic()
            self._retry_at = now + self.retry_s
            first = self._down_since is None
            if first:
                self._down_since = now
        if first:
            log.warning("%s recognizer %s failed (%s); %s for %.0f s before trying again",
                        self.name, self.client.target, text,
                        f"using {self.fallback.name}" if self.fallback else "no fallback",
                        self.retry_s)

    def _fall_back(self, pcm: bytes) -> Transcript:
        if self.fallback is None:
            raise AsrError("asr_unreachable", f"the {self.name} recognizer at "
                           f"{self.client.target} is unavailable ({self.last_error}) and "
                           "asr.fallback is none")
        with self._lock:
            self.fallbacks += 1
        return self.fallback.transcribe(pcm)

    def status(self) -> dict[str, Any]:
        """For `voiced/status` and `/api/status` (`asr_remote`)."""
        with self._lock:
            down = self._down_since
            return {
                "backend": self.name, "target": self.client.target,
                "state": "up" if down is None else "down",
                "down_s": None if down is None else round(time.monotonic() - down, 1),
                "remote": self.remote, "fallbacks": self.fallbacks,
                "failures": self.failures, "recoveries": self.recoveries,
                "fallback": self.fallback.name if self.fallback else None,
                "last_error": self.last_error, **self.client.status(),
            }

    # ---- Transcriber ----------------------------------------------------------------
    def load(self) -> None:
        """Load the fallback, then check the remote (a remote that is down is no
        start-up error: the fallback serves until it answers)."""
        if self.fallback is not None:
            self.fallback.load()
        try:
            self.client.probe()
        except Exception as exc:
            self._failed(exc)
        else:
            log.info("%s recognizer at %s answers", self.name, self.client.target)

    def reload(self, intents: AsrIntents) -> None:
        """New intents for both recognizers."""
        self.client.reload(intents)
        if self.fallback is not None:
            self.fallback.reload(intents)

    def close(self) -> None:
        """Release the client and the fallback."""
        self.client.close()
        if self.fallback is not None:
            self.fallback.close()

    @property
    def supports_streaming(self) -> bool:
        """Audio goes to the remote while the person speaks, where its protocol can."""
        return self.client.supports_streaming

    def transcribe(self, pcm: bytes) -> Transcript:
        """The remote's transcript, or the fallback's when the remote cannot answer."""
        if self._should_try():
            try:
                transcript = self.client.transcribe(pcm)
            except Exception as exc:
                self._failed(exc)
            else:
                self._succeeded()
                return transcript
        return self._fall_back(pcm)

    def transcribe_batch(self, pcms: Sequence[bytes]) -> list[Transcript]:
        """One call per utterance (a remote batches on its side)."""
        return [self.transcribe(p) for p in pcms]

    def start_stream(self) -> AsrStream:
        """A stream to the remote that keeps the audio for the fallback."""
        return _FallbackStream(self)


class _FallbackStream(AsrStream):
    """Streams to the remote while it works; the kept audio goes to the fallback when not."""

    def __init__(self, owner: RemoteTranscriber) -> None:
        self._owner = owner
        self._audio = bytearray()
        self._remote: RemoteStream | None = None
        if owner._should_try():
            try:
                self._remote = owner.client.start_stream()
            except Exception as exc:
                owner._failed(exc)

    def feed(self, pcm: bytes) -> None:
        self._audio += pcm
        if self._remote is None:
            return
        try:
            self._remote.feed(pcm)
        except Exception as exc:
            self._drop(exc)

    def partial(self) -> str | None:
        return self._remote.partial() if self._remote is not None else None

    def finish(self) -> Transcript:
        if self._remote is not None:
            try:
                transcript = self._remote.finish()
            except Exception as exc:
                self._drop(exc)
            else:
                self._remote.close()
                self._remote = None
                self._owner._succeeded()
                return transcript
        return self._owner._fall_back(bytes(self._audio))

    def _drop(self, exc: BaseException) -> None:
        self._owner._failed(exc)
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()
            self._remote = None
