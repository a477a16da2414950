"""sd_notify without dependencies: readiness, status, watchdog and stopping for systemd.

systemd passes `NOTIFY_SOCKET` to services with `Type=notify`: a filesystem path, or an
abstract socket written with a leading '@'. Messages are newline-separated
`KEY=value` assignments sent as one AF_UNIX datagram. Outside systemd every call is a
no-op that returns False, so the daemon can call these unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _address() -> str | None:
    """The notify socket address from the environment, or None."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return None
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if not path.startswith("/"):
        log.warning("ignoring NOTIFY_SOCKET=%r: expected an absolute path or @name", path)
        return None
    return path


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=up") to systemd.

    Returns True when the message was sent, False when there is no notify socket or
    sending failed (logged; a notification is never worth crashing for).
    """
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """Tell systemd start-up is complete (models loaded, subscriptions made)."""
    message = "READY=1"
    if status_text:
        message += "\nSTATUS=" + _one_line(status_text)
    return notify(message)


last_status: str | None = None
"""The last text given to `status()` (what start-up was doing, for the log)."""


def status(text: str) -> bool:
    """Set the one-line status shown by `systemctl status`."""
    global last_status
    last_status = text
    return notify("STATUS=" + _one_line(text))


def stopping(status_text: str | None = None) -> bool:
    """Tell systemd the service is shutting down."""
    message = "STOPPING=1"
    if status_text:
        message += "\nSTATUS=" + _one_line(status_text)
    return notify(message)


def watchdog() -> bool:
    """Keep-alive ping for `WatchdogSec=`."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds, or None when no watchdog applies to us.

    From WATCHDOG_USEC, ignored when WATCHDOG_PID names another process. Ping at
    half this interval or more often.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1_000_000 if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
