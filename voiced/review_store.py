"""The review queue's tables (`review_items`, `review_proposals`) in the history database.

Synchronous and thread-safe like `voiced.storage.History` (its own connection to the same
SQLite file, WAL mode): the daemon calls it through the inference engine's threads, the
`voiced dataset` command directly. Each item points at one history row (`utterances`),
which keeps what was heard; the item adds why it was queued, the queue's own copy of the
audio, and the correction with who made it and when. A proposal is something corrections
teach (a sentence, an alias), counted by how many corrections support it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from voiced.storage import UtteranceRecord, connect

STATUSES = ("pending", "corrected", "discarded")
"""An item's states: waiting for a person, corrected (training data), discarded."""
PROPOSAL_STATUSES = ("watching", "pending", "accepted", "rejected")
"""A proposal's states: seen too rarely to offer yet, offered, written, turned down."""

_UTTERANCE_FIELDS = tuple(f.name for f in fields(UtteranceRecord) if f.name != "id")
_SELECT = ("SELECT r.*, " + ", ".join(f"u.{c} AS u_{c}" for c in _UTTERANCE_FIELDS)
           + " FROM review_items r JOIN utterances u ON u.id = r.utterance_id")


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """One queued utterance and, once made, its correction."""

    id: int
    utterance_id: int
    reason: str
    """Why it was queued: no_match, empty, low_confidence, refused or marked_wrong."""
    queued_at: float
    """Epoch seconds."""
    status: str
    audio_path: str | None
    """The queue's copy of the audio, relative to the state folder."""
    audio_bytes: int | None
    utterance: UtteranceRecord
    """The history row: what was heard, recognized and done."""
    text: str | None = None
    """The corrected transcript (what was really said)."""
    intent: str | None = None
    slots: Mapping[str, Any] = field(default_factory=dict)
    not_command: bool = False
    """The person said something that is not a command (a transcript, no intent)."""
    speaker: str | None = None
    """Who really spoke, as the correction says."""
    profile: str | None = None
    """What became of adding the audio to the speaker's voice profile."""
    corrected_by: str | None = None
    corrected_via: str | None = None
    corrected_at: float | None = None


@dataclass(frozen=True, slots=True)
class Proposal:
    """Something corrections teach, waiting for a person to accept or reject it."""

    id: int
    kind: str
    """`sentence` (a new template for an intent) or `alias` (a misheard list value)."""
    language: str
    key: str
    intent: str | None
    body: Mapping[str, Any]
    items: tuple[int, ...]
    """Review items that support it."""
    support: int
    status: str
    created_at: float
    decided_at: float | None = None
    decided_by: str | None = None


class ReviewStore:
    """Queue items and proposals."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = connect(path)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"review store {self.path} is closed")
        return self._conn

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---- items -------------------------------------------------------------------------
    def enqueue(self, utterance_id: int, reason: str, audio_path: str | None,
                audio_bytes: int | None, now: float | None = None) -> tuple[int, bool]:
        """Queue a history row; returns (item id, True when new). A row already queued
        stays one item; marking it wrong while pending records that reason."""
        now = time.time() if now is None else now
        with self._lock:
            db = self._db()
            row = db.execute("SELECT id, status FROM review_items WHERE utterance_id = ?",
                             (utterance_id,)).fetchone()
            if row is not None:
                if reason == "marked_wrong" and row["status"] == "pending":
                    db.execute("UPDATE review_items SET reason = ? WHERE id = ?",
                               (reason, row["id"]))
                return int(row["id"]), False
            cursor = db.execute(
                "INSERT INTO review_items (utterance_id, reason, queued_at, audio_path, "
                "audio_bytes) VALUES (?, ?, ?, ?, ?)",
                (utterance_id, reason, now, audio_path, audio_bytes))
        return int(cursor.lastrowid or 0), True

    def set_audio(self, item_id: int, audio_path: str, audio_bytes: int) -> None:
        """Link an item to the queue's copy of its audio (relative to the state folder)."""
        with self._lock:
            self._db().execute("UPDATE review_items SET audio_path = ?, audio_bytes = ? "
                               "WHERE id = ?", (audio_path, audio_bytes, item_id))

    def get(self, item_id: int) -> ReviewItem | None:
        """The item with this id, or None."""
        with self._lock:
            row = self._db().execute(f"{_SELECT} WHERE r.id = ?", (item_id,)).fetchone()
        return _item(row) if row is not None else None

    def items(self, status: str | None = "pending", limit: int = 50, offset: int = 0,
              language: str | None = None) -> tuple[list[ReviewItem], int]:
        """Items (newest first) in `status` (None: all), and how many there are."""
        where, args = [], []
        if status is not None:
            where.append("r.status = ?")
            args.append(status)
        if language is not None:
            where.append("u.language = ?")
            args.append(language)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        count_sql = ("SELECT COUNT(*) FROM review_items r JOIN utterances u "
                     f"ON u.id = r.utterance_id{clause}")
        with self._lock:
            db = self._db()
            total = int(db.execute(count_sql, args).fetchone()[0])
            rows = db.execute(f"{_SELECT}{clause} ORDER BY r.queued_at DESC, r.id DESC "
                              "LIMIT ? OFFSET ?", [*args, limit, offset]).fetchall()
        return [_item(r) for r in rows], total

    def counts(self) -> dict[str, int]:
        """Items per status."""
        with self._lock:
            rows = self._db().execute(
                "SELECT status, COUNT(*) AS n FROM review_items GROUP BY status").fetchall()
        found = {str(r["status"]): int(r["n"]) for r in rows}
        return {s: found.get(s, 0) for s in STATUSES}

    def correct(self, item_id: int, *, text: str, intent: str | None,
                slots: Mapping[str, Any], not_command: bool, speaker: str | None,
                by: str, via: str, now: float | None = None) -> None:
        """Store a correction; the item leaves the pending queue."""
        with self._lock:
            self._db().execute(
                "UPDATE review_items SET status = 'corrected', text = ?, intent = ?, slots = ?,"
                " not_command = ?, speaker = ?, corrected_by = ?, corrected_via = ?, "
                "corrected_at = ? WHERE id = ?",
                (text, intent, json.dumps(dict(slots)), int(not_command), speaker, by, via,
                 time.time() if now is None else now, item_id))

    def set_profile(self, item_id: int, outcome: str) -> None:
        """Record what became of adding the item's audio to a voice profile."""
        with self._lock:
            self._db().execute("UPDATE review_items SET profile = ? WHERE id = ?",
                               (outcome, item_id))

    def discard(self, item_id: int, by: str, via: str) -> str | None:
        """Mark the item discarded and unlink its audio; returns the audio path to delete."""
        with self._lock:
            db = self._db()
            row = db.execute("SELECT audio_path FROM review_items WHERE id = ?",
                             (item_id,)).fetchone()
            db.execute("UPDATE review_items SET status = 'discarded', audio_path = NULL, "
                       "audio_bytes = NULL, corrected_by = ?, corrected_via = ?, "
                       "corrected_at = ? WHERE id = ?", (by, via, time.time(), item_id))
        return str(row["audio_path"]) if row is not None and row["audio_path"] else None

    def prune(self, max_pending: int, max_age_s: float, max_corrected: int,
              now: float | None = None) -> list[str]:
        """Drop pending and discarded items older than `max_age_s`, the oldest pending
        beyond `max_pending` and the oldest corrected beyond `max_corrected`; returns the
        audio paths to delete."""
        now = time.time() if now is None else now
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            doomed = [int(r[0]) for r in db.execute(
                "SELECT id FROM review_items WHERE status IN ('pending', 'discarded') "
                "AND queued_at < ?", (now - max_age_s,))]
            for status, keep in (("pending", max_pending), ("corrected", max_corrected)):
                doomed += [int(r[0]) for r in db.execute(
                    "SELECT id FROM review_items WHERE status = ? ORDER BY queued_at DESC, "
                    "id DESC LIMIT -1 OFFSET ?", (status, keep))]
            if not doomed:
                return []
            marks = ", ".join("?" * len(doomed))
            paths = [str(r[0]) for r in db.execute(
                f"SELECT audio_path FROM review_items WHERE id IN ({marks}) "
                "AND audio_path IS NOT NULL", doomed)]
            db.execute(f"DELETE FROM review_items WHERE id IN ({marks})", doomed)
        return paths

    # ---- proposals ---------------------------------------------------------------------
    def propose(self, kind: str, language: str, key: str, intent: str | None,
                body: Mapping[str, Any], item_id: int, offer_at: int = 1) -> Proposal:
        """Count `item_id`'s support for a proposal (made on first sight); it is offered
        (`pending`) once `offer_at` items support it. A decided one stays decided."""
        now = time.time()
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT * FROM review_proposals WHERE kind = ? AND language = ? "
                             "AND key = ?", (kind, language, key)).fetchone()
            if row is None:
                items = [item_id]
                status = "pending" if offer_at <= 1 else "watching"
                cursor = db.execute(
                    "INSERT INTO review_proposals (kind, language, key, intent, body, items, "
                    "support, status, created_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?)",
                    (kind, language, key, intent, json.dumps(dict(body)), json.dumps(items),
                     status, now))
                proposal_id = int(cursor.lastrowid or 0)
            else:
                proposal_id = int(row["id"])
                items = json.loads(row["items"])
                if item_id not in items:
                    items.append(item_id)
                    status = row["status"]
                    if status == "watching" and len(items) >= offer_at:
                        status = "pending"
                    db.execute("UPDATE review_proposals SET items = ?, support = ?, status = ? "
                               "WHERE id = ?", (json.dumps(items), len(items), status,
                                                proposal_id))
            found = db.execute("SELECT * FROM review_proposals WHERE id = ?",
                               (proposal_id,)).fetchone()
        return _proposal(found)

    def proposal(self, proposal_id: int) -> Proposal | None:
        """The proposal with this id, or None."""
        with self._lock:
            row = self._db().execute("SELECT * FROM review_proposals WHERE id = ?",
                                     (proposal_id,)).fetchone()
        return _proposal(row) if row is not None else None

    def proposals(self, status: str | None = "pending") -> list[Proposal]:
        """Proposals in `status` (None: all), the best supported first."""
        where, args = ("WHERE status = ?", [status]) if status is not None else ("", [])
        with self._lock:
            rows = self._db().execute(f"SELECT * FROM review_proposals {where} "
                                      "ORDER BY support DESC, id", args).fetchall()
        return [_proposal(r) for r in rows]

    def decide(self, proposal_id: int, status: str, by: str) -> None:
        """Accept or reject a proposal."""
        with self._lock:
            self._db().execute("UPDATE review_proposals SET status = ?, decided_at = ?, "
                               "decided_by = ? WHERE id = ?",
                               (status, time.time(), by, proposal_id))


def _item(row: sqlite3.Row) -> ReviewItem:
    values: dict[str, Any] = {c: row[f"u_{c}"] for c in _UTTERANCE_FIELDS}
    values["slots"] = json.loads(values["slots"] or "{}")
    values["timings_ms"] = json.loads(values["timings_ms"] or "{}")
    utterance = UtteranceRecord(**values, id=int(row["utterance_id"]))
    return ReviewItem(
        id=int(row["id"]), utterance_id=int(row["utterance_id"]), reason=row["reason"],
        queued_at=float(row["queued_at"]), status=row["status"], audio_path=row["audio_path"],
        audio_bytes=row["audio_bytes"], utterance=utterance, text=row["text"],
        intent=row["intent"], slots=json.loads(row["slots"] or "{}"),
        not_command=bool(row["not_command"]), speaker=row["speaker"], profile=row["profile"],
        corrected_by=row["corrected_by"], corrected_via=row["corrected_via"],
        corrected_at=row["corrected_at"])


def _proposal(row: sqlite3.Row) -> Proposal:
    return Proposal(
        id=int(row["id"]), kind=row["kind"], language=row["language"], key=row["key"],
        intent=row["intent"], body=json.loads(row["body"]),
        items=tuple(int(i) for i in json.loads(row["items"])), support=int(row["support"]),
        status=row["status"], created_at=float(row["created_at"]),
        decided_at=row["decided_at"], decided_by=row["decided_by"])
