"""`voiced dataset export|check`: the review queue's corrections as training data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from voiced.errors import VoicedError


def register(sub: Any) -> None:
    """Add `voiced dataset`."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "dataset", help="export corrected utterances as training data")
    cmds = parser.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    p = cmds.add_parser("export", help="write the corrected utterances as a Hugging Face "
                        "audiofolder (hf) or NeMo manifests (nemo)")
    p.add_argument("out", type=Path, metavar="OUT", help="folder to write (new or empty)")
    p.add_argument("--format", choices=("hf", "nemo"), default="hf")
    p.add_argument("--config", type=Path, help="voiced.yaml (for state_dir)")
    p.add_argument("--state-dir", type=Path, help="state folder (default: from the config)")
    p.add_argument("--language", help="only utterances heard in this language")
    p.add_argument("--validation", type=float, default=0.2,
                   help="share of utterances for validation (default 0.2); each speaker's "
                        "utterances stay on one side")
    p.add_argument("--seed", type=int, default=0, help="another seed, another split")
    p.add_argument("--with-speakers", action="store_true",
                   help="include speaker names (left out by default)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in OUT")
    p.set_defaults(func=_guarded(_export))
    p = cmds.add_parser("check", help="check an export against its format's schema")
    p.add_argument("out", type=Path, metavar="OUT")
    p.set_defaults(func=_guarded(_check))


def _guarded(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except VoicedError as exc:
            print(f"voiced dataset {args.dataset_command}: {exc.message}", file=sys.stderr)
            return 2 if exc.component == "config" else 1
    return run


def _export(args: argparse.Namespace) -> int:
    from voiced.config import load_config
    from voiced.dataset import examples, export

    if not 0 <= args.validation < 1:
        print("voiced dataset export: --validation must be at least 0 and below 1",
              file=sys.stderr)
        return 2
    config = load_config(args.config)
    state_dir = args.state_dir or config.state_dir
    found = examples(state_dir, args.language)
    counts = export(found, args.out, args.format, speakers=args.with_speakers,
                    validation=args.validation, seed=args.seed, overwrite=args.overwrite)
    print(json.dumps({"out": str(args.out), "format": args.format, **counts}))
    if counts["validation"] == 0:
        print("voiced dataset export: no validation split (one speaker, or --validation 0): "
              "fine-tuning needs one", file=sys.stderr)
    return 0


def _check(args: argparse.Namespace) -> int:
    from voiced.dataset import detect, read, validate

    problems = validate(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    parts = read(args.out)
    print(json.dumps({"out": str(args.out), "format": detect(args.out),
                      **{name: len(chunk) for name, chunk in parts.items()}}))
    return 0
