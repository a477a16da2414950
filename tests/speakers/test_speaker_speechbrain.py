"""The speechbrain path: a locally built ECAPA folder (random weights, the real architecture
and hyperparameters) loads through speechbrain's own loader with the network unreachable.

"Unreachable" is enforced, not assumed: HF_HUB_OFFLINE=1, and a Python audit hook records
every socket created, connected or resolved while the model loads and embeds. The hook
cannot be removed once added, so it records only while a test switches it on.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import speechbrain  # noqa: F401  (a dependency: a broken install fails here, never skips)

from voiced.config import SpeakersConfig
from voiced.errors import SpeakerError
from voiced.speakers.enrollment import enroll
from voiced.speakers.service import SpeakerService
from voiced.speakers.speechbrain import DEFAULT_MODEL, SpeechbrainEmbedder, model_savedir
from voiced.speakers.store import SpeakerStore

_recording: list[list[str]] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _recording and event.split(".")[0] == "socket":
        _recording[-1].append(f"{event} {args!r:.120}")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Offline hub settings, and every socket operation recorded while the test runs."""
    import speechbrain.inference.speaker  # noqa: F401 - its import probes IPv6 locally

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if _audit not in _HOOKED:
        sys.addaudithook(_audit)
        _HOOKED.append(_audit)
    events: list[str] = []
    _recording.append(events)
    try:
        yield events
    finally:
        _recording.remove(events)


_HOOKED: list[object] = []


def noise(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(16000 * seconds)) * 3000).astype("<i2").tobytes()


def test_the_audit_hook_sees_sockets(no_network: list[str]) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM):
        pass
    assert any(e.startswith("socket.__new__") for e in no_network)
    no_network.clear()


def test_local_folder_loads_offline_through_speechbrain(
    ecapa_folder: Path, tmp_path: Path, no_network: list[str]
) -> None:
    embedder = SpeechbrainEmbedder(model=str(ecapa_folder), device="cpu", state_dir=tmp_path)
    peeked = embedder.peek_model_id()
    embedder.load()
    assert embedder.model_id == peeked
    vectors = embedder.embed_batch([noise(1.0, 1), noise(2.5, 2)])
    assert no_network == []
    assert [v.shape for v in vectors] == [(192,), (192,)]
    assert all(float(np.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5) for v in vectors)
    assert embedder.model_id.startswith("speechbrain:")
    assert embedder.source_dir == ecapa_folder.resolve()
    # the loaded weights are the folder's: the real ECAPA-TDNN, 1024 channels
    model = embedder._classifier.mods.embedding_model
    assert type(model).__name__ == "ECAPA_TDNN"
    import torch

    saved = torch.load(ecapa_folder / "embedding_model.ckpt", map_location="cpu")
    name, tensor = next(iter(saved.items()))
    assert torch.equal(model.state_dict()[name], tensor)
    # nothing was written into the model folder
    assert sorted(p.name for p in ecapa_folder.iterdir()) == sorted(
        ["hyperparams.yaml", "embedding_model.ckpt", "mean_var_norm_emb.ckpt",
         "classifier.ckpt", "label_encoder.txt"])


def test_downloaded_hub_model_is_used_without_network(
    ecapa_folder: Path, tmp_path: Path, no_network: list[str]
) -> None:
    # what a first run leaves behind: the hub files in <state>/models/<id>, whose
    # hyperparams.yaml still names the hub as pretrained_path
    saved = model_savedir(tmp_path, DEFAULT_MODEL)
    shutil.copytree(ecapa_folder, saved)
    assert "pretrained_path: speechbrain/spkrec-ecapa-voxceleb" in (
        saved / "hyperparams.yaml").read_text()
    embedder = SpeechbrainEmbedder(model=None, device="cpu", state_dir=tmp_path)
    embedder.load()
    assert embedder.source_dir == saved.resolve()
    assert embedder.embed(noise(1.0, 3)).shape == (192,)
    assert no_network == []


def test_model_id_follows_the_weights(ecapa_folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in ("embedding_model.ckpt", "mean_var_norm_emb.ckpt"):
        shutil.copy(ecapa_folder / name, other / name)
    assert SpeechbrainEmbedder._weights_digest(other) == SpeechbrainEmbedder._weights_digest(
        ecapa_folder)
    import torch

    state = torch.load(other / "embedding_model.ckpt", map_location="cpu")
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, other / "embedding_model.ckpt")
    assert SpeechbrainEmbedder._weights_digest(other) != SpeechbrainEmbedder._weights_digest(
        ecapa_folder)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    embedder = SpeechbrainEmbedder(model=str(tmp_path / "nope"), device="cpu",
                                   state_dir=tmp_path)
    with pytest.raises(SpeakerError) as err:
        embedder.load()
    assert err.value.code == "model_missing"


def test_switching_models_asks_for_reenrollment(
    ecapa_folder: Path, tmp_path: Path, resemblyzer_embedder: object, make_wavs: object
) -> None:
    from voiced.audio.wav import read_wav_file

    files, _ = make_wavs("flite-awb", n_enroll=2, n_test=0)  # type: ignore[operator]
    samples = [read_wav_file(f) for f in files]
    store = SpeakerStore.open(tmp_path)
    assert enroll(resemblyzer_embedder, store, "awb", samples).ok  # type: ignore[arg-type]
    ecapa = SpeechbrainEmbedder(model=str(ecapa_folder), device="cpu", state_dir=tmp_path)
    service = SpeakerService(SpeakersConfig(backend="speechbrain"), ecapa, store)
    service.load()
    assert service.store.stale(service.model_id) == ["awb"]
    # identification never compares the 256-d resemblyzer vectors with ECAPA ones
    assert service.identify_batch(samples[:1])[0].scores == {}
    with pytest.raises(SpeakerError) as err:
        enroll(ecapa, store, "awb", samples)
    assert err.value.code == "model_changed"
    result = enroll(ecapa, store, "awb", samples, replace=True)
    assert result.ok and result.total == 2
    assert set(service.identify_batch(samples[:1])[0].scores) == {"awb"}
    store.close()


def test_hub_model_not_downloaded_offline_says_what_to_do(
    tmp_path: Path, no_network: list[str]
) -> None:
    embedder = SpeechbrainEmbedder(model=None, device="cpu", state_dir=tmp_path)
    assert embedder.peek_model_id() is None
    with pytest.raises(SpeakerError) as err:
        embedder.load()
    assert err.value.code == "model_download_failed"
    assert "set speakers.model to the folder" in err.value.message
    assert not [e for e in no_network if "connect" in e or "getaddrinfo" in e]
