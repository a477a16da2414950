"""Reading a YAML file with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from voiced.errors import VoicedError


def read_yaml(path: Path, error: type[VoicedError], code: str) -> tuple[Any, str]:
    """(data, text) of a YAML file; `error(code, "FILE[:LINE]: ...")` when it cannot be read
    or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(code, f"{path}: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text), text
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(code, f"{where}: YAML syntax error: {problem}") from exc
