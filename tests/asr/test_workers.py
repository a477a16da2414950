"""pocketsphinx in worker processes: same transcripts as in-process, reload, and a clear
error when a worker dies."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from voiced.asr.pocketsphinx import PocketsphinxTranscriber
from voiced.asr.workers import PooledTranscriber
from voiced.audio.wav import read_wav_file
from voiced.config import AsrConfig
from voiced.errors import AsrError
from voiced.intents.recognizer import IntentRecognizer

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def test_pool_matches_in_process_and_reloads(tmp_path: Path) -> None:
    intents = IntentRecognizer.load([REPO / "config" / "intents"])
    entries = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][:6]
    local = PocketsphinxTranscriber(AsrConfig(), intents)
    local.load()
    pool = PooledTranscriber(AsrConfig(), intents, processes=2)
    pool.load()
    try:
        for entry in entries:
            pcm = read_wav_file(FIXTURES / entry["file"])
            # each side warms its cepstral mean the same way: whole, then streamed
            want = local.transcribe(pcm)
            stream = pool.start_stream()
            for i in range(0, len(pcm), 3200):
                stream.feed(pcm[i:i + 3200])
            got = stream.finish()
            assert got.text == want.text, entry["file"]
            assert intents.recognize(got.text, {"speaker": "alice"}).name == entry["intent"]
        abandoned = pool.start_stream()
        abandoned.feed(bytes(3200))
        abandoned.close()
        assert all(w.active == 0 for w in pool._workers)

        # after a reload the workers hear the new sentences
        extra = tmp_path / "extra.yaml"
        extra.write_text("language: en\nintents:\n  Shout:\n    data:\n"
                         "      - sentences: ['open the pod bay doors']\n")
        bigger = IntentRecognizer.load([REPO / "config" / "intents", extra])
        pool.reload(bigger)
        assert bigger.recognize("open the pod bay doors").name == "Shout"

        os.kill(pool._workers[0].process.pid, signal.SIGKILL)
        pool._workers[0].process.join(5)
        with pytest.raises(AsrError, match="stopped"):
            for _ in range(2):  # the least busy worker may be the live one first
                stream = pool.start_stream()
                stream.feed(bytes(3200))
    finally:
        pool.close()
