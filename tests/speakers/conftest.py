"""Fixtures for speaker tests: synthetic real-speaker voices, a loaded resemblyzer, and a
locally built ECAPA checkpoint folder (random weights, the real architecture).

Reusable outside this folder: `speaker_wavs(voice, cache_dir, n_enroll, n_test)` returns
(enrollment WAVs, test WAVs) for a voice id from `voiced.speakers.voices.ALL_VOICES`, e.g.
"flite-awb" (enroll) and "flite-slt" (a stranger); the end-to-end MQTT test can call it
with its own tmp folder. Audio is synthesized once per session and cached.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voiced.config import SpeakersConfig
from voiced.inference import InferenceEngine
from voiced.speakers import voices
from voiced.speakers.base import Vector
from voiced.speakers.service import ServiceOptions, SpeakerService
from voiced.speakers.store import SpeakerStore

ECAPA_HPARAMS = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# (the hyperparameters of speechbrain/spkrec-ecapa-voxceleb; weights here are random)
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: speechbrain/spkrec-ecapa-voxceleb

# Output parameters
out_n_neurons: 7205

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [1024, 1024, 1024, 1024, 3072]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def build_ecapa_folder(folder: Path, seed: int = 0) -> Path:
    """Write an ECAPA checkpoint folder as the hub lays it out, with random weights.

    The modules are built from the real hyperparameters by HyperPyYAML and saved with
    speechbrain's own checkpoint formats, so speechbrain's loader reads them as it would
    read the downloaded model.
    """
    import torch
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(ECAPA_HPARAMS)
    torch.manual_seed(seed)
    hp = load_hyperpyyaml(ECAPA_HPARAMS)
    torch.save(hp["embedding_model"].state_dict(), folder / "embedding_model.ckpt")
    torch.save(hp["classifier"].state_dict(), folder / "classifier.ckpt")
    hp["mean_var_norm_emb"]._save(folder / "mean_var_norm_emb.ckpt")
    encoder = hp["label_encoder"]
    encoder.update_from_iterable([f"id{i:05d}" for i in range(7205)])
    encoder.save(folder / "label_encoder.txt")
    return folder


def need_synths(*synths: voices.Synth) -> None:
    """Fail clearly when a synthesizer that makes the test voices is not installed
    (`make test` installs them through .ci/system-deps)."""
    missing = [s for s in synths if not voices.synth_available(s)]
    if missing:
        pytest.fail(f"synthesizer not installed: {', '.join(missing)} "
                    "(run `make test`, which installs flite, festival and espeak-ng)")


def speaker_wavs(
    voice: str, cache_dir: Path, n_enroll: int = 5, n_test: int = 3
) -> tuple[list[Path], list[Path]]:
    """(enrollment WAVs, test WAVs) spoken by `voice` (an id in `voices.ALL_VOICES`)."""
    v = voices.ALL_VOICES[voice]
    need_synths(v.synth)
    return voices.enrollment_and_test(v, cache_dir, n_enroll=n_enroll, n_test=n_test)


@pytest.fixture(scope="session")
def voice_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of synthesized utterances for the whole test session."""
    return tmp_path_factory.mktemp("speaker-voices")


@pytest.fixture(scope="session")
def make_wavs(voice_cache: Path) -> Callable[..., tuple[list[Path], list[Path]]]:
    """`make_wavs(voice, n_enroll=5, n_test=3)` -> (enrollment WAVs, test WAVs), cached."""

    def make(voice: str, n_enroll: int = 5, n_test: int = 3) -> tuple[list[Path], list[Path]]:
        return speaker_wavs(voice, voice_cache, n_enroll, n_test)

    return make


@pytest.fixture(scope="session")
def resemblyzer_embedder() -> object:
    """resemblyzer loaded once (its weights ship in the wheel; CPU)."""
    from voiced.speakers.resemblyzer import ResemblyzerEmbedder

    embedder = ResemblyzerEmbedder(device="cpu")
    embedder.load()
    return embedder


@pytest.fixture(scope="session")
def embed_file(resemblyzer_embedder: object) -> Callable[[Path], Vector]:
    """Resemblyzer vector of a WAV file, computed once per file per session."""
    from voiced.audio.wav import read_wav_file
    from voiced.speakers.resemblyzer import ResemblyzerEmbedder

    assert isinstance(resemblyzer_embedder, ResemblyzerEmbedder)
    cache: dict[Path, Vector] = {}

    def embed(path: Path) -> Vector:
        if path not in cache:
            cache[path] = resemblyzer_embedder.embed(read_wav_file(path))
        return cache[path]

    return embed


@pytest.fixture(scope="session")
def ecapa_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A random-weight ECAPA checkpoint folder (about 90 MB), built once."""
    folder = build_ecapa_folder(tmp_path_factory.mktemp("ecapa") / "spkrec-ecapa-local")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)



@pytest.fixture
async def make_service(
    tmp_path: Path, resemblyzer_embedder: Any
) -> AsyncIterator[Callable[[ServiceOptions], Awaitable[SpeakerService]]]:
    """Loaded resemblyzer speaker services as the daemon builds them (threshold 0.78, a store
    in tmp_path, an inference engine of their own); closed after the test."""
    made: list[tuple[SpeakerService, InferenceEngine]] = []

    async def make(options: ServiceOptions) -> SpeakerService:
        engine = InferenceEngine(workers=2)
        service = SpeakerService(SpeakersConfig(backend="resemblyzer", threshold=0.78),
                                 resemblyzer_embedder, SpeakerStore.open(tmp_path), engine,
                                 options)
        made.append((service, engine))
        await asyncio.to_thread(service.load)
        return service

    yield make
    for service, engine in made:
        await service.close()
        engine.close()
