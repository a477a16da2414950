"""`voiced bench ...`: benchmarks. Each lives in `voiced.bench.<name>` with `register(sub)`."""

from __future__ import annotations

import argparse
from typing import Any

BENCH_MODULES: tuple[str, ...] = (
    "voiced.bench.latency",
    "voiced.bench.asr",
    "voiced.bench.speakers",
    "voiced.bench.intents",
    "voiced.bench.ingest",
    "voiced.bench.http",
    "voiced.bench.accuracy",
    "voiced.bench.arbitration",
)


def register(sub: Any) -> None:
    """Add `voiced bench` and its benchmarks."""
    parser: argparse.ArgumentParser = sub.add_parser("bench", help="run a benchmark")
    from voiced.cli import register_modules

    register_modules(parser.add_subparsers(dest="bench", metavar="BENCHMARK"), BENCH_MODULES)
