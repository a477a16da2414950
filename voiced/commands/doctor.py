"""`voiced doctor`: one line per check of the installed environment against the config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from voiced.commands.serve import add_config_flags, apply_overrides
from voiced.config import load_config
from voiced.errors import VoicedError


def register(sub: Any) -> None:
    """Add `voiced doctor`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check Python, backends, models, broker, state folder and intents")
    add_config_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per check")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print every check; exit 1 when something the config needs is broken."""
    from voiced.doctor import Level, run_checks

    try:
        config = apply_overrides(load_config(args.config), args)
    except VoicedError as exc:
        print(f"voiced doctor: {exc.message}", file=sys.stderr)
        return 2
    counts = dict.fromkeys(Level, 0)
    if not args.json:
        print(f"voiced doctor: {args.config or 'built-in defaults'}", flush=True)
    for check in run_checks(config):
        counts[check.level] += 1
        if args.json:
            print(json.dumps(check.as_dict(), ensure_ascii=False), flush=True)
            continue
        line = f"{check.level.value:<8} {check.name:<14} {check.detail}"
        if check.fix and check.level is not Level.OK:
            line += f"\n{'':<23} → {check.fix}"
        print(line, flush=True)
    if not args.json:
        print(f"voiced doctor: {counts[Level.ERROR]} error(s), {counts[Level.WARNING]} "
              "warning(s)")
    return 1 if counts[Level.ERROR] else 0
