"""Secrets never leave the process: config errors, Hermes errors, handler events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakes import RecordingPublish
from support import REPO

from voiced.events import EventSink
from voiced.redact import redact, secret_key
from voiced.transport.outputs import HermesBridge


@pytest.mark.parametrize(("text", "hidden"), [
    ("GET http://admin:hunter2@ha.local:8123/api failed", "hunter2"),
    ("POST https://user@example.org/x: 401", "user@"),
    ("https://api.example.org/v1?city=paris&api_key=abc123XYZ&units=si", "abc123XYZ"),
    ("token=eyJhbGciOi.payload.sig rejected", "eyJhbGciOi"),
    ("password=correct-horse; retry", "correct-horse"),
    ("header Authorization: Bearer s3cr3t-t0ken", "s3cr3t-t0ken"),
    ("client_secret=zzz9 and access_token=aaa8", "zzz9"),
])
def test_credentials_are_masked(text: str, hidden: str) -> None:
    masked = redact(text)
    assert hidden not in masked and "***" in masked


def test_ordinary_text_is_kept() -> None:
    text = "http://homeassistant.local:8123/api/services/light/turn_on returned 500"
    assert redact(text) == text
    assert redact("brightness=50 area=kitchen") == "brightness=50 area=kitchen"
    assert secret_key("mqtt.password") and secret_key("token_env")
    assert secret_key("intents.home_assistant.token_credential")
    assert not secret_key("mqtt.host") and not secret_key("keepalive_s")


def test_config_errors_never_echo_a_secret(tmp_path: Path) -> None:
    config = tmp_path / "voiced.yaml"
    config.write_text("mqtt:\n  password: hunter2\n  port: 99999\n"
                      "intents:\n  home_assistant: {url: 'http://a:b@c', timeout_s: "
                      "'https://u:pw@x'}\n")
    proc = subprocess.run([sys.executable, "-m", "voiced", "check-config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "mqtt.password" in proc.stderr and "hunter2" not in proc.stderr
    assert "pw@" not in proc.stderr and "(got 99999)" in proc.stderr


async def test_hermes_errors_are_masked() -> None:
    sink = EventSink()
    wire = RecordingPublish()
    sink.subscribe(HermesBridge(wire))
    await sink.error("handler", "http_failed",
                     "GET https://bob:pa55@api.local/x?token=T0K3N failed: 500", "hall")
    [(_, payload)] = wire.messages
    assert "pa55" not in payload["error"] and "T0K3N" not in payload["error"]
