"""Change detection for intent files (polling: no inotify dependency, works on any FS)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

INTENT_SUFFIXES = (".yaml", ".yml")


def snapshot(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """(mtime_ns, size) of every intent file under `paths` (files or folders)."""
    found: dict[Path, tuple[int, int]] = {}
    for path in paths:
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            if file.suffix in INTENT_SUFFIXES and file.is_file():
                try:
                    st = file.stat()
                except OSError:
                    continue
                found[file] = (st.st_mtime_ns, st.st_size)
    return found
