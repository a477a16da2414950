"""Parsing request parameters (query string, JSON body, form fields) into typed values.

Every function raises `ApiError(400, "field_invalid", ...)` naming the field and what was
expected, so a client mistake is never a 500.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from voiced.http.errors import ApiError
from voiced.sites import ID_CHARS_TEXT, SITE_ID_MAX, is_valid_id, safe_repr

TRUE = frozenset({"true", "1", "yes", "on"})
FALSE = frozenset({"false", "0", "no", "off"})
MAX_TEXT = 2000
"""Longest text accepted for text-to-intent (characters)."""
NAME_MAX = 64
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}", re.ASCII)


def invalid(field: str, message: str) -> ApiError:
    """400 `field_invalid` for `field`."""
    return ApiError(400, "field_invalid", f"{field}: {message}", field=field)


def flag(value: Any, field: str, default: bool) -> bool:
    """A boolean from JSON (true/false) or text (true/false/1/0/yes/no/on/off)."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise invalid(field, f"expected true or false, got {safe_repr(value)}")


def site(value: Any, field: str = "site", default: str | None = "default") -> str | None:
    """A site id (the characters MQTT topics allow), or `default` when absent."""
    if value is None or value == "":
        return default
    if not is_valid_id(value, SITE_ID_MAX):
        raise invalid(field, f"{safe_repr(value)} is not a site id; expected 1 to "
                             f"{SITE_ID_MAX} of the characters {ID_CHARS_TEXT}")
    assert isinstance(value, str)
    return value


def integer(value: Any, field: str, default: int, low: int, high: int) -> int:
    """An integer in [low, high] from JSON or text."""
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise invalid(field, f"expected an integer, got {safe_repr(value)}") from None
    if not low <= number <= high:
        raise invalid(field, f"{number} is out of range; expected {low} to {high}")
    return number


def timestamp(value: Any, field: str) -> float | None:
    """Epoch seconds from a number or an ISO 8601 date/time (local time without a zone)."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    else:
        if math.isfinite(number):
            return number
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return when.timestamp()
    raise invalid(field, f"expected epoch seconds or an ISO 8601 time such as "
                         f"2026-12-02T08:30:00, got {safe_repr(value)}")


def text(value: Any, field: str, *, required: bool = False, max_len: int = MAX_TEXT,
         default: str | None = None) -> str | None:
    """A string (stripped of surrounding space), at most `max_len` characters."""
    if value is None:
        if required:
            raise ApiError(400, "field_missing", f"{field} is required", field=field)
        return default
    if not isinstance(value, str):
        raise invalid(field, f"expected a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise ApiError(400, "field_missing", f"{field} is empty", field=field)
    if len(value) > max_len:
        raise invalid(field, f"{len(value)} characters; at most {max_len} are accepted")
    if any(ord(c) < 32 and c not in "\t\n" for c in value) or \
            any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise invalid(field, "contains control characters or lone surrogates")
    return value or default


def name(value: Any, field: str, *, required: bool = False) -> str | None:
    """A person's name as given (enrollment checks it further). Invisible format
    characters (Unicode category Cf: bidi overrides such as U+202E, zero-width joiners)
    are refused: they make one name look like another, or `\u202egnp.exe` like
    `exe.png`."""
    found = text(value, field, required=required, max_len=NAME_MAX)
    if found is not None:
        hidden = next((c for c in found if unicodedata.category(c) == "Cf"), None)
        if hidden is not None:
            raise invalid(field, f"contains the invisible format character "
                                 f"U+{ord(hidden):04X} ({unicodedata.name(hidden, 'unnamed')})"
                                 "; a name is letters, digits, spaces and punctuation")
    return found


def language(value: Any, field: str = "language") -> str | None:
    """A language code such as en, de or pt-BR."""
    found = text(value, field, max_len=32)
    if found is not None and not _LANGUAGE.fullmatch(found):
        raise invalid(field, f"{safe_repr(found)} is not a language code; expected e.g. "
                             "en, de or pt-BR")
    return found


async def json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with only `allowed` keys."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type {safe_repr(request.headers.get('Content-Type') or 'none')}"
                       "; expected application/json", field="Content-Type")
    try:
        body = await request.json(loads=_strict_loads)
    except LookupError:  # an unknown charset
        raise ApiError(415, "unsupported_media_type",
                       f"charset {safe_repr(request.charset)} is not a known text encoding; "
                       "send JSON as UTF-8", field="Content-Type") from None
    except web.RequestPayloadError as exc:
        raise ApiError(400, "body_invalid", f"the body cannot be read: {exc}",
                       field="body") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "json_invalid", f"the body is not valid JSON: {exc}",
                       field="body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "json_invalid", f"the body is a JSON {type(body).__name__}; "
                       "expected an object", field="body")
    unknown = sorted(k for k in body if k not in allowed)
    if unknown:
        raise ApiError(400, "field_unknown", f"unknown field {safe_repr(unknown[0])}; "
                       f"expected {', '.join(sorted(allowed))}", field=unknown[0])
    return body


def _strict_loads(data: str) -> Any:
    import json

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    return json.loads(data, parse_constant=no_constants)


def merged(query: Mapping[str, str], fields: Mapping[str, str],
           allowed: frozenset[str]) -> dict[str, str]:
    """Parameters from the query string and form fields (a field wins), only `allowed`
    ones."""
    values = {**query, **fields}
    unknown = sorted(k for k in values if k not in allowed)
    if unknown:
        raise ApiError(400, "field_unknown", f"unknown parameter {safe_repr(unknown[0])}; "
                       f"expected {', '.join(sorted(allowed))}", field=unknown[0])
    return values
