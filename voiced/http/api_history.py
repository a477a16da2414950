"""The utterance history over HTTP: GET /api/history, /api/history/{id}, .../audio.

Reads run on the inference engine's threads (SQLite is blocking); kept audio is served
as a file (with ranges, so a player can seek), only from the state folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from voiced.http import params
from voiced.http.errors import ApiError
from voiced.http.keys import DAEMON
from voiced.models import Outcome
from voiced.sites import safe_repr
from voiced.storage import UtteranceRecord

QUERY = frozenset({"site", "intent", "outcome", "speaker", "q", "since", "until", "limit",
                   "offset"})
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
AUDIO_TYPES = {".flac": "audio/flac", ".wav": "audio/wav"}


def _history(request: web.Request) -> Any:
    daemon = request.app[DAEMON]
    if daemon.history is None:
        raise ApiError(409, "history_off", "the history is off (history.enabled: false in "
                       "voiced.yaml)")
    return daemon


def record_json(record: UtteranceRecord) -> dict[str, Any]:
    """One history row as the API shows it."""
    return {
        "id": record.id, "site": record.site, "session_id": record.session_id,
        "started_at": record.started_at, "ended_at": record.ended_at, "text": record.text,
        "confidence": record.confidence, "language": record.language,
        "intent": record.intent, "slots": dict(record.slots), "speaker": record.speaker,
        "speaker_confidence": record.speaker_confidence, "outcome": record.outcome,
        "detail": record.outcome_detail, "timings": dict(record.timings_ms),
        "end_reason": record.end_reason,
        "audio": f"/api/history/{record.id}/audio" if record.audio_path else None,
        "audio_bytes": record.audio_bytes,
    }


async def history(request: web.Request) -> web.Response:
    """The newest utterances first, filtered and paged."""
    daemon = _history(request)
    q = params.merged(request.query, {}, QUERY)
    outcome = params.text(q.get("outcome"), "outcome", max_len=32)
    if outcome is not None and outcome not in {str(o) for o in Outcome}:
        raise params.invalid("outcome", f"{safe_repr(outcome)}; expected one of "
                             + ", ".join(str(o) for o in Outcome))
    filters = {
        "site": params.site(q.get("site"), default=None),
        "intent": params.text(q.get("intent"), "intent", max_len=200),
        "outcome": outcome,
        "speaker": params.name(q.get("speaker"), "speaker"),
        "text": params.text(q.get("q"), "q", max_len=200),
        "since": params.timestamp(q.get("since"), "since"),
        "until": params.timestamp(q.get("until"), "until"),
    }
    limit = params.integer(q.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = params.integer(q.get("offset"), "offset", 0, 0, 2**31)
    records, total = await daemon.engine.run(
        lambda: daemon.history.query(**filters, limit=limit, offset=offset))
    return web.json_response({"items": [record_json(r) for r in records], "total": total,
                              "limit": limit, "offset": offset})


async def _record(request: web.Request) -> tuple[Any, UtteranceRecord]:
    daemon = _history(request)
    raw = request.match_info["id"]
    record_id = params.integer(raw, "id", 0, 1, 2**63 - 1)
    record = await daemon.engine.run(daemon.history.get, record_id)
    if record is None:
        raise ApiError(404, "not_found", f"no utterance {record_id} in the history", field="id")
    return daemon, record


async def history_item(request: web.Request) -> web.Response:
    """One utterance."""
    _, record = await _record(request)
    return web.json_response(record_json(record))


async def history_audio(request: web.Request) -> web.StreamResponse:
    """The utterance's kept audio (FLAC or WAV)."""
    daemon, record = await _record(request)
    path = _audio_path(daemon, record)
    if path is None:
        raise ApiError(404, "no_audio", f"utterance {record.id} has no kept audio "
                       "(history.keep_audio was off, it was text, or it was pruned)",
                       field="id")
    kind = AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={
        "Content-Type": kind, "Cache-Control": "private, max-age=3600",
        "Content-Disposition": f'inline; filename="utterance-{record.id}{path.suffix}"'})


def _audio_path(daemon: Any, record: UtteranceRecord) -> Path | None:
    """The kept file, only when it lies inside the state folder's audio."""
    if daemon.writer is None:
        return None
    path = daemon.writer.audio_file(record)
    if path is None:
        return None
    root = daemon.config.state_dir.resolve()
    resolved = path.resolve()
    return resolved if resolved.is_relative_to(root) else None


def setup(app: web.Application) -> None:
    """Register the history routes."""
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/history/{id}", history_item)
    app.router.add_get("/api/history/{id}/audio", history_audio)
