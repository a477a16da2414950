"""Answer templates that a plugin renders itself, after it has acted.

The router renders ``{slot}``, ``{site}``, ``{speaker.var}``... in option strings before
calling a plugin. Some values only exist after the plugin acted (an HTTP response, a
command's output, a timer's name when it rings); templates for those are written with
doubled braces in voiced.yaml (``"{{response[temperature]}} degrees"``), which the router
turns into single braces, and the plugin fills them here.

Rendering happens on text that already holds slot values, so the formatter refuses
attribute names that start with an underscore: a spoken value containing
``{x.__class__}`` cannot reach into Python objects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from voiced.errors import PluginError

__all__ = ["render_answer"]


class _SafeFormatter(string.Formatter):
    """`str.format` without private attribute access."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        for part in field_name.replace("[", ".").split("."):
            if part.startswith("_"):
                raise PluginError(
                    "answer_template", f"{{{field_name}}}: names starting with '_' are not allowed"
                )
        return super().get_field(field_name, args, kwargs)


_FORMATTER = _SafeFormatter()


def render_answer(template: str, values: Mapping[str, Any]) -> str:
    """Fill `template` from `values`; raise PluginError("answer_template") on a bad field.

    `values` is the request's variables plus what the plugin learned (``response``,
    ``stdout``...); item access (``{response[items][0][name]}``) works on JSON data.
    """
    try:
        return _FORMATTER.vformat(template, (), dict(values))
    except PluginError:
        raise
    except KeyError as exc:
        raise PluginError(
            "answer_template",
            f"answer template {template!r} uses {exc.args[0]!r}, which this answer lacks "
            f"(it has: {', '.join(sorted(values)) or 'nothing'})",
        ) from exc
    except (IndexError, AttributeError, TypeError, ValueError) as exc:
        raise PluginError(
            "answer_template", f"answer template {template!r} could not be filled: {exc}"
        ) from exc
