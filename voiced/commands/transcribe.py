"""`voiced transcribe FILE ...`: speech recognition and intents on WAV files.

Prints one JSON line per file:

    {"file": ..., "text": ..., "confidence": 0..1, "language": ..., "is_speech": ...,
     "intent": name-or-null, "slots": {...}, "timings": {"load_ms", "asr_ms", "nlu_ms"}}

`load_ms` (model loading and warm-up) appears on the first line only. A file that cannot
be read gives a line with `"error": {"code", "message"}` and the exit status 1. Audio the
recognizer judges not speech, or below `asr.min_confidence`, is not sent to the intents
(as in the daemon). `transcribe_pcm` is the same work for other callers (the REST upload).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voiced.errors import VoicedError

if TYPE_CHECKING:
    from voiced.asr.base import Transcriber
    from voiced.config import Config
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    """Add `voiced transcribe`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "transcribe", help="transcribe WAV files and match intents (one JSON line per file)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="WAV files (any format)")
    p.add_argument("--asr", choices=["pocketsphinx", "whisper"], help="recognizer backend")
    p.add_argument("--model", help="whisper model name or checkpoint path")
    p.add_argument("--intents", type=Path, action="append", metavar="PATH",
                   help="intent YAML file or folder (repeatable; default: intents.paths)")
    p.add_argument("--config", type=Path, metavar="FILE", help="voiced.yaml")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], help="whisper device")
    p.add_argument("--language", help="recognition language (whisper: a code or auto)")
    p.add_argument("--site", default="default",
                   help="satellite the audio is treated as coming from (intent context)")
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"voiced transcribe: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """Transcribe every file; 0 when all succeeded, 1 otherwise."""
    from voiced.asr.service import asr_intents, create_transcriber
    from voiced.audio.wav import read_wav_file
    from voiced.config import AsrConfig, load_config

    try:
        config = load_config(args.config)
        overrides = {"backend": args.asr, "model": args.model, "device": args.device,
                     "language": args.language}
        asr = AsrConfig.model_validate(
            {**config.asr.model_dump(), **{k: v for k, v in overrides.items() if v}}
        )
        recognizer = _load_intents(config, args.intents)
        intents = asr_intents(recognizer) if recognizer is not None else None
        transcriber = create_transcriber(asr, intents, config.state_dir)
        started = time.perf_counter()
        transcriber.load()
        load_ms: float | None = (time.perf_counter() - started) * 1000
    except VoicedError as exc:
        return _fail(exc.message if exc.code != "config_invalid" else str(exc))
    except ValueError as exc:  # pydantic's ValidationError for a bad override
        return _fail(str(exc))

    context: dict[str, Any] = {"site": args.site, "speaker": "unknown"}
    area = config.sites.area_for(args.site)
    if area:
        context["area"] = area
    status = 0
    for path in args.files:
        line: dict[str, Any] = {"file": str(path)}
        try:
            pcm = read_wav_file(path)
            line.update(
                transcribe_pcm(transcriber, recognizer, pcm, asr.min_confidence, context)
            )
        except OSError as exc:
            status = 1
            line["error"] = {"code": "file_unreadable", "message": f"{path}: {exc.strerror}"}
            print(f"voiced transcribe: {path}: {exc.strerror}", file=sys.stderr)
        except VoicedError as exc:
            status = 1
            line["error"] = {"code": exc.code, "message": f"{path}: {exc.message}"}
            print(f"voiced transcribe: {path}: {exc.message}", file=sys.stderr)
        else:
            if load_ms is not None:
                line["timings"] = {"load_ms": round(load_ms, 1), **line["timings"]}
                load_ms = None
        print(json.dumps(line, ensure_ascii=False, default=str), flush=True)
    return status


def _load_intents(config: Config, given: list[Path] | None) -> IntentRecognizer | None:
    """The intent catalog for `--intents` (or the config's paths when they exist)."""
    paths = given or [p for p in config.intents.paths if p.exists()]
    if not paths:
        log.info("no intent files: transcribing without intents")
        return None
    missing = [p for p in paths if not p.exists()]
    if missing:
        from voiced.errors import IntentError

        raise IntentError("intents_missing", f"no such intent file or folder: {missing[0]}")
    from voiced.intents.catalog import load_catalog

    return load_catalog(config, paths)


def transcribe_pcm(
    transcriber: Transcriber,
    recognizer: IntentRecognizer | None,
    pcm: bytes,
    min_confidence: float = 0.0,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Transcribe internal-format audio and match its intent: the JSON fields of one line."""
    started = time.perf_counter()
    transcript = transcriber.transcribe(pcm)
    asr_ms = (time.perf_counter() - started) * 1000
    out: dict[str, Any] = {
        "text": transcript.text,
        "confidence": round(transcript.confidence, 4),
        "language": transcript.language,
        "is_speech": transcript.is_speech,
        "intent": None,
        "slots": {},
    }
    nlu_ms = 0.0
    if recognizer is not None and transcript.is_speech and (
        transcript.confidence >= min_confidence
    ):
        started = time.perf_counter()
        result = recognizer.recognize(transcript.text,
                                      {"language": transcript.language, **(context or {})})
        nlu_ms = (time.perf_counter() - started) * 1000
        out["intent"] = result.name
        out["slots"] = result.slot_values()
    out["timings"] = {"asr_ms": round(asr_ms, 1), "nlu_ms": round(nlu_ms, 1)}
    return out
