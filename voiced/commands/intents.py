"""`voiced intents recognize|sample`: try the intents without speaking."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voiced.config import load_config
from voiced.errors import VoicedError


def register(sub: Any) -> None:
    """Add `voiced intents`."""
    p: argparse.ArgumentParser = sub.add_parser("intents", help="recognize text, sample sentences")
    isub = p.add_subparsers(dest="intents_command", metavar="ACTION", required=True)
    rec = isub.add_parser("recognize", help="print the intent a sentence matches, as JSON")
    rec.add_argument("text")
    rec.add_argument("--site", default="default")
    rec.add_argument("--speaker", default="unknown")
    _common(rec)
    rec.set_defaults(func=recognize)
    sample = isub.add_parser("sample", help="print example sentences, one per line")
    sample.add_argument("-n", type=int, default=None, help="at most this many")
    _common(sample)
    sample.set_defaults(func=sample_sentences)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--intents", type=Path, action="append", metavar="PATH",
                   help="intent file or folder (repeatable; default from the config)")
    p.add_argument("--config", type=Path, help="voiced.yaml (areas, language, intent paths)")
    p.add_argument("--language", help="use this language's intent files (default: the main "
                                      "language, intents.language)")


def _load(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """The config and the intents; None (after printing why) when they do not load."""
    from voiced.intents.catalog import load_catalog

    try:
        config = load_config(args.config)
        return config, load_catalog(config, list(args.intents) if args.intents else None)
    except VoicedError as exc:
        print(f"voiced intents: {exc.message}", file=sys.stderr)
        return None


def recognize(args: argparse.Namespace) -> int:
    """`voiced intents recognize TEXT`."""
    loaded = _load(args)
    if loaded is None:
        return 1
    config, recognizer = loaded
    context: dict[str, Any] = {"site": args.site, "speaker": args.speaker,
                               "language": args.language}
    area = config.sites.area_for(args.site)
    if area:
        context["area"] = area
    result = recognizer.recognize(args.text, context)
    print(json.dumps({
        "intent": result.name,
        "slots": result.slot_values(),
        "confidence": round(result.confidence, 4),
        "matched_by": result.matched_by if result.recognized else None,
    }, ensure_ascii=False))
    return 0


def sample_sentences(args: argparse.Namespace) -> int:
    """`voiced intents sample`."""
    loaded = _load(args)
    if loaded is None:
        return 1
    _, recognizer = loaded
    for sentence in recognizer.for_language(args.language).sample(args.n):
        print(sentence)
    return 0
