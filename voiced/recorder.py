"""The history writer: an event subscriber that turns each utterance's OUTCOME into one row
of the SQLite history and, with `history.keep_audio`, keeps its audio.

Audio goes to `<state_dir>/audio/<YYYY-MM-DD>/<session>.flac` (or .wav), linked from the
row by a path relative to the state folder. After each write the budget is enforced: files
older than `audio_max_days` and, oldest first, beyond `audio_max_mb` are deleted and their
rows unlinked. The row is written before the session's end is announced, so whoever
hears `sessionEnded` finds the row.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from voiced.config import HistoryConfig
from voiced.const import SAMPLE_RATE
from voiced.events import Subscriber
from voiced.inference import InferenceEngine
from voiced.models import EventType, PipelineEvent
from voiced.storage import History, UtteranceRecord

log = logging.getLogger(__name__)

AUDIO_FOLDER = "audio"


def encode_audio(pcm: bytes, fmt: str) -> bytes:
    """16 kHz 16-bit mono PCM as a FLAC or WAV file."""
    if fmt == "wav":
        from voiced.audio.wav import build_wav

        return build_wav(pcm)
    import numpy as np
    import soundfile

    out = io.BytesIO()
    soundfile.write(out, np.frombuffer(pcm, dtype="<i2"), SAMPLE_RATE, format="FLAC",
                    subtype="PCM_16")
    return out.getvalue()


class HistoryWriter(Subscriber):
    """One history row per utterance run (and its audio, when kept)."""

    name = "history"

    def __init__(self, history: History, config: HistoryConfig, state_dir: Path,
                 engine: InferenceEngine) -> None:
        self.history = history
        self._config = config
        self._state_dir = state_dir
        self._engine = engine
        self.rows = 0
        self.audio_files = 0
        self.audio_pruned = 0
        self.listeners: list[Callable[[UtteranceRecord], None]] = []
        """Called with each stored row (its id set), on the writer's thread (the review
        queue: voiced.review)."""

    async def handle(self, event: PipelineEvent) -> None:
        """Record an OUTCOME event; other events are not rows."""
        if event.type != EventType.OUTCOME or event.utterance is None:
            return
        await self._engine.run(self._write, event)

    def _write(self, event: PipelineEvent) -> None:
        utt = event.utterance
        assert utt is not None
        transcript, result, speaker = event.transcript, event.result, event.speaker
        audio_path, audio_bytes = None, None
        if self._config.keep_audio and utt.pcm:
            try:
                audio_path, audio_bytes = self._keep_audio(utt.session_id, utt.started_wall,
                                                           utt.pcm)
            except OSError:
                log.exception("site %s: could not keep the utterance's audio", utt.site)
        record = UtteranceRecord(
            site=utt.site, session_id=utt.session_id, started_at=utt.started_wall,
            ended_at=utt.started_wall + utt.duration_s,
            text=transcript.text if transcript else "",
            confidence=transcript.confidence if transcript else 0.0,
            language=transcript.language if transcript else "",
            intent=result.name if result else None,
            slots=result.slot_values() if result else {},
            speaker=speaker.name if speaker is not None else None,
            speaker_confidence=speaker.confidence if speaker is not None else None,
            outcome=str(event.data.get("outcome")), outcome_detail=event.data.get("detail"),
            timings_ms={str(k): round(v, 2) for k, v in event.timings_ms.items()},
            end_reason=str(utt.end_reason), audio_path=audio_path, audio_bytes=audio_bytes)
        row_id = self.history.add_utterance(record)
        self.rows += 1
        for listener in self.listeners:
            listener(replace(record, id=row_id))
        if audio_path is not None:
            self._prune()

    def _keep_audio(self, session_id: str, started: float, pcm: bytes) -> tuple[str, int]:
        fmt = self._config.audio_format
        day = time.strftime("%Y-%m-%d", time.localtime(started))
        root = self._state_dir / AUDIO_FOLDER
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = root / day
        folder.mkdir(exist_ok=True, mode=0o700)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in session_id)[:80]
        name = f"{int(started * 1000)}-{safe}.{fmt}"
        data = encode_audio(pcm, fmt)
        target = folder / name
        partial = target.with_suffix(target.suffix + ".part")
        partial.write_bytes(data)
        os.replace(partial, target)  # never a half-written file under the final name
        self.audio_files += 1
        return str(target.relative_to(self._state_dir)), len(data)

    def _prune(self) -> None:
        cfg = self._config
        doomed = self.history.audio_over_budget(int(cfg.audio_max_mb * 1024 * 1024),
                                                time.time() - cfg.audio_max_days * 86400)
        if not doomed:
            return
        for _, relative in doomed:
            try:
                (self._state_dir / relative).unlink(missing_ok=True)
            except OSError:
                log.exception("could not delete kept audio %s", relative)
        self.history.forget_audio([i for i, _ in doomed])
        self.audio_pruned += len(doomed)
        log.info("kept audio over budget: deleted %d oldest files", len(doomed))

    def audio_file(self, record: UtteranceRecord) -> Path | None:
        """The kept audio of a history row, if it still exists."""
        if record.audio_path is None:
            return None
        path = self._state_dir / record.audio_path
        return path if path.is_file() else None
