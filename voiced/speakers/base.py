"""The `SpeakerEmbedder` backend interface, shared helpers and the backend factory.

An embedder turns one utterance (internal-format PCM, see `voiced.const`) into a fixed-size,
L2-normalized vector; cosine similarity between two vectors is then a plain dot product.
`start_stream` embeds an utterance as it arrives (`EmbeddingStream`); backends that cannot
do the work early buffer the audio and embed it at the end.
`model_id` names the exact model that made a vector (backend and weights), so vectors made
by different models are never compared: the store keeps it next to every enrollment.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from voiced.const import BYTES_PER_SECOND, SAMPLE_WIDTH

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]
"""One L2-normalized embedding."""

Backend = Literal["resemblyzer", "speechbrain"]


class SpeakerEmbedder(ABC):
    """A speaker-embedding model. `embed` is the one required method.

    Methods are blocking and are called through the inference engine, never on the event
    loop. Heavy imports happen in `load()`, which is called once before readiness.
    """

    name: str = "embedder"
    default_threshold: float = 0.5
    """Cosine score that separates a person from a stranger when nothing is calibrated."""

    def __init__(self) -> None:
        self._model_id: str | None = None

    @property
    def model_id(self) -> str:
        """Identifies the model (backend and weights) that makes this embedder's vectors.

        Known only after `load()`: it includes a digest of the weights.
        """
        if self._model_id is None:
            raise RuntimeError(f"{self.name}: model_id is known after load()")
        return self._model_id

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load the model and warm it up."""

    def peek_model_id(self) -> str | None:
        """The model id without loading the model, when the weights are at hand."""
        return self._model_id

    @abstractmethod
    def embed(self, pcm: bytes) -> Vector:
        """The L2-normalized embedding of one utterance."""

    def embed_batch(self, pcms: Sequence[bytes]) -> list[Vector]:
        """Embeddings of several utterances, in order; backends that batch override this."""
        return [self.embed(p) for p in pcms]

    @property
    def supports_batching(self) -> bool:
        """True when `embed_batch` is faster than one `embed` call per utterance."""
        return False

    @property
    def supports_streaming(self) -> bool:
        """True when `start_stream` does the embedding work while audio arrives."""
        return False

    def start_stream(self) -> EmbeddingStream:
        """A stream for one utterance; this default buffers it and embeds it at the end."""
        return BufferedStream(self)


class EmbeddingStream(ABC):
    """One utterance embedded as its audio arrives: `feed` any number of times, then
    `finish` once. Blocking, like the embedder's methods; one call at a time per stream.

    `finish` returns the vector `embed` would return for all the PCM fed (the streaming
    implementation documents how closely).
    """

    feed_bytes = 0
    """Audio the stream can use per `feed` (bytes): a caller may hold back smaller pieces
    until this much has arrived, or until the end (`voiced.feeds.StreamingFeed` does)."""

    @abstractmethod
    def feed(self, pcm: bytes) -> None:
        """More internal-format PCM, in any chunk size."""

    @abstractmethod
    def finish(self) -> Vector:
        """The L2-normalized embedding of everything fed."""

    def close(self) -> None:  # noqa: B027 (optional: most streams hold nothing)
        """The utterance was abandoned before `finish`: release what the stream holds."""


class BufferedStream(EmbeddingStream):
    """Keeps the audio and embeds it whole at `finish` (backends without streaming)."""

    feed_bytes = BYTES_PER_SECOND

    def __init__(self, embedder: SpeakerEmbedder) -> None:
        self._embedder = embedder
        self._pcm = bytearray()

    def feed(self, pcm: bytes) -> None:
        """Keep `pcm`."""
        self._pcm.extend(pcm)

    def finish(self) -> Vector:
        """The whole utterance's embedding."""
        return self._embedder.embed(bytes(self._pcm))


def pcm_to_float(pcm: bytes) -> npt.NDArray[np.float32]:
    """Internal-format PCM as float32 samples in [-1, 1)."""
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH
    samples = np.frombuffer(pcm[:usable], dtype="<i2")
    return (samples.astype(np.float32) / 32768.0).astype(np.float32)


def l2_normalize(vector: npt.ArrayLike) -> Vector:
    """`vector` scaled to unit length (a zero vector stays zero)."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    return v if norm == 0.0 else (v / norm).astype(np.float32)


def file_digest(path: Path, length: int = 16) -> str:
    """Short SHA-256 hex digest of a file's bytes (identifies model weights)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def resolve_device(device: str) -> str:
    """"auto" becomes "cuda" when torch sees a GPU, else "cpu"; others pass through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
