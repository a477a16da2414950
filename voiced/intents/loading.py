"""Reading intent files: Home Assistant's merge rules and errors that name file and line.

Each file is checked on its own (YAML syntax, structure, templates), so an error points
at the entry that is wrong. References to lists and expansion rules are checked after
all files are merged, since one file may use a list another defines.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from hassil import Intents, parse_sentence
from hassil.expression import Expression, Group, ListReference, RuleReference

from voiced.errors import IntentError
from voiced.languages import language_code
from voiced.watch import folder_intent_files
from voiced.yamlfile import read_yaml

MAX_RANGE_VALUES = 10_000
"""Values one range list may have: each is spelled out for the speech grammar and the fuzzy
matcher (a range of 86 400 took a minute to start; one of 10^8 never started)."""
LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*")
"""A language code as Home Assistant's sentence files use them (en, de, pt-BR, zh-cn)."""




def file_language(document: Mapping[str, Any], default: str) -> str:
    """The language of an intents file (its `language:` key; none: `default`)."""
    return language_code(document.get("language") or default)


def intent_files(paths: Sequence[Path]) -> list[Path]:
    """Every *.yaml/*.yml file under `paths`, in load order (hidden ones left out:
    voiced.watch.folder_intent_files); IntentError for a missing one, or one that is not
    a plain file (a FIFO, a socket, a device: reading one could wait for ever)."""
    files: list[Path] = []
    for path in paths:
        found = list(folder_intent_files(path)) if path.is_dir() else [path]
        for file in found:
            if not file.exists():
                raise IntentError("intents_invalid", f"{file}: no such intent file or folder"
                                  + (" (a link to nothing)" if file.is_symlink() else ""))
            if not file.is_file():
                raise IntentError("intents_invalid",
                                  f"{file}: not a plain file ({_kind(file)}); intent files "
                                  "must be regular files")
        files.extend(found)
    return files


def _kind(path: Path) -> str:
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def read_file(path: Path) -> tuple[dict[str, Any], list[Reference]]:
    """One intents file, checked; also the list and rule references its templates make."""
    data, text = read_yaml(path, IntentError, "intents_invalid")
    data = data or {}
    if not isinstance(data, dict):
        raise IntentError("intents_invalid", f"{path}:1: expected a mapping with `intents:`")
    references = _Checker(path, text).check(data)
    try:
        parsed = Intents.from_dict({"language": "en", "intents": {}, **data})
        # templates parse lazily: force them now so errors point at this file
        for body in parsed.intents.values():
            for block in body.data:
                _ = block.sentences
                _ = block.expansion_rules
        _ = parsed.expansion_rules
    except Exception as exc:
        raise IntentError("intents_invalid",
                          f"{path}:{_line_of(text, exc)}: invalid intents: {exc}") from exc
    return data, references


@dataclass(frozen=True, slots=True)
class Reference:
    """A template's {list} or <rule>, which some file must define."""

    kind: str
    name: str
    where: str
    """file:line of the template."""


class _Checker:
    """Checks one file's structure; errors name the line of the offending entry."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines: dict[tuple[Any, ...], int] = {}
        self.references: list[Reference] = []
        root = yaml.compose(text)
        if root is not None:
            self._index(root, ())

    def _index(self, node: yaml.Node, at: tuple[Any, ...]) -> None:
        self.lines.setdefault(at, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self.lines[(*at, key.value)] = key.start_mark.line + 1
                self._index(value, (*at, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._index(item, (*at, index))

    def where(self, at: tuple[Any, ...]) -> str:
        while at and at not in self.lines:
            at = at[:-1]
        return f"{self.path}:{self.lines.get(at, 1)}"

    def fail(self, at: tuple[Any, ...], reason: str) -> NoReturn:
        raise IntentError("intents_invalid", f"{self.where(at)}: {reason}")

    def mapping(self, at: tuple[Any, ...], value: Any, what: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(at, f"{what} must be a mapping")
        return value

    def check(self, data: dict[str, Any]) -> list[Reference]:
        language = data.get("language")
        if language is not None and not (isinstance(language, str)
                                         and LANGUAGE_CODE.fullmatch(language)):
            self.fail(("language",), f"`language` must be a language code such as en, de or "
                                     f"pt-BR, not {language!r}")
        for name, body in self.mapping(("intents",), data.get("intents"), "`intents`").items():
            at: tuple[Any, ...] = ("intents", name)
            if not isinstance(body, dict) or not isinstance(body.get("data"), list):
                self.fail(at, f"intent {name} needs a `data` list")
            for index, block in enumerate(body["data"]):
                self._block(name, (*at, "data", index), block)
        for name, spec in self.mapping(("lists",), data.get("lists"), "`lists`").items():
            self._list(("lists", name), name, spec)
        rules = self.mapping(("expansion_rules",), data.get("expansion_rules"), "`expansion_rules`")
        for name, body in rules.items():
            self._template(("expansion_rules", name), body, {}, {})
        skip = data.get("skip_words") or []
        if not isinstance(skip, list) or not all(isinstance(w, str) for w in skip):
            self.fail(("skip_words",), "`skip_words` must be a list of strings")
        return self.references

    def _block(self, intent: str, at: tuple[Any, ...], block: Any) -> None:
        sentences = block.get("sentences") if isinstance(block, dict) else None
        if not isinstance(sentences, list) or not sentences:
            self.fail(at, f"intent {intent}: every data block needs a `sentences` list")
        for key in ("slots", "requires_context", "excludes_context"):
            self.mapping((*at, key), block.get(key), f"intent {intent}: `{key}`")
        lists = self.mapping((*at, "lists"), block.get("lists"), f"intent {intent}: `lists`")
        for name, spec in lists.items():
            self._list((*at, "lists", name), name, spec)
        rules = self.mapping((*at, "expansion_rules"), block.get("expansion_rules"),
                             f"intent {intent}: `expansion_rules`")
        for index, sentence in enumerate(sentences):
            self._template((*at, "sentences", index), sentence, lists, rules)
        for name, body in rules.items():
            self._template((*at, "expansion_rules", name), body, lists, rules)

    def _list(self, at: tuple[Any, ...], name: str, spec: Any) -> None:
        spec = self.mapping(at, spec, f"list {name}")
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list):
                self.fail((*at, "values"), f"list {name}: `values` must be a list")
            for index, value in enumerate(values):
                if not (isinstance(value, str) or (isinstance(value, dict) and "in" in value)):
                    self.fail((*at, "values", index),
                              f"list {name}: a value is a string or a mapping with `in`")
        elif "range" in spec:
            bounds = self.mapping((*at, "range"), spec["range"], f"list {name}: `range`")
            start, stop = bounds.get("from"), bounds.get("to")
            if not isinstance(start, int) or not isinstance(stop, int) or start > stop:
                self.fail((*at, "range"), f"list {name}: `range` needs integers from <= to")
            step = bounds.get("step", 1)
            if not isinstance(step, int) or isinstance(step, bool) or step <= 0:
                self.fail((*at, "range", "step"), f"list {name}: `step` must be a positive "
                          f"integer, got {step!r:.40}")
            count = (stop - start) // step + 1
            if count > MAX_RANGE_VALUES:
                self.fail((*at, "range"), f"list {name}: a range of {count} values; voiced "
                          f"spells every value of a range (the speech grammar, the fuzzy "
                          f"matcher), so at most {MAX_RANGE_VALUES}: use a `step`, a smaller "
                          "range, or two lists (minutes and seconds)")
            multiplier = bounds.get("multiplier", 1)
            if not isinstance(multiplier, int | float) or isinstance(multiplier, bool):
                self.fail((*at, "range", "multiplier"),
                          f"list {name}: `multiplier` must be a number, got {multiplier!r:.40}")
        elif not spec.get("wildcard"):
            self.fail(at, f"list {name}: needs `values`, `range` or `wildcard: true`")

    def _template(self, at: tuple[Any, ...], text: Any, lists: Mapping[str, Any],
                  rules: Mapping[str, Any]) -> None:
        if not isinstance(text, str):
            self.fail(at, "a sentence template must be a string")
        try:
            sentence = parse_sentence(text)
        except Exception as exc:
            self.fail(at, f"invalid template {text!r}: {exc}")
        for exp in walk(sentence.expression):
            if (isinstance(exp, ListReference) and not exp.is_inline_range
                    and exp.list_name not in lists):
                self.references.append(Reference("list", exp.list_name, self.where(at)))
            elif isinstance(exp, RuleReference) and exp.rule_name not in rules:
                self.references.append(Reference("rule", exp.rule_name, self.where(at)))


def _line_of(text: str, exc: Exception) -> int:
    """Best guess of the line a hassil parse error refers to (1 when unknown)."""
    message = str(exc)
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip().lstrip("- ").strip("\"'")
        if len(stripped) > 3 and stripped in message:
            return number
    return 1


def merge(target: dict[str, Any], source: Mapping[str, Any]) -> None:
    """Merge one intents document into another (Home Assistant's rules)."""
    for key, value in source.items():
        if key == "intents":
            intents = target.setdefault("intents", {})
            for name, body in (value or {}).items():
                entry = intents.setdefault(name, {"data": []})
                entry["data"] = [*entry.get("data", []), *(body or {}).get("data", [])]
        elif key in ("lists", "expansion_rules"):
            target.setdefault(key, {}).update(value or {})
        elif key == "skip_words":
            target["skip_words"] = [*target.get("skip_words", []), *(value or [])]
        else:
            target[key] = value


def check_references(merged: Mapping[str, Any], references: Sequence[Reference]) -> None:
    """IntentError naming the template whose {list} or <rule> no file defines."""
    for ref in references:
        if ref.name not in (merged.get("lists" if ref.kind == "list" else
                                       "expansion_rules") or {}):
            what = f"{{{ref.name}}}" if ref.kind == "list" else f"<{ref.name}>"
            language = merged.get("language")
            of = f" of language {language!r}" if language else ""
            raise IntentError("intents_invalid",
                              f"{ref.where}: {ref.kind} {what} is not defined in any file{of}")


def walk(exp: Expression) -> Iterator[Expression]:
    """An expression and everything inside it."""
    yield exp
    if isinstance(exp, Group):
        for item in exp.items:
            yield from walk(item)
