"""`History.query`, the storage behind GET /api/history: every filter, paging, the total,
and text search that takes `%`, `_` and `\\` literally (real SQLite in a temp folder)."""

from __future__ import annotations

from pathlib import Path

from voiced.storage import History, UtteranceRecord


def _row(i: int, text: str, site: str = "kitchen", intent: str | None = None,
         outcome: str = "not_recognized", speaker: str | None = None) -> UtteranceRecord:
    return UtteranceRecord(
        site=site, session_id=f"s{i}", started_at=1000.0 + i, ended_at=1001.0 + i, text=text,
        confidence=0.9, language="en", intent=intent, slots={}, speaker=speaker,
        speaker_confidence=None, outcome=outcome, outcome_detail=None, timings_ms={},
        end_reason="silence")


def test_query_filters_pages_and_searches_literally(tmp_path: Path) -> None:
    history = History(tmp_path / "voiced.db")
    texts = ["a_b", "axb", "100% done", "1000 done", "back\\slash", "Turn ON the lights"]
    for i, text in enumerate(texts):
        history.add_utterance(_row(i, text))
    history.add_utterance(_row(10, "turn on the porch light", site="porch",
                               intent="HassTurnOn", outcome="handled", speaker="alice"))
    try:
        def texts_of(**filters: object) -> list[str]:
            rows, total = history.query(**filters)  # type: ignore[arg-type]
            assert total == len(rows)
            return [r.text for r in rows]

        assert texts_of(text="a_b") == ["a_b"]
        assert texts_of(text="100%") == ["100% done"]
        assert texts_of(text="\\") == ["back\\slash"]
        assert texts_of(text="turn on") == ["turn on the porch light", "Turn ON the lights"]
        assert texts_of(site="porch") == texts_of(intent="HassTurnOn") == \
            texts_of(outcome="handled") == texts_of(speaker="alice") == \
            ["turn on the porch light"]
        assert texts_of(site="kitchen", outcome="handled") == []
        assert texts_of(since=1004.0, until=1010.0) == ["Turn ON the lights", "back\\slash"]
        rows, total = history.query(limit=2, offset=1)
        assert total == 7 and [r.text for r in rows] == ["Turn ON the lights", "back\\slash"]
        rows, total = history.query(site="nowhere")
        assert (rows, total) == ([], 0)
    finally:
        history.close()
