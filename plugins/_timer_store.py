"""SQLite storage of the timer plugin: timers survive a daemon restart.

One row per running timer in ``<state_dir>/timers.db``; ``ends_at`` is wall-clock epoch
seconds, so a timer that ran out while the daemon was down is found (and announced) at the
next start. Each call opens its own connection, so the calls can run in worker threads.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Timer", "TimerStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS timers (
    id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    name TEXT,
    duration_s REAL NOT NULL,
    ends_at REAL NOT NULL,
    created_at REAL NOT NULL,
    announcement TEXT NOT NULL,
    language TEXT NOT NULL
)
"""
_COLUMNS = "id, site, name, duration_s, ends_at, created_at, announcement, language"


@dataclass(frozen=True, slots=True)
class Timer:
    """A running timer."""

    id: str
    site: str
    name: str | None
    duration_s: float
    """Length asked for, seconds."""
    ends_at: float
    """Wall-clock (epoch) seconds when it rings."""
    created_at: float
    """Wall-clock (epoch) seconds when it was set."""
    announcement: str
    """What is said when it rings, rendered when it was set."""
    language: str = "en"


class TimerStore:
    """Timers in SQLite (blocking calls: run them in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=5.0)

    def open(self) -> None:
        """Create the folder, the database and the table if needed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def add(self, timer: Timer) -> None:
        """Store a new timer."""
        with closing(self._connect()) as db, db:
            db.execute(
                f"INSERT INTO timers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    timer.id,
                    timer.site,
                    timer.name,
                    timer.duration_s,
                    timer.ends_at,
                    timer.created_at,
                    timer.announcement,
                    timer.language,
                ),
            )

    def remove(self, timer_id: str) -> bool:
        """Delete a timer; False when it was not there."""
        with closing(self._connect()) as db, db:
            return db.execute("DELETE FROM timers WHERE id = ?", (timer_id,)).rowcount > 0

    def all(self) -> list[Timer]:
        """Every stored timer, soonest first."""
        with closing(self._connect()) as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM timers ORDER BY ends_at").fetchall()
        return [Timer(*row) for row in rows]
