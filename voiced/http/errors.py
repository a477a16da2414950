"""JSON errors for the API: `{"error": {"code", "message", "field"?, ...}}`.

A handler raises `ApiError` for a client mistake (it names the field and what was
expected); the `json_errors` middleware turns it, and aiohttp's own 404/405/413, into that
shape under /api/ and /metrics. Anything else that escapes a handler there is logged with
its traceback and answered 500 `internal` without one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from voiced.http.keys import UPLOAD_LIMIT

log = logging.getLogger(__name__)

JSON_PREFIXES = ("/api/", "/metrics")
"""Paths answered with JSON errors (the page gets aiohttp's plain ones)."""


def json_path(path: str) -> bool:
    """True for the API and /metrics, whose errors are JSON."""
    return path == "/api" or path.startswith(JSON_PREFIXES)


def error_body(code: str, message: str, field: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The error object every API error response carries."""
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    error.update(extra)
    return {"error": error}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """A JSON error response."""
    return web.json_response(error_body(code, message, field, **extra), status=status,
                             headers=headers)


class ApiError(Exception):
    """A request the API refuses: HTTP `status`, machine-readable `code`, a message for
    people, and the `field` (body key, query parameter, form field or header) at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 **extra: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def response(self) -> web.Response:
        """This error as a JSON response."""
        return error_response(self.status, self.code, self.message, self.field, **self.extra)


def too_large(limit_bytes: int, what: str = "the request body") -> ApiError:
    """413 for a body over `http.max_upload_mb`."""
    return ApiError(413, "too_large",
                    f"{what} is larger than the {limit_bytes / 1024 / 1024:g} MB limit "
                    "(http.max_upload_mb)", limit_bytes=limit_bytes)


_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """ApiError → its JSON; under /api/ and /metrics also aiohttp's HTTP errors and
    unexpected exceptions (logged, answered 500 without a traceback)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400 or not json_path(request.path):
            raise
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        message = exc.reason
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return too_large(request.app[UPLOAD_LIMIT]).response()
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = sorted(exc.allowed_methods)
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
            extra["allowed"] = allowed
        elif isinstance(exc, web.HTTPNotFound):
            message = f"no such endpoint: {request.method} {request.path} (see /api/openapi.json)"
        return error_response(exc.status, _CODES.get(exc.status, "http_error"), message,
                              headers=headers, **extra)
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        if not json_path(request.path):
            raise
        log.exception("HTTP %s %s failed", request.method, request.path)
        return error_response(500, "internal", "the server failed on this request; the "
                              "voiced log has the details")
