"""SQLite storage in the state folder: utterance history (and, later, more tables).

One file, WAL mode (readers never block the writer), a busy timeout, and a schema
versioned with `PRAGMA user_version`. `MIGRATIONS` is an append-only list: step N takes
the schema from version N to N+1. To add a table, append a step; never edit a shipped one.

`History` is synchronous and thread-safe, so the daemon can call it through the
inference engine's worker threads without blocking the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another connection's lock before failing."""

MIGRATIONS: list[str] = [
    # 0 -> 1: utterance history
    """
    CREATE TABLE utterances (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        site TEXT NOT NULL,
        session_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        text TEXT NOT NULL,
        confidence REAL NOT NULL,
        language TEXT NOT NULL,
        intent TEXT,
        slots TEXT NOT NULL,
        speaker TEXT,
        speaker_confidence REAL,
        outcome TEXT NOT NULL,
        outcome_detail TEXT,
        timings_ms TEXT NOT NULL,
        end_reason TEXT NOT NULL
    );
    CREATE INDEX utterances_site_started ON utterances (site, started_at);
    CREATE INDEX utterances_started ON utterances (started_at);
    """,
    # 1 -> 2: kept audio (history.keep_audio), relative to the state folder
    """
    ALTER TABLE utterances ADD COLUMN audio_path TEXT;
    ALTER TABLE utterances ADD COLUMN audio_bytes INTEGER;
    CREATE INDEX utterances_audio ON utterances (started_at) WHERE audio_path IS NOT NULL;
    """,
    # 2 -> 3: the review queue and what corrections teach (voiced.review_store)
    """
    CREATE TABLE review_items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        utterance_id INTEGER NOT NULL UNIQUE REFERENCES utterances (id) ON DELETE CASCADE,
        reason TEXT NOT NULL,
        queued_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        audio_path TEXT,
        audio_bytes INTEGER,
        text TEXT,
        intent TEXT,
        slots TEXT,
        not_command INTEGER NOT NULL DEFAULT 0,
        speaker TEXT,
        profile TEXT,
        corrected_by TEXT,
        corrected_via TEXT,
        corrected_at REAL
    );
    CREATE INDEX review_items_status ON review_items (status, queued_at);
    CREATE TABLE review_proposals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        language TEXT NOT NULL,
        key TEXT NOT NULL,
        intent TEXT,
        body TEXT NOT NULL,
        items TEXT NOT NULL,
        support INTEGER NOT NULL DEFAULT 1,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at REAL NOT NULL,
        decided_at REAL,
        decided_by TEXT,
        UNIQUE (kind, language, key)
    );
    """,
]
"""Schema steps; `PRAGMA user_version` is the number of steps applied."""


@dataclass(frozen=True, slots=True)
class UtteranceRecord:
    """One utterance as it went through the pipeline, for the history."""

    site: str
    session_id: str
    started_at: float
    """Epoch seconds of the first audio."""
    ended_at: float
    """Epoch seconds when the pipeline finished with it."""
    text: str
    confidence: float
    """ASR confidence, 0..1."""
    language: str
    intent: str | None
    """Recognized intent name, or None."""
    slots: Mapping[str, Any]
    """Slot name -> value; stored as JSON."""
    speaker: str | None
    speaker_confidence: float | None
    """0..1; None when speaker identification is off."""
    outcome: str
    """A `voiced.models.Outcome` value."""
    outcome_detail: str | None
    timings_ms: Mapping[str, float]
    """Stage -> milliseconds; stored as JSON."""
    end_reason: str
    """`EndReason` value of the utterance."""
    audio_path: str | None = None
    """Kept audio, relative to the state folder (None: not kept, or pruned)."""
    audio_bytes: int | None = None
    id: int | None = field(default=None)
    """Row id; None before insertion."""


_COLUMNS = (
    "site",
    "session_id",
    "started_at",
    "ended_at",
    "text",
    "confidence",
    "language",
    "intent",
    "slots",
    "speaker",
    "speaker_confidence",
    "outcome",
    "outcome_detail",
    "timings_ms",
    "end_reason",
    "audio_path",
    "audio_bytes",
)
_JSON_COLUMNS = frozenset({"slots", "timings_ms"})


def private_file(path: Path) -> None:
    """Owner-only (0600) access to a database and its WAL files, whatever the umask was
    when they were made: they hold transcripts, voiceprints and timers."""
    for candidate in (path, path.with_name(path.name + "-wal"),
                      path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            candidate.chmod(0o600)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it and its folder) the database at `path`, migrated to the latest.

    The connection may be used from any thread; callers serialize access.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        log.warning("%s: SQLite refused WAL mode (journal_mode=%s)", path, mode)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    migrate(conn)
    private_file(path)
    return conn


def migrate(conn: sqlite3.Connection, steps: list[str] | None = None) -> int:
    """Apply the steps after the database's `user_version`; return the new version.

    Each step and its version bump commit together, so a crash leaves a valid version.
    """
    steps = MIGRATIONS if steps is None else steps
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(steps):
        raise RuntimeError(
            f"database schema version {version} is newer than this voiced ({len(steps)})"
        )
    for number in range(version, len(steps)):
        # executescript commits first, so wrap the step in an explicit transaction
        try:
            conn.executescript(
                f"BEGIN;\n{steps[number]}\nPRAGMA user_version = {number + 1};\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("database migrated to schema version %d", number + 1)
    return len(steps)


class History:
    """The utterance history table."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = connect(path)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"history {self.path} is closed")
        return self._conn

    def add_utterance(self, record: UtteranceRecord) -> int:
        """Store `record` (its id is ignored); return the new row id."""
        values = [
            json.dumps(dict(getattr(record, c)), default=str)
            if c in _JSON_COLUMNS
            else getattr(record, c)
            for c in _COLUMNS
        ]
        sql = (
            f"INSERT INTO utterances ({', '.join(_COLUMNS)}) "
            f"VALUES ({', '.join('?' * len(_COLUMNS))})"
        )
        with self._lock:
            cursor = self._db().execute(sql, values)
        return int(cursor.lastrowid or 0)

    def recent(self, limit: int = 50, site: str | None = None) -> list[UtteranceRecord]:
        """The newest utterances first, optionally only from `site`."""
        where, args = ("WHERE site = ?", [site]) if site is not None else ("", [])
        sql = f"SELECT * FROM utterances {where} ORDER BY started_at DESC, id DESC LIMIT ?"
        with self._lock:
            rows = self._db().execute(sql, [*args, limit]).fetchall()
        return [_record(row) for row in rows]

    def query(self, *, site: str | None = None, intent: str | None = None,
              outcome: str | None = None, speaker: str | None = None, text: str | None = None,
              since: float | None = None, until: float | None = None, limit: int = 50,
              offset: int = 0) -> tuple[list[UtteranceRecord], int]:
        """The rows matching every filter given, newest first, and how many match in all.

        `text` is a case-insensitive substring of the transcript; `since` (inclusive) and
        `until` (exclusive) bound the start time in epoch seconds.
        """
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("site", site), ("intent", intent), ("outcome", outcome),
                              ("speaker", speaker)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("text LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at < ?")
            args.append(until)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            db = self._db()
            total = int(db.execute(f"SELECT COUNT(*) FROM utterances {clause}", args)
                        .fetchone()[0])
            rows = db.execute(f"SELECT * FROM utterances {clause} "
                              "ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?",
                              [*args, limit, offset]).fetchall()
        return [_record(row) for row in rows], total

    def get(self, record_id: int) -> UtteranceRecord | None:
        """The utterance with this id, or None."""
        with self._lock:
            row = (
                self._db().execute("SELECT * FROM utterances WHERE id = ?", (record_id,)).fetchone()
            )
        return _record(row) if row is not None else None

    def audio_over_budget(self, max_bytes: int, older_than: float) -> list[tuple[int, str]]:
        """Kept audio to delete: rows started before `older_than` (epoch seconds), then
        the oldest until the rest fits in `max_bytes`. Returns (id, audio_path) pairs."""
        with self._lock:
            rows = self._db().execute(
                "SELECT id, audio_path, audio_bytes, started_at FROM utterances "
                "WHERE audio_path IS NOT NULL ORDER BY started_at DESC, id DESC").fetchall()
        keep_total, doomed = 0, []
        for row in rows:
            size = int(row["audio_bytes"] or 0)
            if row["started_at"] < older_than or keep_total + size > max_bytes:
                doomed.append((int(row["id"]), str(row["audio_path"])))
            else:
                keep_total += size
        return doomed

    def forget_audio(self, ids: list[int]) -> None:
        """Unlink rows from their (deleted) audio files."""
        with self._lock:
            self._db().executemany(
                "UPDATE utterances SET audio_path = NULL, audio_bytes = NULL WHERE id = ?",
                [(i,) for i in ids])

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _record(row: sqlite3.Row) -> UtteranceRecord:
    values = {c: json.loads(row[c]) if c in _JSON_COLUMNS else row[c] for c in _COLUMNS}
    return UtteranceRecord(**values, id=row["id"])
