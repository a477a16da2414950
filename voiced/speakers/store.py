"""Enrollments in SQLite: `<state_dir>/speakers.db` (WAL), separate from the history database.

Every vector is stored with the `model_id` of the embedder that made it. Vectors of
different models are never compared: a person enrolled with another model is reported as
needing re-enrollment, and adding vectors of a new model to them is refused unless the
caller asks to replace what is there.

Rows are "enrolled" (from `voiced speakers enroll` or enrollment by voice), "probe"
(command-length pieces of an enrolled sample, used only by calibration; `parent` is the
sample's row) or "adapted" (learned from confident identifications; bounded per person and
removable at any time).
A generation counter changes on every write, so a running service notices an enrollment
made by the command line and reloads its profiles.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiced.errors import SpeakerError
from voiced.models import UNKNOWN_SPEAKER
from voiced.speakers.base import Vector, l2_normalize
from voiced.speakers.matching import Calibration, Matrix, Profile
from voiced.storage import private_file

log = logging.getLogger(__name__)

DB_NAME = "speakers.db"
NAME_RE = re.compile(r"\w(?:[\w .'-]{0,62}[\w.'-])?")
"""Names (matched whole): a letter or digit first, then letters, digits, space, dot,
apostrophe, dash, not ending in a space (`$` let "carol\n" in, and "carol " was a
person the HTTP API, which strips names, could never remove)."""

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE embeddings (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        model_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('enrolled', 'adapted', 'probe')),
        parent INTEGER,
        dim INTEGER NOT NULL,
        vector BLOB NOT NULL,
        source TEXT,
        speech_ms REAL,
        created REAL NOT NULL
    );
    CREATE INDEX embeddings_person ON embeddings (name, model_id, kind);
    CREATE TABLE calibration (
        model_id TEXT PRIMARY KEY,
        threshold REAL NOT NULL,
        expected_far REAL NOT NULL,
        expected_frr REAL NOT NULL,
        eer REAL NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta VALUES ('generation', 0);
    """,
)
"""Schema steps; `PRAGMA user_version` counts the ones applied."""


@dataclass(frozen=True, slots=True)
class PersonInfo:
    """What `voiced speakers list` shows about one person."""

    name: str
    enrolled: int
    """Enrollment vectors made by the current model."""
    adapted: int
    """Adapted vectors made by the current model."""
    other_models: tuple[str, ...]
    """Models of vectors that cannot be used with the current model."""
    enrolled_at: float
    """Epoch seconds of the newest enrollment."""

    @property
    def needs_reenrollment(self) -> bool:
        """True when nothing usable with the current model is stored."""
        return self.enrolled == 0


def check_name(name: str) -> str:
    """`name` if it can be enrolled, else SpeakerError("bad_name")."""
    if name.strip().lower() == UNKNOWN_SPEAKER or not NAME_RE.fullmatch(name):
        raise SpeakerError(
            "bad_name",
            f"{name!r} cannot be a speaker name: use letters, digits, space, '.', \"'\" or "
            f"'-', at most 64 characters, and not {UNKNOWN_SPEAKER!r}",
        )
    return name


class SpeakerStore:
    """The enrollment database. Safe to share between threads (one lock, one connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        private_file(path)

    @classmethod
    def open(cls, state_dir: Path) -> SpeakerStore:
        """The store in `state_dir` (created when missing)."""
        return cls(state_dir / DB_NAME)

    def _migrate(self) -> None:
        with self._lock:
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version > len(MIGRATIONS):
                raise SpeakerError(
                    "store_too_new",
                    f"{self.path} has schema {version}; this voiced knows {len(MIGRATIONS)}",
                )
            for step, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {step};\nCOMMIT;")
                log.info("speaker store %s: schema %d", self.path, step)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SpeakerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def generation(self) -> int:
        """Changes whenever any process writes to the store."""
        with self._lock:
            return int(self._db.execute(
                "SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def _refuse_model_change(self, name: str, model_id: str) -> None:
        others = [r[0] for r in self._db.execute(
            "SELECT DISTINCT model_id FROM embeddings WHERE name = ? AND model_id != ?",
            (name, model_id))]
        if others:
            raise SpeakerError(
                "model_changed",
                f"{name} was enrolled with {', '.join(others)} but the speaker model is now "
                f"{model_id}: their vectors cannot be compared; enroll {name} again, "
                "replacing the old samples",
            )

    def check_model(self, name: str, model_id: str) -> None:
        """Raise SpeakerError("model_changed") when `name` has vectors of another model."""
        with self._lock:
            self._refuse_model_change(name, model_id)

    def add_enrollment(
        self,
        name: str,
        model_id: str,
        vectors: Sequence[Vector],
        sources: Sequence[str | None] = (),
        speech_ms: Sequence[float | None] = (),
        replace: bool = False,
        probes: Sequence[Sequence[Vector]] = (),
    ) -> int:
        """Store enrollment vectors for `name`; returns how many the person now has.

        `probes[i]`: vectors of command-length pieces of sample i, for calibration.

        Refuses (code "model_changed") when the person has vectors of another model, unless
        `replace`, which first removes everything stored for them.
        """
        check_name(name)
        if not vectors:
            raise SpeakerError("no_samples", f"no samples to enroll for {name}")
        mat = np.stack([l2_normalize(v) for v in vectors])
        now = time.time()
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if replace:
                self._db.execute("DELETE FROM embeddings WHERE name = ?", (name,))
            else:
                self._refuse_model_change(name, model_id)
                dims = {r[0] for r in self._db.execute(
                    "SELECT DISTINCT dim FROM embeddings WHERE model_id = ?", (model_id,))}
                if dims and dims != {mat.shape[1]}:
                    raise SpeakerError(
                        "dimension_mismatch",
                        f"{model_id} vectors in the store have {dims}, got {mat.shape[1]}",
                    )
            for i, v in enumerate(mat):
                src = sources[i] if i < len(sources) else None
                ms = speech_ms[i] if i < len(speech_ms) else None
                cur = self._db.execute(
                    "INSERT INTO embeddings (name, model_id, kind, dim, vector, source, "
                    "speech_ms, created) VALUES (?, ?, 'enrolled', ?, ?, ?, ?, ?)",
                    (name, model_id, mat.shape[1], v.astype("<f4").tobytes(), src, ms, now),
                )
                for probe in probes[i] if i < len(probes) else ():
                    p = l2_normalize(probe)
                    self._db.execute(
                        "INSERT INTO embeddings (name, model_id, kind, parent, dim, vector, "
                        "source, created) VALUES (?, ?, 'probe', ?, ?, ?, ?, ?)",
                        (name, model_id, cur.lastrowid, p.size, p.astype("<f4").tobytes(),
                         src, now),
                    )
            self._bump()
            count = self._db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE name = ? AND model_id = ? "
                "AND kind = 'enrolled'", (name, model_id)).fetchone()[0]
        log.info("enrolled %s: %d new samples, %d in all (%s)", name, len(mat), count, model_id)
        return int(count)

    def add_adapted(self, name: str, model_id: str, vector: Vector, keep: int) -> None:
        """Add one adapted vector for `name`, dropping the oldest beyond `keep`."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            enrolled = self._db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE name = ? AND model_id = ? "
                "AND kind = 'enrolled'", (name, model_id)).fetchone()[0]
            if not enrolled:  # removed or re-enrolled meanwhile: nothing to refine
                return
            v = l2_normalize(vector)
            self._db.execute(
                "INSERT INTO embeddings (name, model_id, kind, dim, vector, source, created) "
                "VALUES (?, ?, 'adapted', ?, ?, 'adaptation', ?)",
                (name, model_id, v.size, v.astype("<f4").tobytes(), time.time()),
            )
            self._db.execute(
                "DELETE FROM embeddings WHERE id IN (SELECT id FROM embeddings WHERE name = ? "
                "AND model_id = ? AND kind = 'adapted' ORDER BY id DESC LIMIT -1 OFFSET ?)",
                (name, model_id, keep),
            )
            self._bump()

    def clear_adapted(self, name: str | None = None) -> int:
        """Undo adaptation for `name` (everyone when None); returns vectors removed."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if name is None:
                cur = self._db.execute("DELETE FROM embeddings WHERE kind = 'adapted'")
            else:
                cur = self._db.execute(
                    "DELETE FROM embeddings WHERE kind = 'adapted' AND name = ?", (name,))
            self._bump()
            return cur.rowcount

    def remove(self, name: str) -> int:
        """Forget `name` entirely; returns vectors removed (0: not enrolled)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.execute("DELETE FROM embeddings WHERE name = ?", (name,))
            self._bump()
            return cur.rowcount

    def people(self, model_id: str) -> list[PersonInfo]:
        """Everyone in the store, by name, with what is usable under `model_id`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, model_id, kind, COUNT(*), MAX(created) FROM embeddings "
                "GROUP BY name, model_id, kind ORDER BY name").fetchall()
        counts: dict[str, dict[str, int]] = {}
        others: dict[str, set[str]] = {}
        newest: dict[str, float] = {}
        for name, mid, kind, count, created in rows:
            counts.setdefault(name, {"enrolled": 0, "adapted": 0})
            others.setdefault(name, set())
            if mid == model_id:
                counts[name][kind] = int(count)
            else:
                others[name].add(mid)
            if kind == "enrolled":
                newest[name] = max(newest.get(name, 0.0), float(created))
        return [
            PersonInfo(name, c["enrolled"], c["adapted"], tuple(sorted(others[name])),
                       newest.get(name, 0.0))
            for name, c in counts.items()
        ]

    def _vectors(self, model_id: str, kind: str) -> dict[str, Matrix]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, vector FROM embeddings WHERE model_id = ? AND kind = ? "
                "ORDER BY name, id", (model_id, kind)).fetchall()
        grouped: dict[str, list[Vector]] = {}
        for name, blob in rows:
            grouped.setdefault(name, []).append(np.frombuffer(blob, dtype="<f4").copy())
        return {n: np.stack(v) for n, v in grouped.items()}

    def enrollments(self, model_id: str) -> dict[str, Matrix]:
        """Enrollment vectors made by `model_id`, by person (for calibration)."""
        return self._vectors(model_id, "enrolled")

    def probes(self, model_id: str) -> dict[str, list[tuple[int, Vector]]]:
        """Calibration probes by person: (index of the parent sample in `enrollments`, vector)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.name, p.vector, ("
                "  SELECT COUNT(*) FROM embeddings e WHERE e.name = p.name AND "
                "  e.model_id = p.model_id AND e.kind = 'enrolled' AND e.id < p.parent"
                ") FROM embeddings p WHERE p.model_id = ? AND p.kind = 'probe' "
                "ORDER BY p.name, p.id", (model_id,)).fetchall()
        out: dict[str, list[tuple[int, Vector]]] = {}
        for name, blob, index in rows:
            out.setdefault(name, []).append((int(index), np.frombuffer(blob, dtype="<f4").copy()))
        return out

    def profiles(self, model_id: str) -> list[Profile]:
        """Profiles of everyone enrolled with `model_id` (others need re-enrollment)."""
        enrolled = self._vectors(model_id, "enrolled")
        adapted = self._vectors(model_id, "adapted")
        return [
            Profile(name, m, adapted.get(name, np.zeros((0, m.shape[1]), dtype=np.float32)))
            for name, m in enrolled.items()
        ]

    def stale(self, model_id: str) -> list[str]:
        """People enrolled only with other models: they must enroll again."""
        return [p.name for p in self.people(model_id) if p.needs_reenrollment]

    def set_calibration(self, model_id: str, calibration: Calibration) -> None:
        """Remember the calibrated threshold for `model_id`."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR REPLACE INTO calibration VALUES (?, ?, ?, ?, ?, ?)",
                (model_id, calibration.threshold, calibration.expected_far,
                 calibration.expected_frr, calibration.eer, time.time()),
            )
            self._bump()

    def calibrated_threshold(self, model_id: str) -> float | None:
        """The threshold `voiced speakers calibrate` chose for `model_id`, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT threshold FROM calibration WHERE model_id = ?", (model_id,)).fetchone()
        return float(row[0]) if row else None
