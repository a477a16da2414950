"""Answer templates that a plugin renders itself, after it has acted.

Some values only exist after the plugin acted (an HTTP response, a command's output, a
timer's name when it rings); templates for those are written with doubled braces in
voiced.yaml (``"{{response[temperature]}} degrees in the {area}"``). The router leaves
answer options as written (`PluginOptions.answer_fields`), and `render_answer` renders
them here in one pass: ``{area}`` (a slot, the site, the speaker...) and
``{{response[...]}}`` (what the plugin learned). An inserted value is opaque text, never
read as a template again, so a spoken ``{response[secret]}`` or a speaker named
``{text:>300000000}`` is said as written.

Attribute and item names starting with an underscore are refused (no reaching into
Python objects), widths and precisions are bounded, and the answer is cut at
`MAX_ANSWER` characters.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Mapping
from typing import Any

from voiced.errors import PluginError
from voiced.intents.templates import render_fields

__all__ = ["MAX_ANSWER", "bound_answer", "render_answer"]

log = logging.getLogger(__name__)

MAX_ANSWER = 2000
"""Characters of a spoken answer; longer ones are cut (as the HTTP API bounds its text)."""
_MARK = "\x00"
"""Starts the names that stand for inserted values in the second pass (YAML text holds
no NUL, so no configured field can name one)."""


class _SafeFormatter(string.Formatter):
    """`str.format` without private attribute access."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        for part in re.split(r"[.\[\]]", field_name):
            if part.startswith("_"):
                raise PluginError(
                    "answer_template", f"{{{field_name}}}: names starting with '_' are not allowed"
                )
        return super().get_field(field_name, args, kwargs)


_FORMATTER = _SafeFormatter()


def bound_answer(text: str) -> str:
    """`text`, cut at `MAX_ANSWER` characters (logged)."""
    if len(text) <= MAX_ANSWER:
        return text
    log.warning("answer of %d characters cut to %d", len(text), MAX_ANSWER)
    return text[:MAX_ANSWER]


def _fill(template: str, values: Mapping[str, Any], inserted: Mapping[str, str]) -> str:
    out: list[str] = []
    size = 0
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        piece = literal
        if field is not None:
            if field in inserted:
                piece += inserted[field]
            else:
                if "{" in (spec or "") or any(int(n) > MAX_ANSWER
                                              for n in re.findall(r"\d+", spec or "")):
                    raise PluginError(
                        "answer_template",
                        f"{{{field}:{spec}}}: a format width or precision must be a number "
                        f"up to {MAX_ANSWER}",
                    )
                obj, _ = _FORMATTER.get_field(field, (), values)
                piece += _FORMATTER.format_field(_FORMATTER.convert_field(obj, conversion),
                                                 spec or "")
        out.append(piece)
        size += len(piece)
        if size > MAX_ANSWER:
            break
    return bound_answer("".join(out))


def render_answer(template: str, variables: Mapping[str, Any],
                  values: Mapping[str, Any]) -> str:
    """Fill an answer template as written in voiced.yaml, once; raise
    PluginError("answer_template") on a bad field.

    ``{name}`` takes the request's `variables` (slots, site, speaker...), ``{{name}}``
    what the plugin learned, `values` (``response``, ``stdout``...; the request's
    variables too); item access (``{{response[items][0][name]}}``) works on JSON data.
    """
    inserted: dict[str, str] = {}

    def hold(field: str, text: str) -> str:
        key = f"{_MARK}{len(inserted)}"
        inserted[key] = text
        return "{" + key + "}"

    merged = {**variables, **values}
    try:
        combined = render_fields(template, variables, hold)
        seen = {field for _, field, _, _ in _FORMATTER.parse(combined)}
        if not seen.issuperset(inserted):
            raise PluginError(
                "answer_template",
                f"answer template {template!r} puts a {{slot}} inside a {{{{field}}}}: "
                "a spoken value cannot choose what the plugin fills in",
            )
        return _fill(combined, merged, inserted)
    except PluginError:
        raise
    except KeyError as exc:
        raise PluginError(
            "answer_template",
            f"answer template {template!r} uses {exc.args[0]!r}, which this answer lacks "
            f"(it has: {', '.join(sorted(merged)) or 'nothing'})",
        ) from exc
    except (IndexError, AttributeError, TypeError, ValueError) as exc:
        raise PluginError(
            "answer_template", f"answer template {template!r} could not be filled: {exc}"
        ) from exc
