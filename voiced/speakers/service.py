"""The speaker stage for the daemon: embed an utterance, match it, optionally adapt.

`identify` goes through a `MicroBatcher` on the inference engine, so utterances ending at
about the same time on several satellites are embedded in one batched forward pass, and
the daemon can run it concurrently with speech recognition on the same utterance. The
profiles come from the enrollment store and are reloaded whenever the store changes (an
enrollment from the command line, a calibration), without restarting the daemon.

`start_stream` is the streaming form of `identify`: the daemon feeds the utterance's audio
as it is spoken and calls `finish` at the endpoint, where (with resemblyzer) only the last
partial window is left to embed. The streams' model work is batched across satellites by
the embedder (`voiced.speakers.batching`), both while people speak and at the endpoints.

The threshold is, in order: `speakers.threshold` from voiced.yaml, the one stored by
`voiced speakers calibrate` for the loaded model, the backend's default.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from voiced.const import BYTES_PER_SECOND, ms_to_bytes
from voiced.inference import InferenceEngine, MicroBatcher
from voiced.models import NO_SPEAKER, SpeakerMatch
from voiced.speakers.base import Backend, EmbeddingStream, SpeakerEmbedder, Vector
from voiced.speakers.enrollment import EnrollmentResult, enroll
from voiced.speakers.matching import Matcher
from voiced.speakers.quality import QualityLimits
from voiced.speakers.store import SpeakerStore

if TYPE_CHECKING:
    from voiced.config import SpeakersConfig

log = logging.getLogger(__name__)

MIN_IDENTIFY_MS = 300
"""Shorter utterances are not embedded: there is too little voice to tell who it is."""


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """Service settings beyond the threshold and margin.

    `from_config` reads each from SpeakersConfig where it has a field of that name.
    """

    adapt: bool = False
    """Let confidently identified utterances refine the person's profile."""
    adapt_keep: int = 20
    """Adapted vectors kept per person (the oldest go first)."""
    adapt_extra: float = 0.1
    """How far over the threshold (against the enrollment alone) an utterance must score."""
    batch_window_ms: float = 30.0
    """Utterances ending within this window on different sites are embedded as one batch."""
    max_batch: int = 16

    @classmethod
    def from_config(cls, config: SpeakersConfig) -> ServiceOptions:
        """The options set in `config`, defaults for the rest."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if hasattr(config, f.name)}
        return cls(**values)


class SpeakerService:
    """Speaker identification and enrollment for a running daemon."""

    def __init__(
        self,
        config: SpeakersConfig,
        embedder: SpeakerEmbedder,
        store: SpeakerStore,
        engine: InferenceEngine | None = None,
        options: ServiceOptions | None = None,
    ) -> None:
        self.config = config
        self.options = options or ServiceOptions.from_config(config)
        self.embedder = embedder
        self.store = store
        self._engine = engine
        self.engine = engine
        """Where the service's model work runs (its streams are fed there too)."""
        self._batcher: MicroBatcher[bytes, SpeakerMatch] | None = None
        if engine is not None:
            self._batcher = MicroBatcher(
                engine,
                self.identify_batch,
                window_s=self.options.batch_window_ms / 1000,
                max_batch=self.options.max_batch,
                name="speakers",
            )
        self._lock = threading.Lock()
        self._matcher = Matcher((), 1.0, config.margin)
        self._generation = -1
        self.adapted = 0
        """Vectors added by adaptation since start."""

    # blocking parts (load before readiness; the rest runs on the engine)

    def load(self) -> None:
        """Load the model, warm it up and read the profiles (blocking)."""
        self.embedder.load()
        matcher = self._current_matcher()
        stale = self.store.stale(self.embedder.model_id)
        if stale:
            log.warning(
                "speakers enrolled with another model cannot be identified until they "
                "enroll again (voiced speakers enroll NAME FILE... --replace): %s",
                ", ".join(stale),
            )
        log.info("speaker identification ready: %d people, threshold %.3f, margin %.3f",
                 len(matcher.profiles), matcher.threshold, matcher.margin)

    @property
    def model_id(self) -> str:
        """The loaded model's id."""
        return self.embedder.model_id

    def threshold(self) -> float:
        """The threshold in force (config, else calibrated, else backend default)."""
        if self.config.threshold is not None:
            return float(self.config.threshold)
        calibrated = self.store.calibrated_threshold(self.embedder.model_id)
        return calibrated if calibrated is not None else self.embedder.default_threshold

    def _current_matcher(self) -> Matcher:
        """The matcher, rebuilt when the store changed since it was built."""
        with self._lock:
            generation = self.store.generation()
            if generation != self._generation:
                profiles = tuple(self.store.profiles(self.embedder.model_id))
                self._matcher = Matcher(profiles, self.threshold(), self.config.margin)
                self._generation = generation
                log.debug("speaker profiles loaded: %s", ", ".join(p.name for p in profiles))
            return self._matcher

    def identify_batch(self, pcms: Sequence[bytes], adapt: bool = True) -> list[SpeakerMatch]:
        """Identify several utterances in one forward pass (blocking).

        With `adapt` and `speakers.adapt` on, confidently identified utterances refine the
        person's profile (bounded; `voiced speakers reset-adaptation` undoes it).
        """
        matcher = self._current_matcher()
        results: list[SpeakerMatch] = [NO_SPEAKER] * len(pcms)
        todo = [i for i, p in enumerate(pcms) if len(p) >= ms_to_bytes(MIN_IDENTIFY_MS)]
        if not matcher.profiles or not todo:
            return results
        vectors = self.embedder.embed_batch([pcms[i] for i in todo])
        for i, vector in zip(todo, vectors, strict=True):
            results[i] = self._conclude(matcher, vector, adapt)
        return results

    def _conclude(self, matcher: Matcher, vector: Vector, adapt: bool) -> SpeakerMatch:
        """Match one utterance's vector; adapt the profile when allowed and confident."""
        match = matcher.identify(vector)
        if adapt and self.options.adapt and matcher.may_adapt(vector, match,
                                                              self.options.adapt_extra):
            self.store.add_adapted(match.name, self.embedder.model_id, vector,
                                   keep=self.options.adapt_keep)
            self.adapted += 1
            log.debug("adapted %s's profile (score %.3f)", match.name, match.confidence)
        return match

    # the daemon's interface

    async def identify(self, pcm: bytes) -> SpeakerMatch:
        """Who spoke this utterance (internal-format PCM): batched across sites."""
        if self._batcher is None:
            raise RuntimeError("SpeakerService was created without an inference engine")
        return await self._batcher.submit(pcm)

    async def verify(self, pcm: bytes) -> SpeakerMatch:
        """Who spoke, for a security decision: never batched with other sites' audio and
        never used to adapt a profile."""
        if self._engine is None:
            raise RuntimeError("SpeakerService was created without an inference engine")
        matches = await self._engine.run(self.identify_batch, [pcm], False)
        return matches[0]

    async def similarity(self, first: bytes, second: bytes) -> float:
        """Cosine similarity of two utterances' voices (the embeddings are unit vectors)."""
        if self._engine is None:
            raise RuntimeError("SpeakerService was created without an inference engine")
        a, b = await self._engine.run(self.embedder.embed_batch, [first, second])
        return float(a @ b)

    def start_stream(self) -> SpeakerStream:
        """A stream for one utterance: feed its audio as it is spoken, `finish` at the end.

        Cheap (no model work, no store access): call it anywhere. When nobody is enrolled
        the stream only keeps the audio, so a household without profiles spends nothing.
        """
        embedding = self.embedder.start_stream() if self._matcher.profiles else None
        return SpeakerStream(self, embedding)

    async def enroll(
        self,
        name: str,
        pcms: Sequence[bytes],
        source: str | None = None,
        replace: bool = False,
        limits: QualityLimits | None = None,
    ) -> EnrollmentResult:
        """Enroll `name` from recorded utterances (e.g. "learn my voice" on a satellite).

        Quality-checked, all or nothing (see `voiced.speakers.enrollment.enroll`). Raises
        SpeakerError for a bad name, or for a person enrolled with another model when not
        `replace`.
        """
        if self._engine is None:
            raise RuntimeError("SpeakerService was created without an inference engine")
        return await self._engine.run(
            lambda: enroll(self.embedder, self.store, name, list(pcms),
                           sources=[source] * len(pcms), replace=replace, limits=limits)
        )

    async def close(self) -> None:
        """Stop batching and close the store."""
        if self._batcher is not None:
            await self._batcher.close()
        self.store.close()


class SpeakerStream:
    """`identify` for one utterance whose audio arrives in pieces.

    `feed` and `finish` are blocking: the daemon calls them through the inference engine,
    one at a time. The embedding work happens in `feed` as far as the backend can do it
    early (resemblyzer: every partial window but the last); `finish` does the rest, matches
    and adapts exactly as `identify` does for the same audio.
    """

    def __init__(self, service: SpeakerService, embedding: EmbeddingStream | None) -> None:
        self._service = service
        self._embedding = embedding
        self._pcm = bytearray()
        """The audio, kept only when nobody was enrolled at the start (no embedding)."""
        self._bytes = 0
        self._finished = False

    @property
    def feed_bytes(self) -> int:
        """Audio the stream can use per `feed` (`EmbeddingStream.feed_bytes`; without an
        embedding the audio is only kept, so a second at a time is plenty)."""
        return self._embedding.feed_bytes if self._embedding is not None else BYTES_PER_SECOND

    def feed(self, pcm: bytes) -> None:
        """More internal-format PCM (16 kHz, 16-bit, mono), in any chunk size."""
        if self._finished:
            raise RuntimeError("speaker stream: feed() after finish()")
        self._bytes += len(pcm)
        if self._embedding is not None:
            self._embedding.feed(pcm)
        else:
            self._pcm.extend(pcm)

    def close(self) -> None:
        """The utterance was abandoned (`StreamingFeed.aclose` calls this)."""
        self._finished = True
        if self._embedding is not None:
            self._embedding.close()

    def finish(self) -> SpeakerMatch:
        """Who spoke everything fed (`unknown` with confidence 0 when not sure)."""
        if self._finished:
            raise RuntimeError("speaker stream: finish() twice")
        self._finished = True
        service = self._service
        matcher = service._current_matcher()
        if not matcher.profiles or self._bytes < ms_to_bytes(MIN_IDENTIFY_MS):
            return NO_SPEAKER
        if self._embedding is not None:
            vector = self._embedding.finish()
        else:  # someone enrolled while this was spoken
            vector = service.embedder.embed(bytes(self._pcm))
        return service._conclude(matcher, vector, adapt=True)


def create_speaker_service(
    config: SpeakersConfig, state_dir: Path, engine: InferenceEngine | None
) -> SpeakerService | None:
    """The configured speaker stage (not yet loaded), or None when `backend` is "none"."""
    if config.backend == "none":
        return None
    embedder = create_embedder(config.backend, config.model, config.device, state_dir)
    return SpeakerService(config, embedder, SpeakerStore.open(state_dir), engine)


def create_embedder(
    backend: Backend, model: str | None, device: str, state_dir: Path
) -> SpeakerEmbedder:
    """Build the configured backend (not yet loaded).

    It lives here, not in base.py, so the backends (which import base) and the factory
    (which imports the backends) form no import cycle.

    `model`: for speechbrain a hub id or a local checkpoint folder; for resemblyzer an
    optional path to other encoder weights (default: the ones shipped in the wheel).
    """
    if backend == "resemblyzer":
        from voiced.speakers.resemblyzer import ResemblyzerEmbedder

        return ResemblyzerEmbedder(weights=Path(model) if model else None, device=device)
    if backend == "speechbrain":
        from voiced.speakers.speechbrain import SpeechbrainEmbedder

        return SpeechbrainEmbedder(model=model, device=device, state_dir=state_dir)
    raise ValueError(f"unknown speaker backend {backend!r}")
