"""The ASR service: owns the recognizer backend, its batching, its streams and its reload.

Shaped like the speaker service: the pipeline asks it for a transcript of an utterance
(using the stream fed while the person spoke, or a batch across sites) and never touches
the backend. It also holds `create_transcriber`, so the backends (which import base.py)
and the factory (which imports the backends) form no import cycle, and `asr_intents`: the
one place that reads the intent recognizer for the backends, which see only `AsrIntents`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from voiced.asr.base import AsrIntents, AsrStream, Transcriber
from voiced.feeds import StreamingFeed
from voiced.inference import InferenceEngine, MicroBatcher
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.config import AsrConfig
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)


def asr_intents(recognizer: IntentRecognizer) -> AsrIntents:
    """What the speech recognizers need of the loaded intents (see `AsrIntents`).

    Walks every language's templates for their vocabulary (tens of ms for Home
    Assistant's official sentences): `reload` runs it through the inference engine.
    """
    return AsrIntents(
        language=recognizer.language,
        intents=recognizer.intents,
        document=recognizer.document,
        vocabulary={r.language: frozenset(r.vocabulary()) for r in recognizer.languages()},
    )


def create_transcriber(
    config: AsrConfig, intents: AsrIntents | None, state_dir: Path
) -> Transcriber:
    """Build the configured backend (not yet loaded)."""
    if config.backend in ("wyoming", "ray"):
        return _remote_transcriber(config, intents, state_dir)
    if config.backend == "pocketsphinx":
        processes = config.processes or (os.cpu_count() or 1)
        if processes > 1:
            from voiced.asr.workers import PooledTranscriber

            return PooledTranscriber(config, intents, processes)
        from voiced.asr.pocketsphinx import PocketsphinxTranscriber

        return PocketsphinxTranscriber(config, intents)
    if config.backend == "whisper":
        from voiced.asr.whisper import WhisperTranscriber  # type: ignore[import-not-found]

        return WhisperTranscriber(config, intents, state_dir)  # type: ignore[no-any-return]
    raise ValueError(f"unknown asr backend {config.backend!r}")


def _remote_transcriber(config: AsrConfig, intents: AsrIntents | None,
                        state_dir: Path) -> Transcriber:
    """A Wyoming server or a Ray Serve cluster, with `asr.fallback` built here."""
    from voiced.asr.remote import RemoteClient, RemoteTranscriber

    client: RemoteClient
    if config.backend == "wyoming":
        from voiced.asr.wyoming import WyomingClient

        client = WyomingClient(config.wyoming, config.language)
    else:
        from voiced.asr.ray_backend import RayServeClient

        client = RayServeClient(config, intents)
    fallback = None
    if config.fallback != "none":
        local = config.model_copy(update={"backend": config.fallback})
        if config.fallback == "pocketsphinx" and config.language.lower() == "auto":
            local = local.model_copy(update={"language": "en"})
        fallback = create_transcriber(local, intents, state_dir)
    return RemoteTranscriber(client, fallback, config.remote_retry_s)


class AsrService:
    """Transcripts for utterances: streamed, batched or whole."""

    def __init__(self, transcriber: Transcriber, engine: InferenceEngine,
                 batch_window_s: float = 0.03, max_batch: int = 16) -> None:
        self.transcriber = transcriber
        self._engine = engine
        self.batcher: MicroBatcher[bytes, Transcript] | None = None
        if transcriber.supports_batching:
            self.batcher = MicroBatcher(engine, transcriber.transcribe_batch, batch_window_s,
                                        max_batch, name="asr")

    @classmethod
    def from_config(cls, config: AsrConfig, recognizer: IntentRecognizer | None,
                    state_dir: Path, engine: InferenceEngine) -> AsrService:
        """The configured backend for `recognizer`'s intents, wrapped (not yet loaded)."""
        intents = asr_intents(recognizer) if recognizer is not None else None
        return cls(create_transcriber(config, intents, state_dir), engine,
                   config.batch_window_ms / 1000, config.max_batch)

    @property
    def streaming(self) -> bool:
        """True when utterances are decoded while the person speaks."""
        return self.transcriber.supports_streaming

    def start_stream(self, site: str | None = None) -> AsrStream:
        """A new incremental decode, of `site`'s audio when given (blocking; called
        through the engine by a feed)."""
        if site is None:
            return self.transcriber.start_stream()
        return self.transcriber.start_stream_for(site)

    async def load(self) -> None:
        """Load and warm up the backend."""
        await self._engine.run(self.transcriber.load)

    async def transcribe(self, pcm: bytes, feed: StreamingFeed[AsrStream] | None) -> Transcript:
        """The final transcript of one utterance.

        With batching, the audio joins a batch across sites and the stream fed so far
        (only used for partials) is closed; otherwise the fed stream finishes, or the
        whole utterance is decoded at once.
        """
        if self.batcher is not None:
            if feed is None:
                return await self.batcher.submit(pcm)
            # join the batch now: releasing the stream waits for a partial decode in flight,
            # which must not delay this site's place in a batch with other sites
            closing = asyncio.ensure_future(feed.aclose())
            try:
                return await self.batcher.submit(pcm)
            finally:
                await closing
        if feed is not None:
            transcript: Transcript = await feed.conclude()
            return transcript
        return await self._engine.run(self.transcriber.transcribe, pcm)

    async def reload(self, recognizer: IntentRecognizer) -> None:
        """Rebuild what depends on the intents (grammar, prompt); raises on failure."""
        await self._engine.run(self._reload, recognizer)

    def _reload(self, recognizer: IntentRecognizer) -> None:
        self.transcriber.reload(asr_intents(recognizer))

    async def close(self) -> None:
        """Stop batching and release the backend (worker processes, models)."""
        if self.batcher is not None:
            await self.batcher.close()
        await self._engine.run(self.transcriber.close)
