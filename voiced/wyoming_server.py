"""voiced's recognizer and intents as a Wyoming service (`voiced wyoming-server`).

Home Assistant (or any Wyoming client) can use voiced as its speech-to-text and its
intent recognizer:

- `describe` → `info`: one ASR program (`voiced`, its backend as the model, the intents'
  languages) and one intent program;
- `transcribe`, `audio-start`, `audio-chunk`…, `audio-stop` → `transcript`: the audio
  (any rate/width/channels within bounds, converted to 16 kHz mono 16-bit) goes through the
  same `AsrService` as the daemon's: fed to the recognizer while it arrives where the
  backend streams (pocketsphinx), or batched with other connections' utterances that end
  together (Whisper). Audio judged not speech gives an empty transcript;
- `recognize` → `intent` (with the slots as entities) or `not-recognized`.

Wyoming has no authentication: the server binds to loopback unless told otherwise, and
offers only recognition (nothing is acted on). Hostile input gets an `error` event naming
what was wrong and the connection goes on; where the stream cannot be read further (a header
that is not a JSON object, lengths that are not integers or over the limits below, a
deadline missed) the `error` is followed by the end of the connection. Nothing here stops
the server, and each connection is a task the server owns: a client that hangs up is one
log line, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from wyoming.event import Event
from wyoming.server import AsyncEventHandler

from voiced import __version__
from voiced.const import SAMPLE_RATE, SAMPLE_WIDTH
from voiced.wyoming_wire import MAX_HEADER_BYTES, BadEvent, read_event

if TYPE_CHECKING:
    from voiced.asr.base import AsrStream
    from voiced.asr.service import AsrService
    from voiced.feeds import StreamingFeed
    from voiced.inference import InferenceEngine
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

MAX_AUDIO_S = 60.0
"""Longest utterance accepted on one `transcribe` (seconds)."""
MAX_TEXT = 2000
"""Longest text accepted by `recognize` (characters)."""
EVENT_TIMEOUT_S = 30.0
"""A connection that completes no event for this long is closed (seconds)."""
AUDIO_GAP_S = 5.0
"""An utterance (after `audio-start` or audio) whose next event takes longer than this is
dropped and the connection closed (seconds)."""
WRITE_TIMEOUT_S = 10.0
"""A client that takes no reply for this long is disconnected (seconds)."""
MAX_CONNECTIONS = 32
"""Connections served at once; more are refused with `error` `overloaded`."""
LOG_INTERVAL_S = 2.0
"""Refused input is logged once per code per interval; the rest are counted."""
URL = "https://github.com/rhasspy/wyoming"


class WyomingService:
    """What every connection shares: the ASR service and the intents."""

    def __init__(self, asr: AsrService, recognizer: IntentRecognizer | None,
                 engine: InferenceEngine, backend: str) -> None:
        self.asr = asr
        self.recognizer = recognizer
        self.engine = engine
        self.backend = backend
        self.transcribed = 0
        self.recognized = 0
        self.errors = 0
        self.logs_suppressed = 0
        self._logged: dict[str, tuple[float, int]] = {}

    def refused(self, peer: str, code: str, text: str) -> None:
        """Log refused input or a dropped connection: the first of each code per
        `LOG_INTERVAL_S`, the rest counted (a client must not flood the log)."""
        now = time.monotonic()
        last, skipped = self._logged.get(code, (-LOG_INTERVAL_S, 0))
        if now - last < LOG_INTERVAL_S:
            self._logged[code] = (last, skipped + 1)
            self.logs_suppressed += 1
            return
        self._logged[code] = (now, 0)
        log.info("wyoming: %s: %s: %s%s", peer, code, text,
                 f" ({skipped} more not logged)" if skipped else "")

    def languages(self) -> list[str]:
        if self.recognizer is None:
            return ["en"]
        return [r.language for r in self.recognizer.languages()]

    def info(self) -> Event:
        """The `info` event: one ASR program and one intent program."""
        from wyoming.info import (
            AsrModel,
            AsrProgram,
            Attribution,
            Info,
            IntentModel,
            IntentProgram,
        )

        who = Attribution(name="voiced", url=URL)
        langs = self.languages()
        asr = AsrProgram(
            name="voiced", attribution=who, installed=True, version=__version__,
            description=f"voiced speech recognition ({self.backend})",
            models=[AsrModel(name=self.backend, attribution=who, installed=True,
                             description=f"voiced {self.backend}", version=__version__,
                             languages=langs)],
            supports_transcript_streaming=False)
        intent = IntentProgram(
            name="voiced", attribution=who, installed=True, version=__version__,
            description="voiced intents (hassil sentences)",
            models=[IntentModel(name="voiced-intents", attribution=who, installed=True,
                                description="the intents voiced loaded",
                                version=__version__, languages=langs)])
        return Info(asr=[asr], intent=[intent] if self.recognizer else []).event()


class VoicedHandler(AsyncEventHandler):
    """One Wyoming connection."""

    def __init__(self, service: WyomingService, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.service = service
        self._language: str | None = None
        self._pcm = bytearray()
        self._feed: StreamingFeed[AsrStream] | None = None
        self._converter: Any = None
        self._started = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    async def _error(self, code: str, text: str) -> None:
        from wyoming.error import Error

        self.service.errors += 1
        self.service.refused(self.peer, code, text)
        await self.write_event(Error(text=text, code=code).event())

    async def write_event(self, event: Event) -> None:
        """Send `event`; TimeoutError when the client takes none of it in time."""
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await super().write_event(event)

    async def run(self) -> None:
        """Serve events until the client leaves, breaks the framing or misses a deadline
        (`EVENT_TIMEOUT_S`, `AUDIO_GAP_S` in an utterance); each end is one log line."""
        try:
            while True:
                in_utterance = self._started or bool(self._pcm)
                wait = AUDIO_GAP_S if in_utterance else EVENT_TIMEOUT_S
                try:
                    async with asyncio.timeout(wait):
                        event = await read_event(self.reader)
                except TimeoutError:
                    await self._error(*(("audio_timeout", f"the audio stopped for more than "
                                         f"{wait:g} s") if in_utterance else
                                        ("timeout", f"no complete event within {wait:g} s")))
                    break
                except BadEvent as exc:
                    await self._error(exc.code, exc.text)
                    if exc.fatal:
                        break
                    continue
                if event is None or not await self.handle_event(event):
                    break
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            self.service.refused(self.peer, "hung_up", f"the client went away ({exc!r})")
        except TimeoutError:  # from write_event: its replies pile up unread
            self.service.refused(self.peer, "write_timeout", "the client read no reply for "
                                 f"{WRITE_TIMEOUT_S:g} s: disconnected")
            self.writer.transport.abort()
        except Exception:
            log.exception("wyoming: connection %s failed", self.peer)
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        from wyoming.asr import Transcribe
        from wyoming.audio import AudioChunk, AudioStart, AudioStop
        from wyoming.info import Describe
        from wyoming.intent import Recognize

        try:
            if Describe.is_type(event.type):
                await self.write_event(self.service.info())
            elif Transcribe.is_type(event.type):
                language = Transcribe.from_event(event).language
                self._language = language if isinstance(language, str) else None
                await self._reset()
            elif AudioStart.is_type(event.type):
                await self._reset()
                self._started = True
            elif AudioChunk.is_type(event.type):
                await self._audio(AudioChunk.from_event(event))
            elif AudioStop.is_type(event.type):
                await self._transcribe()
            elif Recognize.is_type(event.type):
                await self._recognize(event)
            # other events are dropped, as Wyoming servers do
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            await self._error("event_invalid", f"{event.type[:40]!r}: {exc!r}"[:300])
        return True

    async def _reset(self) -> None:
        if self._feed is not None:
            await self._feed.aclose()
        self._feed = None
        self._pcm.clear()
        self._converter = None
        self._started = False

    async def _audio(self, chunk: Any) -> None:
        from wyoming.audio import AudioChunkConverter

        rate, width, channels = chunk.rate, chunk.width, chunk.channels
        if not (isinstance(rate, int) and 8000 <= rate <= 192_000 and width in (1, 2, 4)
                and isinstance(channels, int) and 1 <= channels <= 8):
            await self._error("audio_format", "audio-chunk needs rate 8000-192000, width "
                              f"1, 2 or 4 and 1-8 channels (got {rate!r}, {width!r}, "
                              f"{channels!r})"[:300])
            return
        if not chunk.audio or len(chunk.audio) % (width * channels):
            await self._error("audio_partial_frame", "audio-chunk is empty or holds a "
                              "partial sample frame")
            return
        if self._converter is None:
            self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=SAMPLE_WIDTH,
                                                  channels=1)
        pcm = self._converter.convert(chunk).audio
        if len(self._pcm) + len(pcm) > MAX_AUDIO_S * SAMPLE_RATE * SAMPLE_WIDTH:
            await self._error("audio_too_long", f"more than {MAX_AUDIO_S:g} s of audio")
            await self._reset()
            return
        self._pcm += pcm
        asr = self.service.asr
        if asr.streaming and self._feed is None:
            from voiced.feeds import StreamingFeed

            self._feed = StreamingFeed(self.service.engine, asr.start_stream,
                                       name="wyoming-asr")
        if self._feed is not None:
            self._feed.push(pcm)

    async def _transcribe(self) -> None:
        from wyoming.asr import Transcript as WyTranscript

        if not self._pcm:
            await self._reset()
            await self.write_event(WyTranscript(text="", language=self._language).event())
            return
        pcm, feed = bytes(self._pcm), self._feed
        self._feed = None
        try:
            transcript = await self.service.asr.transcribe(pcm, feed)
        except Exception as exc:
            if feed is not None:
                await feed.aclose()
            await self._reset()
            await self._error("asr_failed", f"speech recognition failed: {exc}"[:300])
            return
        await self._reset()
        self.service.transcribed += 1
        text = transcript.text if transcript.is_speech else ""
        await self.write_event(WyTranscript(text=text, language=transcript.language).event())

    async def _recognize(self, event: Event) -> None:
        from wyoming.intent import Entity, Intent, NotRecognized, Recognize

        request = Recognize.from_event(event)
        if not isinstance(request.text, str) or len(request.text) > MAX_TEXT:
            await self._error("text_invalid", f"recognize needs text of at most {MAX_TEXT} "
                              "characters")
            return
        recognizer = self.service.recognizer
        if recognizer is None:
            await self.write_event(NotRecognized(text="no intents are loaded").event())
            return
        context: dict[str, Any] = {}
        language = (request.context or {}).get("language") if isinstance(
            request.context, dict) else None
        if isinstance(language, str):
            context["language"] = language
        elif self._language:
            context["language"] = self._language
        result = await self.service.engine.run(recognizer.recognize, request.text, context)
        if result.name is None:
            await self.write_event(NotRecognized(text=request.text).event())
            return
        self.service.recognized += 1
        entities = [Entity(name=s.name, value=_plain(s.value)) for s in result.slots]
        await self.write_event(Intent(name=result.name, entities=entities).event())

    async def disconnect(self) -> None:
        await self._reset()


def _plain(value: Any) -> Any:
    """A slot value as JSON can carry it."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class WyomingServer:
    """The TCP server; `await start()`, then `await stop()`. It owns one task per
    connection, at most `MAX_CONNECTIONS`."""

    def __init__(self, service: WyomingService, host: str, port: int) -> None:
        self.service = service
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.overloaded = 0
        """Connections refused because `MAX_CONNECTIONS` were being served."""
        self._zeroconf: Any = None

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    async def start(self) -> None:
        """Listen (port 0: any free port, then `port` holds it)."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=MAX_HEADER_BYTES)
        if self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("wyoming: voiced's recognizer on tcp://%s:%d", self.host, self.port)

    async def announce(self, name: str | None, host: str | None) -> None:
        """Announce `_wyoming._tcp` over zeroconf (mDNS) for Home Assistant's discovery."""
        from wyoming.zeroconf import HomeAssistantZeroconf

        self._zeroconf = HomeAssistantZeroconf(port=self.port, name=name, host=host)
        await self._zeroconf.register_server()
        log.info("wyoming: announced over zeroconf as %s", self._zeroconf.name)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = VoicedHandler(self.service, reader, writer)
        if len(self._connections) >= MAX_CONNECTIONS:
            self.overloaded += 1
            text = f"the server is serving {MAX_CONNECTIONS} connections; try again later"
            self.service.refused(handler.peer, "overloaded", text)
            # one short line: the socket's buffer takes it, nothing to wait for
            writer.write(json.dumps({"type": "error", "data": {
                "text": text, "code": "overloaded"}}).encode() + b"\n")
            writer.close()
            return
        task = asyncio.create_task(handler.run(), name=f"wyoming {handler.peer}")
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def stop(self) -> None:
        """Close the listening socket and every connection."""
        if self._server is not None:
            self._server.close()
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._zeroconf is not None:
            await self._zeroconf._aiozc.async_close()
