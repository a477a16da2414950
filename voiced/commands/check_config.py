"""`voiced check-config FILE`: print every problem in a voiced.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from voiced.config import load_config
from voiced.errors import VoicedError


def register(sub: Any) -> None:
    """Add `voiced check-config`."""
    p: argparse.ArgumentParser = sub.add_parser("check-config", help="validate a voiced.yaml")
    p.add_argument("file", type=Path)
    p.add_argument("--intents", action="store_true",
                   help="also load the intents the config points at, and check every "
                        "handler's plugin and options against them")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print each error with file, line, key path and what was expected."""
    try:
        config = load_config(args.file)
        if args.intents:
            from voiced.doctor import Level, check_handlers
            from voiced.intents.catalog import load_catalog

            handlers = check_handlers(config, load_catalog(config))
            if handlers.level == Level.ERROR:
                # the same check `voiced doctor` and start-up make (plugins, options)
                for problem in handlers.detail.split("; "):
                    print(f"{args.file}: handlers: {problem}", file=sys.stderr)
                return 1
    except VoicedError as exc:
        for line in exc.message.splitlines():
            print(line, file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0
