"""`voiced bench ...`: benchmarks. Each lives in `voiced.bench.<name>` with `register(sub)`."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

BENCH_MODULES: tuple[str, ...] = (
    "voiced.bench.latency",
    "voiced.bench.asr",
    "voiced.bench.speakers",
    "voiced.bench.intents",
)


def register(sub: Any) -> None:
    """Add `voiced bench` and its benchmarks."""
    parser: argparse.ArgumentParser = sub.add_parser("bench", help="run a benchmark")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(bench_sub)
