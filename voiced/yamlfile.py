"""Reading a YAML file with errors that name the file and line.

Beyond YAML syntax, what a plain `yaml.safe_load` lets through and voiced's readers would
trip over later (with a traceback, or silently) is refused here: text that is not UTF-8, a
key given twice in one mapping (the second silently replaced the first), an alias that
contains itself (walking it never ends), aliases that expand to more than MAX_NODES nodes
(a "billion laughs" file), and nesting too deep for the parser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from voiced.errors import VoicedError

MAX_NODES = 1_000_000
"""Nodes a document may expand to, aliases followed (a config is a few hundred)."""

_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """safe_load, refusing a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class names it
                continue
            if first is not None:
                raise ConstructorError(
                    None, None, f"key {str(key)[:80]!r} appears twice in one mapping (first on "
                    f"line {first}; the second would silently replace it)", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, error: type[VoicedError], code: str) -> tuple[Any, str]:
    """(data, text) of a YAML file; `error(code, "FILE[:LINE]: ...")` when it cannot be read
    or parsed."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(code, f"{path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(code, f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                          f"offset {exc.start}); save the file as UTF-8") from None
    try:
        root = yaml.compose(text, Loader=_Loader)  # type: ignore[arg-type]
        if root is not None:
            _check_expansion(root)
        return yaml.load(text, Loader=_Loader), text  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(code, f"{where}: YAML syntax error: {problem}") from exc
    except _Unsafe as exc:
        raise error(code, f"{path}:{exc.line}: {exc.problem}") from None
    except RecursionError:
        raise error(code, f"{path}: YAML nested too deeply") from None


class _Unsafe(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def _check_expansion(root: yaml.Node) -> None:
    """Refuse an alias that contains itself, and aliases that expand past MAX_NODES
    (walked without recursion: the walk itself must not be the problem)."""
    open_nodes: set[int] = set()
    count = 0
    todo: list[tuple[yaml.Node, bool]] = [(root, True)]
    while todo:
        node, entering = todo.pop()
        if not entering:
            open_nodes.discard(id(node))
            continue
        count += 1
        if count > MAX_NODES:
            raise _Unsafe(node.start_mark.line + 1, f"its aliases expand to over {MAX_NODES} "
                          "values")
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            continue
        if id(node) in open_nodes:
            raise _Unsafe(node.start_mark.line + 1,
                          "a YAML alias refers to a value that contains it (a loop)")
        open_nodes.add(id(node))
        todo.append((node, False))
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair]
            if isinstance(node, yaml.MappingNode) else list(node.value))
        todo.extend((child, True) for child in reversed(children))
