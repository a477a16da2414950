"""The review queue on a real SQLite history with real kept audio files, and what
corrections teach, checked with the real intent catalog (config/intents).

No daemon here: the queue's policy, bounds, audio, corrections, proposals and the learned
files; tests/http/test_api_review.py runs them end to end through a daemon.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from support import REPO

from voiced.config import Config
from voiced.const import SAMPLE_RATE
from voiced.intents.catalog import load_catalog
from voiced.models import Outcome
from voiced.recorder import encode_audio
from voiced.review import Correction, ReviewError, ReviewQueue, read_kept_audio
from voiced.storage import MIGRATIONS, History, UtteranceRecord, migrate
from voiced.teach import NOT_WHAT_I_SAID, learned_dir, substitutions

PCM = (np.sin(np.arange(SAMPLE_RATE) / 7.0) * 8000).astype("<i2").tobytes()


def config(tmp_path: Path, keep_audio: bool = True, **review: Any) -> Config:
    return Config.model_validate({
        "state_dir": str(tmp_path / "state"),
        "intents": {"paths": [str(REPO / "config" / "intents")]},
        "history": {"keep_audio": keep_audio},
        "review": review})


class Rows:
    """History rows with kept audio, as the history writer makes them."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.history = History(cfg.state_dir / "voiced.db")
        self.review = ReviewQueue(cfg, self.history)
        self.count = 0

    def add(self, text: str = "make the kitchen bright", audio: bool = True,
            **changes: Any) -> UtteranceRecord:
        self.count += 1
        relative = None
        if audio:
            relative = f"audio/2026-01-01/{self.count}.flac"
            path = self.cfg.state_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_audio(PCM, "flac"))
        values: dict[str, Any] = dict(
            site="kitchen", session_id=f"s{self.count}", started_at=time.time() - 5,
            ended_at=time.time() - 4, text=text, confidence=0.9, language="en", intent=None,
            slots={}, speaker=None, speaker_confidence=None, outcome=Outcome.NOT_RECOGNIZED,
            outcome_detail="no_match", timings_ms={}, end_reason="silence",
            audio_path=relative, audio_bytes=10 if audio else None)
        values.update(changes)
        record = UtteranceRecord(**values)
        stored = UtteranceRecord(**{**values, "id": self.history.add_utterance(record)})
        self.review.on_row(stored)
        return stored

    def close(self) -> None:
        self.review.close()
        self.history.close()


@pytest.fixture
def rows(tmp_path: Path) -> Any:
    made = Rows(config(tmp_path, max_items=3, max_corrected=2))
    yield made
    made.close()


def pending(rows: Rows) -> list[str]:
    items, _ = rows.review.store.items("pending")
    return [f"{i.utterance.text}:{i.reason}" for i in items]


def test_what_enters_the_queue_and_its_own_audio(rows: Rows) -> None:
    not_understood = rows.add("make the kitchen bright")
    rows.add("turn on the kitchen lights", intent="HassTurnOn", outcome=Outcome.HANDLED,
             outcome_detail=None)
    rows.add("turn off the office lights", intent="HassTurnOff", outcome=Outcome.HANDLED,
             outcome_detail=None, confidence=0.41)
    rows.add("typed, no audio", audio=False)
    rows.add("that's not what i said", intent=NOT_WHAT_I_SAID, outcome=Outcome.HANDLED)
    assert pending(rows) == ["turn off the office lights:low_confidence",
                             "make the kitchen bright:no_match"]
    item = rows.review.store.items("pending")[0][-1]
    assert item.utterance.id == not_understood.id and item.audio_path == f"review/{item.id}.flac"
    queued = rows.review.audio_file(item)
    assert queued is not None and read_kept_audio(queued) == PCM
    # the history's pruning deletes its own file: the queue's copy stays
    assert not_understood.audio_path is not None
    (rows.cfg.state_dir / not_understood.audio_path).unlink()
    assert read_kept_audio(queued) == PCM
    # refused commands and nothing heard enter too, unless review.queue leaves them out
    rows.add("unlock the front door", outcome=Outcome.REFUSED, outcome_detail="not allowed")
    rows.add("", outcome_detail="empty")
    assert [p.split(":")[1] for p in pending(rows)[:2]] == ["empty", "refused"]
    rows.review.config = rows.review.config.model_copy(update={"queue": ["no_match"]})
    rows.add("unlock the back door", outcome=Outcome.REFUSED, outcome_detail="not allowed")
    assert "unlock the back door:refused" not in pending(rows)


def test_bounds_by_count_and_age_delete_the_audio(rows: Rows) -> None:
    for n in range(5):
        rows.add(f"command {n}")
    assert pending(rows) == [f"command {n}:no_match" for n in (4, 3, 2)]
    files = sorted(p.name for p in (rows.cfg.state_dir / "review").iterdir())
    kept = rows.review.store.items("pending")[0]
    assert files == sorted(Path(i.audio_path or "").name for i in kept)
    # older than max_days: gone, with the file
    assert rows.review.prune(now=time.time() + 31 * 86400) == 3
    assert pending(rows) == [] and not list((rows.cfg.state_dir / "review").iterdir())


def test_keep_audio_off_keeps_nothing(tmp_path: Path) -> None:
    cfg = config(tmp_path, keep_audio=False)
    from voiced.teach import review_active

    assert not review_active(cfg)
    assert NOT_WHAT_I_SAID not in load_catalog(cfg).intent_names()
    assert NOT_WHAT_I_SAID in load_catalog(config(tmp_path)).intent_names()


def test_mark_wrong_and_the_previous_command(rows: Rows) -> None:
    handled = rows.add("turn off the kitchen lights", intent="HassTurnOff",
                       outcome=Outcome.HANDLED, outcome_detail=None)
    rows.add("that's not what i said", intent=NOT_WHAT_I_SAID, outcome=Outcome.HANDLED)
    previous = rows.review.previous_command("kitchen", time.time())
    assert previous is not None and previous.id == handled.id
    assert rows.review.previous_command("hall", time.time()) is None
    assert rows.review.previous_command("kitchen", time.time() + 600) is None
    assert handled.id is not None
    item, new = rows.review.mark_wrong(handled.id)
    assert new and item.reason == "marked_wrong"
    again, new = rows.review.mark_wrong(handled.id)
    assert not new and again.id == item.id
    typed = rows.add("typed", audio=False, intent="HassTurnOn", outcome=Outcome.HANDLED)
    assert typed.id is not None
    with pytest.raises(ReviewError) as refused:
        rows.review.mark_wrong(typed.id)
    assert refused.value.code == "no_audio"
    with pytest.raises(ReviewError) as missing:
        rows.review.mark_wrong(10_000)
    assert missing.value.code == "not_found"


def test_corrections_are_checked_against_the_intents(rows: Rows) -> None:
    rows.add("make the kitchen bright")
    item = rows.review.store.items("pending")[0][0]
    recognizer = load_catalog(rows.cfg)
    bad = [
        (Correction("  "), "text"),
        (Correction("x" * 501, not_command=True), "text"),
        (Correction("make the kitchen bright"), "intent"),
        (Correction("make the kitchen bright", intent="NoSuchIntent"), "intent"),
        (Correction("make it so", intent="HassTurnOn", not_command=True), "intent"),
        (Correction("make it so", intent="HassTurnOn", slots={"colour": "red"}), "slots"),
        (Correction("make it so", intent="HassTurnOn", slots={"area": ""}), "slots"),
        (Correction("make it so", intent="HassTurnOn", slots={"area": ["a"]}), "slots"),
        (Correction("make it so", intent="HassTurnOn", add_to_profile=True), "speaker"),
    ]
    for correction, field in bad:
        with pytest.raises(ReviewError) as refused:
            rows.review.correct(item.id, correction, recognizer)
        assert refused.value.field == field, correction
    assert rows.review.store.get(item.id).status == "pending"  # type: ignore[union-attr]
    done, proposals = rows.review.correct(
        item.id, Correction("  Make the kitchen   bright!", intent="HassLightSet",
                            slots={"area": "kitchen", "brightness": "100"}, by="ann",
                            via="test"), recognizer)
    assert (done.status, done.text, done.intent, dict(done.slots), done.corrected_by) == (
        "corrected", "Make the kitchen bright!", "HassLightSet",
        {"area": "kitchen", "brightness": 100}, "ann")
    assert done.corrected_at is not None and done.corrected_at <= time.time()
    assert [(p.kind, p.body["sentence"], p.status) for p in proposals] == [
        ("sentence", "make the kitchen bright", "pending")]
    assert pending(rows) == []


def test_an_accepted_sentence_is_understood_after_reloading(rows: Rows) -> None:
    first = rows.add("make the kitchen bright")
    understood = rows.add("turn on the kitchen lights")
    gated = rows.add("open up the front door")
    recognizer = load_catalog(rows.cfg)
    assert recognizer.recognize("make the kitchen bright").name is None
    items = {i.utterance_id: i for i in rows.review.store.items("pending")[0]}
    _, proposals = rows.review.correct(
        items[first.id].id, Correction("make the kitchen bright", intent="HassTurnOn",  # type: ignore[index]
                                       slots={"area": "kitchen", "domain": "light"}),
        recognizer)
    (sentence,) = proposals
    # already a sentence of the intent, with those slots: nothing to learn
    _, nothing = rows.review.correct(
        items[understood.id].id, Correction("turn on the kitchen lights",  # type: ignore[index]
                                            intent="HassTurnOn", slots={"area": "kitchen"}),
        recognizer)
    assert nothing == []
    # a speaker-restricted intent is never taught a sentence that skips its gate
    _, gated_proposals = rows.review.correct(
        items[gated.id].id, Correction("open up the front door", intent="UnlockDoor",  # type: ignore[index]
                                       slots={"door": "front"}), recognizer)
    assert gated_proposals == []
    path = rows.review.apply(sentence)
    assert path == learned_dir(rows.cfg.state_dir) / "sentences-en.yaml"
    written = yaml.safe_load(path.read_text())
    assert written["intents"]["HassTurnOn"]["data"] == [
        {"sentences": ["make the kitchen bright"], "slots": {"area": "kitchen", "domain": "light"}}]
    result = load_catalog(rows.cfg).recognize("make the kitchen bright")
    assert (result.name, result.slot_values(), result.matched_by) == (
        "HassTurnOn", {"area": "kitchen", "domain": "light"}, "template")


def test_a_name_misheard_twice_becomes_an_alias(rows: Rows) -> None:
    assert substitutions("turn on the kitten lights", "turn on the kitchen lights") == [
        ("kitten", "kitchen")]
    recognizer = load_catalog(rows.cfg)
    proposals = []
    for heard in ("turn on the kitten lights", "switch off the kitten light"):
        intent = "HassTurnOn" if " on " in heard else "HassTurnOff"
        rows.add(heard, intent=intent, outcome=Outcome.HANDLED, outcome_detail=None,
                 slots={"area": "garage"}, confidence=0.3)
        item = rows.review.store.items("pending")[0][0]
        said = heard.replace("kitten", "kitchen")
        _, found = rows.review.correct(item.id, Correction(said, intent=intent,
                                                           slots={"area": "kitchen"}),
                                       recognizer)
        proposals.append([(p.kind, p.status, p.support) for p in found])
    assert proposals == [[("alias", "watching", 1)], [("alias", "pending", 2)]]
    (alias,) = rows.review.store.proposals("pending")
    assert dict(alias.body) == {"list": "area", "heard": "kitten", "value": "kitchen",
                                "out": "kitchen"}
    # before: at best a guess (the fuzzy fallback); after: the alias is a value of the list
    assert recognizer.recognize("turn on the kitten lights").matched_by != "template"
    rows.review.apply(alias)
    result = load_catalog(rows.cfg).recognize("turn on the kitten lights")
    assert (result.name, result.slot_values()["area"], result.matched_by) == (
        "HassTurnOn", "kitchen", "template")
    # the other areas are still there
    assert load_catalog(rows.cfg).recognize("turn on the office lights").name == "HassTurnOn"


def test_discard_deletes_the_audio(rows: Rows) -> None:
    rows.add("static noise")
    item = rows.review.store.items("pending")[0][0]
    path = rows.review.audio_file(item)
    assert path is not None and path.is_file()
    done = rows.review.discard(item.id, "ann", "test")
    assert done.status == "discarded" and done.audio_path is None and not path.exists()
    with pytest.raises(ReviewError) as refused:
        rows.review.correct(item.id, Correction("x", not_command=True), load_catalog(rows.cfg))
    assert refused.value.code == "discarded"


def test_an_older_database_gains_the_review_tables(tmp_path: Path) -> None:
    path = tmp_path / "voiced.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, MIGRATIONS[:2])
    conn.execute("INSERT INTO utterances (site, session_id, started_at, ended_at, text, "
                 "confidence, language, slots, outcome, timings_ms, end_reason, audio_path) "
                 "VALUES ('a', 's', 1, 2, 'hi', 0.5, 'en', '{}', 'not_recognized', '{}', "
                 "'silence', NULL)")
    conn.close()
    history = History(path)
    try:
        assert history.get(1) is not None
        tables = {r[0] for r in history._db().execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"review_items", "review_proposals"} <= tables
        assert history._db().execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        history.close()
