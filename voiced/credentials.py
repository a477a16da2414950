"""systemd credentials: secrets a unit hands over with `LoadCredential=`.

systemd copies each credential into a private folder and names it in
`$CREDENTIALS_DIRECTORY`; voiced reads `$CREDENTIALS_DIRECTORY/<name>`. One reader for
every secret (HTTP token, MQTT password, Home Assistant token, confirmation secrets), so
each refuses the same things with the same words and never shows a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


class CredentialError(Exception):
    """The credential cannot be had; the message names the setting and file, never a
    value. Callers turn it into their own error (ConfigError, PluginError)."""


def valid_name(name: str) -> bool:
    """A credential id is a plain file name: no `/`, not `.` or `..`, no NUL."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


def read_credential(name: str, *, key: str, what: str,
                    environ: Mapping[str, str] | None = None) -> str:
    """The text of credential `name` (trailing newlines removed), for the setting `key`
    (e.g. `http.token_credential`) holding `what` (e.g. "the HTTP API token")."""
    env = os.environ if environ is None else environ
    if not valid_name(name):
        raise CredentialError(f"{key}: a credential name is a plain file name (got one with "
                              "'/' or a dot name)")
    folder = env.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise CredentialError(f"{key} {name!r} needs $CREDENTIALS_DIRECTORY, which systemd "
                              "sets for a unit with LoadCredential=; it is not set")
    path = Path(folder) / name
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CredentialError(f"cannot read {what} from {path}: {why}") from None
    if not text.strip():
        raise CredentialError(f"the credential file {path} is empty")
    return text
