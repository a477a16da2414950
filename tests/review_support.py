"""Corrected review items on a real state folder, for the dataset and fine-tuning tests:
espeak-ng speech kept as FLAC by the history, queued, and corrected through the queue."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from support import REPO

from voiced.audio.wav import read_wav_file
from voiced.config import Config
from voiced.intents.catalog import load_catalog
from voiced.models import Outcome
from voiced.recorder import encode_audio
from voiced.review import Correction, ReviewQueue
from voiced.storage import History, UtteranceRecord

VOICES = ("en-us", "en-us+f2", "en-us+m2", "en-gb-x-rp", "en-us+m1", "en-us+f4")


def espeak(text: str, voice: str = "en-us") -> bytes:
    """16 kHz 16-bit mono PCM of `text` spoken by espeak-ng."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       timeout=60)
        return read_wav_file(wav)


def review_config(state_dir: Path) -> Config:
    return Config.model_validate({"state_dir": str(state_dir),
                                  "intents": {"paths": [str(REPO / "config" / "intents")]},
                                  "history": {"keep_audio": True}})


def corrected_state(state_dir: Path, entries: Sequence[tuple[str, str, str | None,
                                                             dict[str, Any], str | None]],
                    heard: str = "") -> Config:
    """A state folder whose review queue holds one corrected item per entry:
    (text spoken and corrected, espeak voice, intent or None, slots, speaker or None)."""
    config = review_config(state_dir)
    history = History(state_dir / "voiced.db")
    review = ReviewQueue(config, history)
    recognizer = load_catalog(config)
    try:
        for number, (text, voice, intent, slots, speaker) in enumerate(entries):
            relative = f"audio/2026-01-01/{number}.flac"
            (state_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (state_dir / relative).write_bytes(encode_audio(espeak(text, voice), "flac"))
            record = UtteranceRecord(
                site="kitchen", session_id=f"s{number}", started_at=time.time() - 60 + number,
                ended_at=time.time(), text=heard, confidence=0.2, language="en", intent=None,
                slots={}, speaker=None, speaker_confidence=None,
                outcome=Outcome.NOT_RECOGNIZED, outcome_detail="no_match", timings_ms={},
                end_reason="silence", audio_path=relative, audio_bytes=1)
            row = history.add_utterance(record)
            item, _ = review.add(history.get(row), "no_match")  # type: ignore[arg-type]
            review.correct(item.id, Correction(text, intent=intent, slots=slots,
                                               not_command=intent is None, speaker=speaker,
                                               by="test"), recognizer)
    finally:
        review.close()
        history.close()
    return config
