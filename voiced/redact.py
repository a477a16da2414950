"""Keeping secrets out of what leaves the process: error messages, logs, Hermes errors.

`redact(text)` blanks credentials in URLs (`https://user:pass@host` → `https://***@host`),
secret-looking query parameters and `key=value` pairs (`?token=...`, `password=...`), and
bearer tokens. `secret_key(path)` tells whether a config key names a secret, so the value
given for it is never echoed.
"""

from __future__ import annotations

import re

SECRET_WORDS = ("password", "passwd", "pass", "secret", "token", "key", "credential",
                "auth", "signature", "sig", "apikey", "api_key", "access_token")
_WORDS = "|".join(sorted(SECRET_WORDS, key=len, reverse=True))
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@'\"]+@")
_PARAM = re.compile(rf"(?i)(?P<name>\b[\w.\-]*(?:{_WORDS})[\w.\-]*)=(?P<value>[^&\s'\",;)]+)")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]+=*")
_SECRET_KEY = re.compile(rf"(?i)(^|[_.\-])({_WORDS})($|[_.\-])")
MASK = "***"


def redact(text: str) -> str:
    """`text` with credentials in URLs, secret parameters and bearer tokens masked."""
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    text = _PARAM.sub(lambda m: f"{m.group('name')}={MASK}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)


def secret_key(path: str) -> bool:
    """True when a config key (or dotted path) names a secret: its value is never shown.

    `password_env` and `token_env` name environment variables, not secrets, but a value
    given there by mistake may be the secret itself, so they count too.
    """
    last = path.rsplit(".", 1)[-1]
    return bool(_SECRET_KEY.search(last))


def plain_http_off_host(url: str) -> bool:
    """True for an `http://` URL whose host is not loopback: a token sent there crosses
    the network in clear text."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme.lower() != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
