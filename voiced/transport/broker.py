"""The embedded MQTT broker (amqtt), for a zero-setup first run.

It is pure Python and slow (about 2k messages/s): fine for trying voiced with a few
satellites, not for production, where mosquitto runs as its own service (with TLS and
the per-site ACL in config/mosquitto/).

It listens on loopback unless `broker.host` says otherwise. On any other address it
refuses anonymous clients: `broker.password_file` (`user:argon2-hash` lines) is then
required, and voiced itself logs in with `mqtt.username` / `mqtt.password_env`. There is
no per-site ACL here: every user in the file may read and publish every topic.

`python -m voiced.transport.broker passwd FILE USER` adds or replaces a user (the
password is read from the terminal, or from stdin when it is not one).
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from voiced.errors import TransportError

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(host: str, password_file: Path | None) -> None:
    """Raise ValueError when the broker would take anonymous clients off loopback."""
    if password_file is None and not is_loopback(host):
        raise ValueError(
            f"the embedded broker would listen on {host}, which is not loopback, and take "
            "anonymous clients: set broker.password_file (python -m voiced.transport.broker "
            "passwd FILE USER) or broker.host: 127.0.0.1")


class EmbeddedBroker:
    """An amqtt broker listening on host:port inside the daemon's event loop."""

    def __init__(self, host: str, port: int, password_file: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.password_file = password_file
        self._broker: Any = None

    def amqtt_config(self) -> dict[str, Any]:
        """amqtt's configuration: anonymous clients only without a password file."""
        auth: dict[str, Any] = {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {
                "allow_anonymous": self.password_file is None},
        }
        if self.password_file is not None:
            # every plugin must agree: a username (above) and its password (here)
            auth["amqtt.plugins.authentication.FileAuthPlugin"] = {
                "password_file": str(self.password_file)}
        return {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": auth}

    async def start(self) -> None:
        """Start listening; raises TransportError when the port is taken, the password
        file cannot be used, or the broker would be open to anonymous clients off
        loopback (`broker_open`)."""
        try:
            check_exposure(self.host, self.password_file)
        except ValueError as exc:
            raise TransportError("broker_open", str(exc)) from None
        if self.password_file is not None:
            try:
                users = read_users(self.password_file)
            except OSError as exc:
                raise TransportError("broker_password_file",
                                     f"broker.password_file {self.password_file}: "
                                     f"{exc.strerror or exc}") from None
            if not users:
                raise TransportError("broker_password_file",
                                     f"broker.password_file {self.password_file} has no users")
        from amqtt.broker import Broker

        try:
            broker = Broker(self.amqtt_config())
            await broker.start()
        except Exception as exc:
            raise TransportError(
                "broker_start",
                f"embedded broker could not listen on {self.host}:{self.port}: {exc}",
            ) from exc
        self._broker = broker
        log.info("embedded MQTT broker (amqtt) listening on %s:%d (%s)", self.host, self.port,
                 f"users from {self.password_file}" if self.password_file
                 else "anonymous clients, loopback only")

    async def stop(self) -> None:
        """Stop the broker and close its connections."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()


def read_users(path: Path) -> dict[str, str]:
    """`{user: hash}` from a password file (raises OSError when it cannot be read)."""
    users = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and ":" in line:
            user, hashed = line.split(":", 1)
            users[user] = hashed
    return users


def hash_password(password: str) -> str:
    """An argon2 hash amqtt's password-file plugin accepts (pwdlib comes with amqtt)."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    return Argon2Hasher().hash(password)


def verify_password(password: str, hashed: str) -> bool:
    """True when `password` matches a hash from the password file."""
    from pwdlib.hashers.argon2 import Argon2Hasher

    hasher = Argon2Hasher()
    return hasher.identify(hashed) and hasher.verify(password, hashed)


def set_user(path: Path, user: str, password: str) -> None:
    """Add or replace `user` in the password file (created 0600)."""
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError(f"{user!r} is not a usable user name (no ':' or spaces)")
    if not password:
        raise ValueError("the password is empty")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = [line for line in lines if line.split(":", 1)[0] != user]
    lines.append(f"{user}:{hash_password(password)}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    """`python -m voiced.transport.broker passwd FILE USER`."""
    parser = argparse.ArgumentParser(prog="python -m voiced.transport.broker")
    commands = parser.add_subparsers(dest="command", required=True)
    passwd = commands.add_parser("passwd", help="add or replace a user in a password file")
    passwd.add_argument("file", type=Path)
    passwd.add_argument("user")
    args = parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.user}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        set_user(args.file, args.user, password)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
