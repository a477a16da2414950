"""`asr.backend: wyoming`: speech-to-text on any Wyoming server (Home Assistant's protocol).

wyoming-faster-whisper, whisper.cpp's Wyoming server, speech-to-phrase, or another voiced
(`voiced wyoming-server`). One connection per utterance, as Home Assistant does: `transcribe`,
`audio-start`, the audio in `audio-chunk`s *while the person speaks* (the stream is fed as
audio arrives), `audio-stop`, then the `transcript`. A server that announces
`supports_transcript_streaming` sends `transcript-chunk`s before it; they become voiced's
partial transcripts. Wyoming carries no confidence: a non-empty transcript counts as 1.0,
an empty one as not speech.

The calls block (the inference engine's threads run them), on plain sockets with the
`wyoming` package's own event reader and writer. Connect and answer timeouts come from
`asr.wyoming`; a failure hands the utterance to the fallback (voiced.asr.remote), and a new
connection is made for the next one, so a restarted server is picked up by itself.
"""

from __future__ import annotations

import logging
import select
import socket
import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlparse

from voiced.asr.remote import RemoteClient, RemoteStream
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from wyoming.event import Event
    from wyoming.info import Info

    from voiced.config import WyomingAsrConfig

log = logging.getLogger(__name__)

CHUNK_BYTES = SAMPLE_RATE * SAMPLE_WIDTH // 10
"""Largest audio-chunk sent (100 ms)."""


class _Connection:
    """One socket with buffered event reading and writing."""

    def __init__(self, uri: str, connect_timeout: float, timeout: float) -> None:
        parsed = urlparse(uri)
        if parsed.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(connect_timeout)
            try:
                sock.connect(parsed.path)
            except OSError:
                sock.close()
                raise
        else:
            assert parsed.hostname and parsed.port
            sock = socket.create_connection((parsed.hostname, parsed.port),
                                            timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        self.sock = sock
        # unbuffered: nothing hides in a buffer from `readable()` (events are small lines)
        self.reader = sock.makefile("rb", buffering=0)
        self.writer = sock.makefile("wb")

    def write(self, event: Event) -> None:
        from wyoming.event import write_event

        write_event(event, cast(BinaryIO, self.writer))

    def read(self, timeout: float) -> Event:
        """The next event; ConnectionError at end of stream or on garbage."""
        from wyoming.event import read_event

        self.sock.settimeout(max(0.001, timeout))
        event = read_event(cast(BinaryIO, self.reader))
        if event is None:
            raise ConnectionError("the server closed the connection (or sent a bad event)")
        return event

    def readable(self) -> bool:
        """True when bytes wait on the socket (the reader buffers nothing)."""
        ready, _, _ = select.select([self.sock], [], [], 0)
        return bool(ready)

    def close(self) -> None:
        for part in (self.reader, self.writer, self.sock):
            try:
                part.close()
            except OSError:
                pass


class WyomingClient(RemoteClient):
    """Talks to one Wyoming speech-to-text server."""

    kind = "wyoming"

    def __init__(self, config: WyomingAsrConfig, language: str) -> None:
        self.config = config
        self.target = config.uri
        self.language = None if language.lower() == "auto" else language
        self.info: Info | None = None
        self.program: str | None = None
        self.streams_transcripts = False

    def _connect(self) -> _Connection:
        return _Connection(self.config.uri, self.config.connect_timeout_s,
                           self.config.timeout_s)

    def probe(self) -> None:
        """Ask the server what it offers (`describe` → `info`)."""
        from wyoming.info import Describe, Info

        conn = self._connect()
        try:
            conn.write(Describe().event())
            deadline = time.monotonic() + self.config.timeout_s
            while True:
                event = conn.read(deadline - time.monotonic())
                if Info.is_type(event.type):
                    info = Info.from_event(event)
                    break
        finally:
            conn.close()
        programs = [p for p in info.asr if p.installed]
        if not programs:
            raise AsrError("wyoming_no_asr", f"{self.target} offers no speech-to-text")
        wanted = self.config.model
        models = [m.name for p in programs for m in p.models]
        if wanted is not None and wanted not in models:
            raise AsrError("wyoming_model", f"{self.target} has no model {wanted!r} "
                           f"(it has {', '.join(models) or 'none'})")
        chosen = next((p for p in programs if wanted in [m.name for m in p.models]),
                      programs[0])
        self.info = info
        self.program = chosen.name
        self.streams_transcripts = bool(chosen.supports_transcript_streaming)

    @property
    def supports_streaming(self) -> bool:
        """Wyoming always streams the audio."""
        return True

    def start_stream(self) -> RemoteStream:
        """Connect and announce the utterance (`transcribe`, `audio-start`)."""
        if self.info is None:
            self.probe()
        return WyomingStream(self, self._connect())

    def transcribe(self, pcm: bytes) -> Transcript:
        """The whole utterance at once, through a stream."""
        stream = self.start_stream()
        try:
            stream.feed(pcm)
            return stream.finish()
        finally:
            stream.close()

    def status(self) -> dict[str, Any]:
        """The server's program and whether it streams transcripts."""
        return {"program": self.program, "streams_transcripts": self.streams_transcripts}


class WyomingStream(RemoteStream):
    """One utterance on its own connection."""

    def __init__(self, client: WyomingClient, conn: _Connection) -> None:
        from wyoming.asr import Transcribe
        from wyoming.audio import AudioStart

        self._client = client
        self._conn = conn
        self._chunks: list[str] = []
        self._language: str | None = None
        self._final: Transcript | None = None
        self._timestamp = 0
        try:
            conn.write(Transcribe(name=client.config.model,
                                  language=client.language).event())
            conn.write(AudioStart(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=1,
                                  timestamp=0).event())
        except Exception:
            conn.close()
            raise

    def feed(self, pcm: bytes) -> None:
        from wyoming.audio import AudioChunk

        for start in range(0, len(pcm), CHUNK_BYTES):
            part = pcm[start : start + CHUNK_BYTES]
            self._conn.write(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=1,
                                        audio=part, timestamp=self._timestamp).event())
            self._timestamp += len(part) * 1000 // (SAMPLE_RATE * SAMPLE_WIDTH)
        if self._client.streams_transcripts:
            while self._final is None and self._conn.readable():
                self._take(self._conn.read(self._client.config.timeout_s))

    def _take(self, event: Event) -> None:
        from wyoming.asr import Transcript as WyTranscript
        from wyoming.asr import TranscriptChunk, TranscriptStart

        if TranscriptStart.is_type(event.type):
            self._language = TranscriptStart.from_event(event).language or self._language
        elif TranscriptChunk.is_type(event.type):
            self._chunks.append(TranscriptChunk.from_event(event).text)
        elif WyTranscript.is_type(event.type):
            got = WyTranscript.from_event(event)
            text = (got.text or "").strip()
            language = got.language or self._language or self._client.language or "en"
            self._final = Transcript(text=text, confidence=1.0 if text else 0.0,
                                     language=language.lower(), tokens=tuple(text.split()),
                                     is_speech=bool(text))

    def partial(self) -> str | None:
        text = "".join(self._chunks).strip()
        return text or None

    def finish(self) -> Transcript:
        from wyoming.audio import AudioStop

        self._conn.write(AudioStop(timestamp=self._timestamp).event())
        deadline = time.monotonic() + self._client.config.timeout_s
        while self._final is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no transcript within {self._client.config.timeout_s} s")
            self._take(self._conn.read(remaining))
        self.close()
        return self._final

    def close(self) -> None:
        self._conn.close()
