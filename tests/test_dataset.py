"""`voiced dataset export`: corrected review items (real espeak-ng speech, real SQLite) as a
Hugging Face audiofolder and as NeMo manifests, checked against those formats' documented
schemas (the `datasets` package is not installed here), with a split that keeps each
speaker on one side, and speaker names only when asked."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile
from review_support import corrected_state

from voiced.cli import main
from voiced.dataset import DatasetError, examples, export, read, split, validate

ENTRIES = [
    ("make the kitchen bright", "en-us", "HassTurnOn", {"area": "kitchen", "domain": "light"},
     "alice"),
    ("kitchen lights please", "en-us", "HassTurnOn", {"area": "kitchen", "domain": "light"},
     "alice"),
    ("darken the office", "en-us+f2", "HassTurnOff", {"area": "office", "domain": "light"},
     "bob"),
    ("what a lovely day", "en-us+f2", None, {}, "bob"),
    ("put some music on", "en-us+m2", "PlayMusic", {}, None),
    ("how late is it", "en-gb-x-rp", "HassGetTime", {}, None),
]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("state")
    corrected_state(folder, ENTRIES)
    return folder


def speakers_of(parts: dict[str, list]) -> dict[str, set[str | None]]:  # type: ignore[type-arg]
    return {name: {e.speaker for e in chunk} for name, chunk in parts.items()}


def test_the_split_keeps_each_speaker_on_one_side(state: Path) -> None:
    found = examples(state)
    assert [e.text for e in found] == [text for text, *_ in ENTRIES]
    assert found[0].duration_s > 0.5 and found[0].intent == "HassTurnOn"
    for seed in range(8):
        parts = split(found, 0.3, seed)
        assert parts["train"] and parts["validation"], seed
        named = {s for s in speakers_of(parts)["train"] if s}
        assert not named & {s for s in speakers_of(parts)["validation"] if s}, seed
        assert sorted(e.key for chunk in parts.values() for e in chunk) == \
            sorted(e.key for e in found)
    assert split(found, 0.3, 1) == split(found, 0.3, 1)
    assert split(found, 0.0, 0)["validation"] == []


def test_hugging_face_audiofolder(state: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hf"
    assert main(["dataset", "export", "--format", "hf", "--state-dir", str(state),
                 "--validation", "0.3", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["train"] + counts["validation"] == len(ENTRIES) and counts["validation"]
    assert validate(out) == []
    rows = []
    for name in ("train", "validation"):
        with (out / name / "metadata.csv").open(newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == ["file_name", "transcription", "intent", "slots",
                                         "language", "duration"]  # no speaker names
            for row in reader:
                info = soundfile.info(str(out / name / row["file_name"]))
                assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
                rows.append(row)
    by_text = {r["transcription"]: r for r in rows}
    assert json.loads(by_text["make the kitchen bright"]["slots"]) == {"area": "kitchen",
                                                                       "domain": "light"}
    assert by_text["what a lovely day"]["intent"] == ""  # not a command
    assert "load_dataset(\"audiofolder\"" in (out / "README.md").read_text()
    assert main(["dataset", "check", str(out)]) == 0
    # an earlier export is not overwritten unless asked
    assert main(["dataset", "export", "--state-dir", str(state), str(out)]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["dataset", "export", "--state-dir", str(state), "--with-speakers",
                 "--overwrite", str(out)]) == 0
    with (out / "train" / "metadata.csv").open(newline="") as f:
        assert "speaker" in (csv.DictReader(f).fieldnames or [])
    parts = read(out)
    assert {s for chunk in parts.values() for s in (e.speaker for e in chunk)} >= {"alice",
                                                                                   "bob"}
    # a file the metadata does not name is caught
    some = next((out / "train").glob("*.wav"))
    (out / "train" / "stray.wav").write_bytes(some.read_bytes())
    assert any("differ" in p for p in validate(out))


def test_nemo_manifests(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "nemo"
    counts = export(examples(state), out, "nemo", validation=0.3)
    assert counts["validation"] > 0 and validate(out) == []
    for name in ("train", "validation"):
        lines = (out / f"{name}_manifest.json").read_text().splitlines()
        assert len(lines) == counts[name]
        for line in lines:
            entry = json.loads(line)
            assert set(entry) == {"audio_filepath", "duration", "text", "lang", "intent",
                                  "slots"}
            path = Path(entry["audio_filepath"])
            assert path.is_absolute() and path.parent == (out / "audio").resolve()
            assert abs(soundfile.info(str(path)).duration - entry["duration"]) < 0.01
    # JSON carries U+2028/U+2029/U+0085 raw inside strings (a slot value, a speaker name):
    # a line is still one line (str.splitlines() cut it in two: "not JSON")
    manifest = out / "train_manifest.json"
    entries = [json.loads(line) for line in manifest.read_text().split("\n") if line]
    entries[0]["slots"] = json.dumps({"name": "a\u2028b\u2029c\u0085d"}, ensure_ascii=False)
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    assert "\u2028" in manifest.read_text() and validate(out) == []
    assert len(read(out)["train"]) == counts["train"]
    # a line without text breaks the schema
    first = json.loads(manifest.read_text().split("\n")[0])
    del first["text"]
    manifest.write_text(json.dumps(first) + "\n")
    assert validate(out) == [f"{manifest}:1: needs audio_filepath (text), duration (seconds) "
                             "and text"]


def test_nothing_to_export(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as missing:
        examples(tmp_path / "nowhere")
    assert missing.value.code == "no_history"
    empty = tmp_path / "state"
    corrected_state(empty, [])
    assert examples(empty) == []
    with pytest.raises(DatasetError) as none:
        export([], tmp_path / "out", "hf")
    assert none.value.code == "no_examples"
    assert validate(tmp_path) == [f"{tmp_path}: neither train/metadata.csv (hf) nor "
                                  "train_manifest.json (nemo); export one with voiced "
                                  "dataset export"]
