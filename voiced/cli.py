"""The `voiced` command line.

Each subcommand lives in its own module with a `register(subparsers)` function that adds
its parser and sets `func` to a callable taking the parsed namespace and returning an
exit code. Modules are imported lazily so `voiced --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

COMMAND_MODULES: tuple[str, ...] = (
    "voiced.commands.serve",
    "voiced.commands.check_config",
    "voiced.commands.doctor",
    "voiced.commands.satellite",
    "voiced.commands.bench",
    "voiced.commands.intents",
    "voiced.commands.transcribe",
    "voiced.commands.speakers",
    "voiced.commands.dataset",
    "voiced.commands.finetune",
    "voiced.commands.wyoming",
    "voiced.commands.cluster",
)
"""Modules that each add subcommands (a missing one is skipped with a warning)."""


def register_modules(sub: Any, modules: Sequence[str]) -> None:
    """Let each module add its subcommands (a module that is not there is skipped)."""
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(prog="voiced", description="A private home voice server.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    register_modules(parser.add_subparsers(dest="command", metavar="COMMAND"), COMMAND_MODULES)
    return parser


def setup_logging(verbose: int, quiet: bool) -> None:
    """Configure log handlers (the only place that does)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if verbose < 2:
        for noisy in ("amqtt", "transitions", "asyncio", "numba", "speechbrain"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `voiced` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
