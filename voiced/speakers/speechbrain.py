"""speechbrain ECAPA-TDNN: the primary speaker encoder (192-dimensional, GPU or CPU).

`model` is either a hub id (default `speechbrain/spkrec-ecapa-voxceleb`), downloaded on first
use into `<state_dir>/models/<id>` and loaded from there with no network afterwards, or a
local checkpoint folder (`hyperparams.yaml`, `embedding_model.ckpt`,
`mean_var_norm_emb.ckpt`, `classifier.ckpt`, `label_encoder.txt`).

The hub's `hyperparams.yaml` sets `pretrained_path: speechbrain/spkrec-ecapa-voxceleb`, and
speechbrain's `Pretrainer` resolves every checkpoint against that path even when `source`
is a local folder, so it would reach for the hub. Loading a folder therefore always
overrides `pretrained_path` with the folder itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voiced.const import SAMPLE_RATE
from voiced.errors import SpeakerError
from voiced.speakers.base import (
    SpeakerEmbedder,
    Vector,
    file_digest,
    l2_normalize,
    pcm_to_float,
    resolve_device,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "speechbrain/spkrec-ecapa-voxceleb"
HPARAMS_FILE = "hyperparams.yaml"
WEIGHT_FILES = ("embedding_model.ckpt", "mean_var_norm_emb.ckpt")
"""The checkpoints that shape the embedding (the classifier head does not)."""


def model_savedir(state_dir: Path, hub_id: str) -> Path:
    """Where a hub model is downloaded to: `<state_dir>/models/<owner>--<name>`."""
    return state_dir / "models" / hub_id.replace("/", "--")


def _is_complete(folder: Path) -> bool:
    return (folder / HPARAMS_FILE).is_file() and (folder / WEIGHT_FILES[0]).is_file()


class SpeechbrainEmbedder(SpeakerEmbedder):
    """speechbrain's `EncoderClassifier` (ECAPA-TDNN), batched with padding."""

    name = "speechbrain"
    default_threshold = 0.30

    def __init__(
        self, model: str | None = None, device: str = "auto", state_dir: Path = Path("state")
    ) -> None:
        super().__init__()
        self._model = model or DEFAULT_MODEL
        self._device = device
        self._state_dir = state_dir
        self._classifier: Any = None
        self.source_dir: Path | None = None
        """The folder the checkpoints were loaded from (after `load()`)."""

    def _local_folder(self) -> Path | None:
        """The folder to load from without any network, if there is one."""
        path = Path(self._model).expanduser()
        if path.is_dir():
            return path.resolve()
        if path.is_absolute() or self._model.startswith("."):
            raise SpeakerError("model_missing", f"speechbrain model folder not found: {path}")
        saved = model_savedir(self._state_dir, self._model)
        return saved.resolve() if _is_complete(saved) else None

    def load(self) -> None:
        """Load from the local folder (or download from the hub once), then warm up."""
        try:
            from speechbrain.inference.speaker import EncoderClassifier
            from speechbrain.utils.fetching import LocalStrategy
        except ImportError as exc:
            raise SpeakerError("backend_missing", "speechbrain is not installed") from exc
        device = resolve_device(self._device)
        started = time.monotonic()
        folder = self._local_folder()
        try:
            if folder is not None:
                if not (folder / HPARAMS_FILE).is_file():
                    raise SpeakerError(
                        "model_missing", f"{folder} has no {HPARAMS_FILE}: not a speechbrain model"
                    )
                classifier = EncoderClassifier.from_hparams(
                    source=str(folder),
                    savedir=str(folder),
                    overrides={"pretrained_path": str(folder)},
                    run_opts={"device": device},
                    # use the files where they are: no copies, no links, no fetching
                    local_strategy=LocalStrategy.NO_LINK,
                )
            else:
                folder = model_savedir(self._state_dir, self._model).resolve()
                folder.mkdir(parents=True, exist_ok=True)
                log.info("downloading speaker model %s into %s", self._model, folder)
                try:
                    classifier = EncoderClassifier.from_hparams(
                        source=self._model,
                        savedir=str(folder),
                        run_opts={"device": device},
                        local_strategy=LocalStrategy.COPY_SKIP_CACHE,
                    )
                except Exception as exc:
                    raise SpeakerError(
                        "model_download_failed",
                        f"could not download {self._model} into {folder} ({exc}); without "
                        "network, copy the model files (hyperparams.yaml, embedding_model.ckpt, "
                        "mean_var_norm_emb.ckpt, classifier.ckpt, label_encoder.txt) there, or "
                        "set speakers.model to the folder that holds them",
                    ) from exc
        except SpeakerError:
            raise
        except Exception as exc:
            raise SpeakerError(
                "model_load_failed", f"speechbrain model {self._model}: {exc}"
            ) from exc
        if classifier is None:
            raise SpeakerError("model_load_failed", f"speechbrain model {self._model}: not loaded")
        classifier.eval()
        self._classifier = classifier
        self.source_dir = folder
        self._model_id = f"speechbrain:{self._weights_digest(folder)}"
        rng = np.random.default_rng(0)
        self.embed((rng.standard_normal(SAMPLE_RATE) * 1000).astype("<i2").tobytes())
        log.info("speechbrain loaded from %s on %s in %.2f s (model %s)", folder, device,
                 time.monotonic() - started, self._model_id)

    def peek_model_id(self) -> str | None:
        """The model id from the local or downloaded folder, without loading it."""
        if self._model_id is None:
            try:
                folder = self._local_folder()
            except SpeakerError:
                return None
            if folder is None or not (folder / HPARAMS_FILE).is_file():
                return None
            self._model_id = f"speechbrain:{self._weights_digest(folder)}"
        return self._model_id

    @staticmethod
    def _weights_digest(folder: Path) -> str:
        """Digest of the weights that shape the embedding (what makes vectors comparable)."""
        parts = [f"{name}={file_digest(folder / name)}" for name in WEIGHT_FILES
                 if (folder / name).is_file()]
        if not parts:  # a model laid out differently: its hyperparameters identify it
            parts = [f"{HPARAMS_FILE}={file_digest(folder / HPARAMS_FILE)}"]
        return hashlib.sha256(";".join(parts).encode()).hexdigest()[:16]

    @property
    def supports_batching(self) -> bool:
        """Utterances are padded and run as one batch."""
        return True

    def embed(self, pcm: bytes) -> Vector:
        """The embedding of one utterance."""
        return self.embed_batch([pcm])[0]

    def embed_batch(self, pcms: Sequence[bytes]) -> list[Vector]:
        """Embeddings of several utterances from one padded forward pass."""
        if self._classifier is None:
            raise RuntimeError("speechbrain: load() first")
        import torch

        wavs = [pcm_to_float(p) for p in pcms]
        # very short input breaks the convolutions; 0.1 s of padding is harmless
        longest = max(max(len(w) for w in wavs), SAMPLE_RATE // 10)
        batch = np.zeros((len(wavs), longest), dtype=np.float32)
        lens = np.zeros(len(wavs), dtype=np.float32)
        for i, w in enumerate(wavs):
            batch[i, : len(w)] = w
            lens[i] = max(len(w), SAMPLE_RATE // 10) / longest
        with torch.no_grad():
            out = self._classifier.encode_batch(torch.from_numpy(batch), torch.from_numpy(lens))
        vectors = out.reshape(len(wavs), -1).detach().cpu().numpy()
        return [l2_normalize(v) for v in vectors]
