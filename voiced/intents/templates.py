"""Templated handler options: `{slot}`, `{site}`, `{area}`, `{speaker}`, `{speaker.var}`.

A string that is exactly one field (`"{brightness}"`) renders to the value itself, so a
number stays a number in a JSON payload; any other string renders to text. `{{` and `}}`
become literal braces (for templates that a plugin fills itself later). Attribute names
starting with `_` are refused so a value can never reach into Python objects.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from voiced.errors import PluginError

BUILTIN_FIELDS = frozenset({"site", "area", "speaker", "intent", "text", "session_id", "lang"})
"""Names every template may use besides the intent's slots."""

_SINGLE_FIELD = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\}$")


class SpeakerVars:
    """`{speaker}` renders the name; `{speaker.playlist}` a per-person variable."""

    __slots__ = ("_name", "_vars")

    def __init__(self, name: str, variables: Mapping[str, Any]) -> None:
        self._name = name
        self._vars = dict(variables)

    def __str__(self) -> str:
        return self._name

    def __format__(self, spec: str) -> str:
        return format(self._name, spec)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self._vars[key]
        except KeyError:
            raise PluginError(
                "template_missing",
                f"speaker {self._name!r} has no variable {key!r} in voiced.yaml "
                f"(has: {', '.join(sorted(self._vars)) or 'none'})",
            ) from None


class _Formatter(string.Formatter):
    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        if any(part.startswith("_") for part in re.split(r"[.\[\]]", field_name) if part):
            raise PluginError("template_invalid", f"template field {{{field_name}}} is not allowed")
        return super().get_field(field_name, args, kwargs)

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        if isinstance(key, int) or key not in kwargs:
            raise PluginError("template_missing",
                              f"template needs {{{key}}}, which has no value here")
        value = kwargs[key]
        if value is None:
            raise PluginError("template_missing", f"template needs {{{key}}}, which is empty here")
        return value


_FORMATTER = _Formatter()


def fields(value: Any) -> set[str]:
    """Root names of every template field in a (nested) option value."""
    found: set[str] = set()
    if isinstance(value, str):
        try:
            for _, name, _, _ in _FORMATTER.parse(value):
                if name:
                    found.add(re.split(r"[.\[]", name, maxsplit=1)[0])
        except ValueError:
            pass  # reported by check()
    elif isinstance(value, Mapping):
        for v in value.values():
            found |= fields(v)
    elif isinstance(value, list | tuple):
        for v in value:
            found |= fields(v)
    return found


def syntax_errors(value: Any, path: str = "") -> list[str]:
    """Malformed templates (unbalanced braces) in a nested option value."""
    if isinstance(value, str):
        try:
            list(_FORMATTER.parse(value))
        except ValueError as exc:
            return [f"{path or 'value'}: {exc} in {value!r}"]
        return []
    if isinstance(value, Mapping):
        return [e for k, v in value.items() for e in syntax_errors(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list | tuple):
        return [e for i, v in enumerate(value) for e in syntax_errors(v, f"{path}[{i}]")]
    return []


def is_template(value: Any) -> bool:
    """True for a string containing at least one template field."""
    return isinstance(value, str) and bool(fields(value))


def render(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render every template in a nested option value."""
    if isinstance(value, str):
        single = _SINGLE_FIELD.match(value)
        if single:
            obj, _ = _FORMATTER.get_field(single.group(1), (), variables)
            return str(obj) if isinstance(obj, SpeakerVars) else obj
        return _FORMATTER.vformat(value, (), variables)
    if isinstance(value, Mapping):
        return {k: render(v, variables) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render(v, variables) for v in value]
    return value


_UNSAFE_SEGMENT = re.compile(r"[/+#\x00-\x1f\x7f]")


def render_fields(template: str, variables: Mapping[str, Any],
                  insert: Callable[[str, str], str],
                  literal: Callable[[str], str] = lambda text: text) -> str:
    """Render `template` once, passing each inserted value through `insert(field, text)`
    and each literal piece (the configuration's own text, `{{`/`}}` already single)
    through `literal`. An inserted value is never parsed again."""
    out = []
    for text, field, spec, conversion in _FORMATTER.parse(template):
        out.append(literal(text))
        if field is None:
            continue
        obj, _ = _FORMATTER.get_field(field, (), variables)
        text = _FORMATTER.format_field(_FORMATTER.convert_field(obj, conversion), spec or "")
        out.append(insert(field, text))
    return "".join(out)


def render_topic(template: str, variables: Mapping[str, Any]) -> str:
    """Render an MQTT topic template; every inserted value must be one topic segment.

    Raises ValueError naming the field whose value is not (a `/`, `+`, `#`, a control
    character, or empty).
    """
    def segment(field: str, text: str) -> str:
        if not text or _UNSAFE_SEGMENT.search(text):
            raise ValueError(f"{{{field}}} is {text[:60]!a}, which cannot be one MQTT "
                             "topic segment")
        return text

    return render_fields(template, variables, segment)


def render_url(template: str, variables: Mapping[str, Any]) -> str:
    """Render a URL template with every inserted value percent-encoded (`/`, `?`, `#`,
    `&` included), so a slot value stays inside its path segment or query value. A value
    made only of dots (`.`, `..`) is a dot segment: its dots become `%2E`, so it cannot
    climb out of its segment (send the URL as encoded: a client that re-normalises
    `%2E%2E` undoes this). Values from voiced.yaml (`{speaker.VAR}`) are the
    configuration's own and go in as they are."""
    from urllib.parse import quote

    def encode(field: str, text: str) -> str:
        if field.startswith("speaker."):
            return text
        if text and not text.strip("."):
            return "%2E" * len(text)
        return quote(text, safe="")

    return render_fields(template, variables, encode)


def render_argv(argv: Sequence[Any], variables: Mapping[str, Any]) -> list[Any]:
    """Render a program's argument list: the program itself is never a template, and an
    argument whose template does not start with `-` must not start with `-` once
    rendered (a slot value such as `--delete` must not become an option). A number (a
    range slot) becomes its text, a negative one included."""
    if argv and isinstance(argv[0], str) and is_template(argv[0]):
        raise ValueError("argv[0] (the program) cannot be a template")
    rendered = []
    for item in argv:
        value = render(item, variables)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # a number slot is its text; "-5" is a number, not an option
        elif (isinstance(item, str) and isinstance(value, str) and value.startswith("-")
                and not item.startswith("-")):
            raise ValueError(f"{item} is {value[:60]!a}, which would become an option")
        rendered.append(value)
    return rendered


def render_options(options: Mapping[str, Any], variables: Mapping[str, Any],
                   topic_fields: Sequence[str] = (),
                   argv_fields: Sequence[str] = (),
                   url_fields: Sequence[str] = (),
                   answer_fields: Sequence[str] = ()) -> Any:
    """`render` for a plugin's options: topic fields by `render_topic`, argument lists by
    `render_argv`, URLs by `render_url`, the rest as they are. Answer fields stay as
    written: the plugin renders them once, later (voiced_plugins._render)."""
    rendered: dict[str, Any] = {}
    for key, value in options.items():
        if key in answer_fields:
            rendered[key] = value
        elif key in topic_fields and isinstance(value, str):
            rendered[key] = render_topic(value, variables)
        elif key in argv_fields and isinstance(value, list | tuple):
            rendered[key] = render_argv(value, variables)
        elif key in url_fields and isinstance(value, str):
            rendered[key] = render_url(value, variables)
        else:
            rendered[key] = render(value, variables)
    return rendered
