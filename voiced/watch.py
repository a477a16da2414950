"""Finding intent files in folders, and change detection for them (polling: no inotify
dependency, works on any FS)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

INTENT_SUFFIXES = (".yaml", ".yml")


def folder_intent_files(folder: Path) -> Iterator[Path]:
    """The *.yaml/*.yml entries under `folder`, in load order, hidden ones left out (a
    name starting with "."): what editors and tools leave beside the files (Emacs's
    `.#lights.yaml` lock links, a `.github/workflows/ci.yml` of a git checkout) is not an
    intent file. Entries that are not plain files are yielded too (the loader names them;
    a sub-folder named `x.yaml` is searched like any other)."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if (path.suffix in INTENT_SUFFIXES and not path.is_dir()
                and not any(part.startswith(".") for part in relative)):
            yield path


def snapshot(paths: Iterable[Path]) -> dict[Path, tuple[int, int]]:
    """(mtime_ns, size) of every intent file under `paths` (files or folders)."""
    found: dict[Path, tuple[int, int]] = {}
    for path in paths:
        candidates = folder_intent_files(path) if path.is_dir() else [path]
        for file in candidates:
            try:
                st = file.stat()
            except OSError:
                continue
            found[file] = (st.st_mtime_ns, st.st_size)
    return found
