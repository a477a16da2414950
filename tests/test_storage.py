"""SQLite history on a real file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from voiced.models import Outcome
from voiced.storage import MIGRATIONS, History, UtteranceRecord, connect, migrate


def record(site: str = "kitchen", started: float = 1000.0, **changes: object) -> UtteranceRecord:
    values: dict[str, object] = {
        "site": site,
        "session_id": f"s-{started}",
        "started_at": started,
        "ended_at": started + 1.5,
        "text": "turn on the light",
        "confidence": 0.9,
        "language": "en",
        "intent": "HassTurnOn",
        "slots": {"name": "light", "brightness": 50},
        "speaker": "alice",
        "speaker_confidence": 0.81,
        "outcome": Outcome.HANDLED,
        "outcome_detail": None,
        "timings_ms": {"vad": 1.5, "asr": 120.25},
        "end_reason": "silence",
    }
    values.update(changes)
    return UtteranceRecord(**values)  # type: ignore[arg-type]


def test_add_get_and_reopen_keep_rows(tmp_path: Path) -> None:
    path = tmp_path / "state" / "voiced.db"
    history = History(path)
    first = history.add_utterance(record())
    second = history.add_utterance(
        record(
            intent=None,
            slots={},
            speaker=None,
            speaker_confidence=None,
            outcome=Outcome.NOT_RECOGNIZED,
            started=2000,
        )
    )
    assert second > first
    history.close()
    history.close()  # idempotent

    reopened = History(path)
    got = reopened.get(first)
    assert got is not None
    assert got.id == first
    assert got == record(id=first)
    assert reopened.get(second) == record(
        id=second,
        intent=None,
        slots={},
        speaker=None,
        speaker_confidence=None,
        outcome="not_recognized",
        started=2000,
    )
    assert reopened.get(999) is None
    reopened.close()
    with pytest.raises(RuntimeError):
        reopened.recent()


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "voiced.db"
    History(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_recent_is_newest_first_and_filters_by_site(tmp_path: Path) -> None:
    history = History(tmp_path / "h.db")
    for i in range(5):
        history.add_utterance(record("kitchen" if i % 2 else "office", started=100.0 + i))
    assert [r.started_at for r in history.recent()] == [104, 103, 102, 101, 100]
    assert [r.started_at for r in history.recent(limit=2)] == [104, 103]
    assert [r.started_at for r in history.recent(site="kitchen")] == [103, 101]
    assert history.recent(site="garage") == []
    history.close()


def test_migrations_extend_and_a_failed_step_leaves_the_version(tmp_path: Path) -> None:
    conn = connect(tmp_path / "m.db")
    steps = [*MIGRATIONS, "CREATE TABLE timers (id INTEGER PRIMARY KEY, due REAL);"]
    assert migrate(conn, steps) == len(steps)
    conn.execute("INSERT INTO timers (due) VALUES (1.0)")
    broken = [*steps, "CREATE TABLE review (id INTEGER); CREATE TABLE review (x);"]
    with pytest.raises(sqlite3.Error):
        migrate(conn, broken)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(steps)
    # the half-applied step was rolled back as a whole
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "review" not in tables and "timers" in tables
    with pytest.raises(RuntimeError, match="newer"):
        migrate(conn, MIGRATIONS)
    conn.close()


def test_writes_from_several_threads(tmp_path: Path) -> None:
    history = History(tmp_path / "t.db")
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(20):
                history.add_utterance(record(f"site{n}", started=n * 100.0 + i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors
    assert len(history.recent(limit=1000)) == 80
    history.close()
