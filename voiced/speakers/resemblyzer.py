"""resemblyzer: the embedded default speaker encoder (its weights ship inside the wheel).

A 3-layer LSTM over 40-band mel frames, 256-dimensional output. An utterance is cut into
1.6 s partial windows; the utterance vector is the normalized mean of the partials. A batch
of utterances runs as one forward pass over all their partials. `start_stream` computes the
partials while the utterance is spoken (`voiced.speakers.streaming`), batched across every
open stream by the embedder's `LstmBatcher` (`voiced.speakers.batching`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voiced.const import SAMPLE_RATE
from voiced.errors import SpeakerError
from voiced.speakers.base import (
    EmbeddingStream,
    SpeakerEmbedder,
    Vector,
    file_digest,
    l2_normalize,
    pcm_to_float,
    resolve_device,
)
from voiced.speakers.batching import LstmBatcher

log = logging.getLogger(__name__)

PARTIAL_RATE = 1.3
"""Partial windows per second of speech (resemblyzer's default)."""
MIN_COVERAGE = 0.75
"""A last partial window shorter than this fraction of 1.6 s is dropped."""
MIN_TRIMMED_S = 0.3
"""After silence trimming, keep the untrimmed audio when less than this remains."""
CPU_THREADS = 1
"""torch's intra-op threads when the model runs on the CPU (a process-wide setting).

voiced runs model work for many satellites on parallel engine threads; splitting each
small LSTM call over the cores only makes the threads wait for each other: on the loaded
2-core development machine streaming cost 85 ms of CPU per second of audio with torch's
default (2 threads) and 14 ms with 1. `OMP_NUM_THREADS`, when set, is left to decide."""


class ResemblyzerEmbedder(SpeakerEmbedder):
    """resemblyzer's `VoiceEncoder`, with real batching across utterances."""

    name = "resemblyzer"
    default_threshold = 0.75

    def __init__(self, weights: Path | None = None, device: str = "auto") -> None:
        super().__init__()
        self._weights = weights
        self._device = device
        self._encoder: Any = None
        self._batcher: LstmBatcher | None = None

    def load(self) -> None:
        """Load the encoder (from the wheel unless other weights were given) and warm up."""
        try:
            import resemblyzer
            from resemblyzer import VoiceEncoder
        except ImportError as exc:
            raise SpeakerError(
                "backend_missing",
                "resemblyzer is not installed: run `make setup` (it installs uv.lock)",
            ) from exc
        weights = self._weights or Path(resemblyzer.__file__).resolve().parent / "pretrained.pt"
        if not weights.is_file():
            raise SpeakerError("model_missing", f"resemblyzer weights not found: {weights}")
        device = resolve_device(self._device)
        if device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            import torch

            if torch.get_num_threads() != CPU_THREADS:
                log.info("torch: %d CPU thread(s) per call instead of %d (many small calls "
                         "run in parallel)", CPU_THREADS, torch.get_num_threads())
                torch.set_num_threads(CPU_THREADS)
        started = time.monotonic()
        self._encoder = VoiceEncoder(device, verbose=False, weights_fpath=weights)
        self._encoder.eval()
        self._batcher = LstmBatcher(self._encoder)
        self._model_id = self.peek_model_id()
        # the first forward pass allocates; do it before readiness, not on a command
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(SAMPLE_RATE) * 1000).astype("<i2").tobytes()
        self.embed(noise)
        log.info("resemblyzer loaded on %s in %.2f s (model %s)", device,
                 time.monotonic() - started, self._model_id)

    def peek_model_id(self) -> str | None:
        """`resemblyzer:<digest of the weights>`, without loading them."""
        if self._model_id is None:
            weights = self._weights
            if weights is None:
                import importlib.util

                spec = importlib.util.find_spec("resemblyzer")
                if spec is None or spec.origin is None:
                    return None
                weights = Path(spec.origin).resolve().parent / "pretrained.pt"
            if not weights.is_file():
                return None
            self._model_id = f"resemblyzer:{file_digest(weights)}"
        return self._model_id

    @property
    def supports_batching(self) -> bool:
        """One forward pass covers every utterance of a batch."""
        return True

    @property
    def supports_streaming(self) -> bool:
        """Partial windows are embedded as soon as their audio is final."""
        return True

    @property
    def encoder(self) -> Any:
        """The loaded `VoiceEncoder`."""
        if self._encoder is None:
            raise RuntimeError("resemblyzer: load() first")
        return self._encoder

    @property
    def batcher(self) -> LstmBatcher:
        """Batches the LSTM work of every stream of this embedder."""
        if self._batcher is None:
            raise RuntimeError("resemblyzer: load() first")
        return self._batcher

    def start_stream(self) -> EmbeddingStream:
        """A `ResemblyzerStream`: `finish` leaves only the utterance's last window to do."""
        from voiced.speakers.streaming import ResemblyzerStream

        return ResemblyzerStream(self)

    def embed(self, pcm: bytes) -> Vector:
        """The embedding of one utterance."""
        return self.embed_batch([pcm])[0]

    def embed_batch(self, pcms: Sequence[bytes]) -> list[Vector]:
        """Embeddings of several utterances from one forward pass over all partials."""
        if self._encoder is None:
            raise RuntimeError("resemblyzer: load() first")
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        all_mels: list[npt.NDArray[np.float32]] = []
        counts: list[int] = []
        for pcm in pcms:
            wav = self._prepare(pcm)
            wav_slices, mel_slices = self._encoder.compute_partial_slices(
                len(wav), PARTIAL_RATE, MIN_COVERAGE
            )
            end = wav_slices[-1].stop
            if end >= len(wav):
                wav = np.pad(wav, (0, end - len(wav)), "constant")
            mel = wav_to_mel_spectrogram(wav)
            all_mels.extend(mel[s] for s in mel_slices)
            counts.append(len(mel_slices))
        with torch.no_grad():
            batch = torch.from_numpy(np.stack(all_mels)).to(self._encoder.device)
            partials = self._encoder(batch).cpu().numpy()
        out: list[Vector] = []
        start = 0
        for n in counts:
            out.append(l2_normalize(partials[start : start + n].mean(axis=0)))
            start += n
        return out

    @staticmethod
    def _prepare(pcm: bytes) -> npt.NDArray[np.float32]:
        """Volume-normalized samples with long silences trimmed (resemblyzer's own steps)."""
        from resemblyzer.audio import normalize_volume, trim_long_silences
        from resemblyzer.hparams import audio_norm_target_dBFS

        wav = pcm_to_float(pcm)
        if wav.size == 0:
            wav = np.zeros(SAMPLE_RATE // 10, dtype=np.float32)
        if np.any(wav):  # digital silence has no level to normalize (log of zero)
            wav = normalize_volume(wav, audio_norm_target_dBFS, increase_only=True)
        trimmed = trim_long_silences(wav)
        if len(trimmed) >= MIN_TRIMMED_S * SAMPLE_RATE:
            wav = trimmed
        return np.asarray(wav, dtype=np.float32)
