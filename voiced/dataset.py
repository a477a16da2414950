"""Corrected utterances as training data: `voiced dataset export --format hf|nemo OUT`.

Every corrected review item that still has its audio is one example: the audio (16 kHz mono
WAV), the corrected transcript, the intent and slots (none for "not a command"), the
language and, only when asked, the speaker's name. A train/validation split keeps each
speaker on one side (utterances nobody was identified in count as speakers of their own),
so a validation score is never about a voice the model trained on.

Formats, as their documentation defines them:

- `hf`: a Hugging Face `audiofolder`: `train/` and `validation/`, each with its WAV files and
  a `metadata.csv` whose `file_name` column names a file in that folder and whose other
  columns (`transcription`, `intent`, `slots` as JSON, `language`, `duration`, `speaker`)
  become features; `load_dataset("audiofolder", data_dir=OUT)` reads it.
- `nemo`: NeMo ASR manifests `train_manifest.json` and `validation_manifest.json`, one JSON
  object per line with `audio_filepath` (absolute), `duration` (seconds) and `text`, plus
  `lang`, `intent`, `slots` and `speaker`; the WAV files are in `audio/`.

`validate(OUT)` checks an export against those schemas (used by the tests, where the
`datasets` package is not installed, and by `voiced dataset check`); `read(OUT)` reads
either format back (`voiced finetune` uses it).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voiced.const import BYTES_PER_SECOND, SAMPLE_RATE
from voiced.errors import VoicedError

FORMATS = ("hf", "nemo")
SPLITS = ("train", "validation")
HF_COLUMNS = ("file_name", "transcription", "intent", "slots", "language", "duration")
NEMO_MANIFESTS = {split: f"{split}_manifest.json" for split in SPLITS}
WRITTEN = ("train", "validation", "audio", "README.md", *NEMO_MANIFESTS.values())
"""What an export writes in OUT (and what `overwrite` replaces)."""


class DatasetError(VoicedError):
    """An export or a dataset folder that cannot be used; the message says why."""

    component = "dataset"


@dataclass(frozen=True, slots=True)
class Example:
    """One corrected utterance."""

    key: str
    """Unique, used for the file name (the review item id)."""
    audio: Path
    text: str
    language: str
    intent: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    speaker: str | None = None
    """Who spoke (the correction's name, else the voice identified); None: unknown."""
    duration_s: float = 0.0


def examples(state_dir: Path, language: str | None = None) -> list[Example]:
    """The corrected review items with audio, oldest first (from the history database)."""
    from voiced.review import read_kept_audio
    from voiced.review_store import ReviewStore

    database = state_dir / "voiced.db"
    if not database.is_file():
        raise DatasetError("no_history", f"{database} does not exist: nothing was recorded "
                           "(is --state-dir the daemon's state folder?)")
    store = ReviewStore(database)
    try:
        found = []
        offset = 0
        while True:
            items, total = store.items("corrected", limit=500, offset=offset,
                                       language=language)
            found.extend(items)
            offset += len(items)
            if not items or offset >= total:
                break
    finally:
        store.close()
    out = []
    for item in reversed(found):
        path = state_dir / item.audio_path if item.audio_path else None
        if path is None or not path.is_file() or item.text is None:
            continue
        voice = item.speaker or (item.utterance.speaker
                                 if item.utterance.speaker not in (None, "unknown") else None)
        seconds = len(read_kept_audio(path)) / BYTES_PER_SECOND
        out.append(Example(str(item.id), path, item.text, item.utterance.language or "en",
                           item.intent, dict(item.slots), voice, round(seconds, 3)))
    return out


def split(found: Sequence[Example], validation: float = 0.2, seed: int = 0
          ) -> dict[str, list[Example]]:
    """Train and validation sets with every speaker on one side only; deterministic for a
    seed. With two or more speakers (or unknown voices) both sides get some."""
    groups: dict[str, list[Example]] = {}
    for example in found:
        groups.setdefault(f"speaker:{example.speaker}" if example.speaker
                          else f"utterance:{example.key}", []).append(example)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    wanted = validation * len(found)
    chosen: list[str] = []
    held = 0
    for group in order:
        if held >= wanted or len(chosen) == len(order) - 1:
            break
        if chosen and held + len(groups[group]) > wanted:
            continue  # a smaller group may fit better
        chosen.append(group)
        held += len(groups[group])
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for group in order:
        out["validation" if group in chosen else "train"].extend(groups[group])
    return out


def _wav(example: Example, target: Path) -> None:
    from voiced.audio.wav import build_wav
    from voiced.review import read_kept_audio

    target.write_bytes(build_wav(read_kept_audio(example.audio), SAMPLE_RATE))


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetError("out_invalid", f"{out} is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError("out_not_empty", f"{out} is not empty; choose another folder "
                               "or pass --overwrite (which replaces an earlier export there)")
        for name in WRITTEN:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def export(found: Sequence[Example], out: Path, fmt: str, *, speakers: bool = False,
           validation: float = 0.2, seed: int = 0, overwrite: bool = False) -> dict[str, int]:
    """Write `found` in format `fmt` to `out`; returns how many examples each split got."""
    if fmt not in FORMATS:
        raise DatasetError("format_unknown", f"format {fmt!r}: expected one of {FORMATS}")
    if not found:
        raise DatasetError("no_examples", "no corrected utterances with audio to export "
                           "(correct some in the web page's Review view first)")
    _prepare(out, overwrite)
    parts = split(found, validation, seed)
    for name, chunk in parts.items():
        if fmt == "hf":
            _write_hf(out / name, chunk, speakers)
        else:
            _write_nemo(out, name, chunk, speakers)
    (out / "README.md").write_text(_card(fmt, parts, speakers), encoding="utf-8")
    return {name: len(chunk) for name, chunk in parts.items()}


def _write_hf(folder: Path, chunk: Iterable[Example], speakers: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    columns = [*HF_COLUMNS, *(["speaker"] if speakers else [])]
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for example in chunk:
            name = f"{example.key}.wav"
            _wav(example, folder / name)
            row = {"file_name": name, "transcription": example.text,
                   "intent": example.intent or "", "slots": json.dumps(example.slots),
                   "language": example.language, "duration": example.duration_s}
            if speakers:
                row["speaker"] = example.speaker or ""
            writer.writerow(row)


def _write_nemo(out: Path, name: str, chunk: Iterable[Example], speakers: bool) -> None:
    audio = out / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    with (out / NEMO_MANIFESTS[name]).open("w", encoding="utf-8") as f:
        for example in chunk:
            target = audio / f"{example.key}.wav"
            _wav(example, target)
            entry: dict[str, Any] = {"audio_filepath": str(target.resolve()),
                                     "duration": example.duration_s, "text": example.text,
                                     "lang": example.language, "intent": example.intent,
                                     "slots": example.slots}
            if speakers:
                entry["speaker"] = example.speaker
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _card(fmt: str, parts: dict[str, list[Example]], speakers: bool) -> str:
    how = ('load_dataset("audiofolder", data_dir=OUT)' if fmt == "hf" else
           "NeMo ASR manifests: train_manifest.json, validation_manifest.json")
    counts = ", ".join(f"{name} {len(chunk)}" for name, chunk in parts.items())
    names = "included" if speakers else "not included (export with --with-speakers)"
    return (f"# voiced review corrections\n\nUtterances a person corrected in voiced's review "
            f"queue: 16 kHz mono WAV and the corrected transcript, intent and slots.\n\n"
            f"- format: {fmt} ({how})\n- examples: {counts}\n- speaker names: {names}\n"
            "- each speaker's utterances are all in one split\n")


# ---- reading and checking ---------------------------------------------------------------
def detect(out: Path) -> str:
    """The format of an export folder (DatasetError when it is neither)."""
    if (out / "train" / "metadata.csv").is_file():
        return "hf"
    if (out / NEMO_MANIFESTS["train"]).is_file():
        return "nemo"
    raise DatasetError("not_a_dataset", f"{out}: neither train/metadata.csv (hf) nor "
                       f"{NEMO_MANIFESTS['train']} (nemo); export one with voiced dataset "
                       "export")


def read(out: Path) -> dict[str, list[Example]]:
    """Both splits of an export (either format), the audio as file paths."""
    fmt = detect(out)
    parts: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for name in SPLITS:
        if fmt == "hf":
            metadata = out / name / "metadata.csv"
            if not metadata.is_file():
                continue
            with metadata.open(newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    parts[name].append(Example(
                        Path(row["file_name"]).stem, out / name / row["file_name"],
                        row["transcription"], row.get("language") or "en",
                        row.get("intent") or None, json.loads(row.get("slots") or "{}"),
                        row.get("speaker") or None, float(row.get("duration") or 0)))
        else:
            manifest = out / NEMO_MANIFESTS[name]
            if not manifest.is_file():
                continue
            for line in _jsonl_lines(manifest):
                if line.strip():
                    e = json.loads(line)
                    path = Path(e["audio_filepath"])
                    parts[name].append(Example(
                        path.stem, path if path.is_absolute() else out / path, e["text"],
                        e.get("lang") or "en", e.get("intent"), e.get("slots") or {},
                        e.get("speaker"), float(e["duration"])))
    return parts


def validate(out: Path) -> list[str]:
    """Problems with an export folder against its format's documented schema (empty: ok)."""
    import soundfile

    problems: list[str] = []
    try:
        fmt = detect(out)
    except DatasetError as exc:
        return [exc.message]
    if fmt == "hf":
        for name in SPLITS:
            metadata = out / name / "metadata.csv"
            if not metadata.is_file():
                problems.append(f"{metadata}: missing")
                continue
            with metadata.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = reader.fieldnames or []
                if header[:1] != ["file_name"] or "transcription" not in header:
                    problems.append(f"{metadata}: columns {header}; audiofolder needs "
                                    "file_name (and this export transcription)")
                rows = list(reader)
            wavs = {p.name for p in (out / name).glob("*.wav")}
            listed = {r.get("file_name", "") for r in rows}
            if wavs != listed:
                problems.append(f"{out / name}: files and metadata.csv differ: "
                                f"{sorted(wavs ^ listed)[:5]}")
    else:
        for name in SPLITS:
            problems.extend(_check_manifest(out / NEMO_MANIFESTS[name]))
    if problems:
        return problems
    for name, chunk in read(out).items():
        for e in chunk:
            where = f"{name}/{e.key}"
            if not e.audio.is_file():
                problems.append(f"{where}: {e.audio} is missing")
                continue
            info = soundfile.info(str(e.audio))
            if (info.samplerate, info.channels, info.subtype) != (SAMPLE_RATE, 1, "PCM_16"):
                problems.append(f"{where}: {info.samplerate} Hz, {info.channels} channels, "
                                f"{info.subtype}; expected 16 kHz mono PCM_16")
            if abs(info.duration - e.duration_s) > 0.01:
                problems.append(f"{where}: duration {e.duration_s} but the file lasts "
                                f"{info.duration:.3f} s")
            if not e.text.strip():
                problems.append(f"{where}: empty text")
            if fmt == "nemo" and not Path(e.audio).is_absolute():
                problems.append(f"{where}: audio_filepath is not absolute")
    return problems


def _check_manifest(manifest: Path) -> list[str]:
    """A NeMo manifest's lines: JSON objects with audio_filepath, duration and text."""
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    problems = []
    for number, line in enumerate(_jsonl_lines(manifest), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            problems.append(f"{manifest}:{number}: not JSON")
            continue
        if not (isinstance(entry, dict) and isinstance(entry.get("audio_filepath"), str)
                and isinstance(entry.get("duration"), int | float)
                and not isinstance(entry.get("duration"), bool)
                and isinstance(entry.get("text"), str)):
            problems.append(f"{manifest}:{number}: needs audio_filepath (text), duration "
                            "(seconds) and text")
    return problems


def _jsonl_lines(path: Path) -> list[str]:
    """A JSON-lines file's lines: split at "\\n" only. str.splitlines() also splits at
    U+2028, U+2029 and U+0085, which JSON carries raw inside strings (a slot value or a
    speaker name with one made every line of the export "not JSON")."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines
