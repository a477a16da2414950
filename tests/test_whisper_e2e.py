"""The daemon with the Whisper backend selected: a small random-weight checkpoint of the
real architecture, loaded by the real loader, over a real mosquitto. Two satellites that
finish speaking together are decoded in one batch."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from support import FIXTURES, Mosquitto, make_config, running_daemon

from voiced.asr.whisper_models import write_random_checkpoint
from voiced.audio.wav import read_wav_file
from voiced.satellite import Satellite

pytestmark = pytest.mark.slow


async def test_whisper_backend_end_to_end_batches_sites(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny-random.pt"
    write_random_checkpoint("tiny", checkpoint)
    config = make_config(tmp_path, mosquitto.port,
                         asr={"backend": "whisper", "model": str(checkpoint), "device": "cpu",
                              "compute": "fp32", "max_tokens": 4, "batch_window_ms": 300,
                              "min_confidence": 0.0, "language": "en"})
    entry = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][0]
    pcm = read_wav_file(FIXTURES / entry["file"])
    async with running_daemon(config) as daemon:
        assert daemon.transcriber is not None and daemon.transcriber.supports_batching

        async def speak(site: str) -> object:
            async with Satellite("127.0.0.1", mosquitto.port, site) as sat:
                return await sat.command(pcm, timeout=120)

        answers = await asyncio.gather(speak("attic"), speak("cellar"))
        for answer in answers:
            # random weights transcribe gibberish: it must still flow through the pipeline
            assert answer.text is not None  # type: ignore[attr-defined]
            assert answer.termination in ("intentNotRecognized", "nominal")  # type: ignore[attr-defined]
        assert daemon.pipeline is not None
        batches = daemon.pipeline._batcher.history  # type: ignore[union-attr]
        assert sum(b.size for b in batches) == 2
        assert max(b.size for b in batches) == 2, batches
