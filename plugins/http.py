"""The ``http`` plugin: a templated HTTP request, with an optional spoken answer.

```yaml
handlers:
  - intent: GetTemperature
    plugin: http
    options:
      method: GET
      url: "http://weather.lan/api/{area}"
      answer: "It is {{response[temperature]}} degrees in the {area}."
```

The router renders ``{slot}``-style templates in the URL, headers and JSON body. The
answer is left as written and rendered once after the request, with ``{{response}}``
(the decoded JSON, or the body text), ``{{status}}`` and ``{{body}}`` (see
`voiced_plugins._render`). The body is read up to `MAX_BODY` bytes.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import aiohttp
import yarl
from pydantic import ConfigDict, Field, field_validator

from voiced.errors import PluginError
from voiced.intents.api import PluginOptions, Request, Response

from ._client import HttpClientPlugin, read_body
from ._render import render_answer

__all__ = ["HttpOptions", "HttpPlugin"]

log = logging.getLogger(__name__)

_MAX_ERROR_BODY = 200
"""Characters of a failed response's body quoted in the error message."""
MAX_BODY = 1024 * 1024
"""Bytes of a response body read; a larger one is ``http_body_too_large``."""


_URL_SAFE = "/%:@!$&'()*+,;=~?"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request_url(url: str) -> yarl.URL:
    """The rendered URL as it is sent: its percent-encoding kept, so a value rendered as
    `%2E%2E` stays text inside its segment (yarl would decode it and resolve the `..`)."""
    parsed = yarl.URL(url)
    raw = urlsplit(url)
    return yarl.URL.build(
        scheme=parsed.scheme, authority=parsed.raw_authority,
        path=quote(raw.path, safe=_URL_SAFE), query_string=quote(raw.query, safe=_URL_SAFE),
        encoded=True,
    )


class HttpOptions(PluginOptions):
    """Options of the ``http`` plugin."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)
    url_fields: ClassVar[tuple[str, ...]] = ("url",)
    answer_fields: ClassVar[tuple[str, ...]] = ("answer",)

    url: str
    """``http://`` or ``https://`` URL; templated."""
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers; templated."""
    headers_env: dict[str, str] = Field(default_factory=dict)
    """Header name → environment variable that holds its value (for secrets)."""
    params: dict[str, str] = Field(default_factory=dict)
    """Query-string parameters; templated."""
    json_body: Any = Field(None, alias="json")
    """JSON body (any JSON value); templated. Written ``json:`` in voiced.yaml."""
    timeout_s: float = Field(4.0, gt=0, le=300)
    """Seconds; keep it below the handler's ``timeout_s`` (default 5) for a clear error."""
    answer: str | None = None
    """Spoken answer; ``{{response[...]}}``, ``{{status}}``, ``{{body}}`` are filled in."""
    ok_status: list[int] = Field(default_factory=list)
    """Statuses that count as success; empty: any 2xx."""

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {value!r})")
        return value


class HttpPlugin(HttpClientPlugin):
    """Send one HTTP request per intent; optionally speak something from the response."""

    name: ClassVar[str] = "http"
    Options: ClassVar[type[HttpOptions]] = HttpOptions

    @staticmethod
    def targets(options: HttpOptions) -> list[str]:
        """For protection rules: `http:<scheme>://<host>[:port]<path>` (no credentials,
        query or fragment)."""
        from voiced.protect import url_target

        return [url_target(options.url)]

    async def handle(self, request: Request) -> Response:
        """Send the request; raise PluginError on a network error, timeout or bad status."""
        opts: HttpOptions = request.options
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = dict(opts.headers)
        for header, given in headers.items():
            # a newline from a slot or a speaker's name must not start a header of its own
            bad = _CONTROL.search(header + given)
            if bad:
                raise PluginError(
                    "slot_unsafe",
                    f"headers.{header} is {given[:60]!a}, which holds the control character "
                    f"{bad.group()!a}",
                )
        for header, var in opts.headers_env.items():
            value = os.environ.get(var)
            if value is None:
                raise PluginError(
                    "http_missing_env",
                    f"header {header!r} comes from the environment variable {var!r}, "
                    "which is not set",
                )
            headers[header] = value
        target = f"{opts.method} {opts.url}"
        log.debug("http plugin: %s", target)
        try:
            async with (
                self._session.request(
                    opts.method,
                    request_url(opts.url),
                    headers=headers,
                    params=opts.params or None,
                    json=opts.json_body,
                    timeout=aiohttp.ClientTimeout(total=opts.timeout_s),
                ) as resp,
            ):
                status = resp.status
                body = await read_body(resp, MAX_BODY, code="http_body_too_large",
                                       what=target)
        except TimeoutError as exc:
            raise PluginError(
                "http_timeout", f"{target}: no answer within {opts.timeout_s:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise PluginError("http_unreachable", f"{target}: {exc}") from exc

        ok = status in opts.ok_status if opts.ok_status else 200 <= status < 300
        if not ok:
            raise PluginError(
                "http_status", f"{target} answered {status}: {body[:_MAX_ERROR_BODY]!r}"
            )
        try:
            response: Any = json.loads(body)
        except ValueError:
            response = body
        text: str | None = None
        if opts.answer is not None:
            values = {"response": response, "status": status, "body": body}
            text = render_answer(opts.answer, request.variables, values)
        return Response(text=text, data={"status": status, "url": opts.url})
