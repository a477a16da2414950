"""The embedded broker (real amqtt): loopback and anonymous by default; on any other
address only the users of a password file, or no start at all."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest
from pydantic import ValidationError
from support import free_port, make_config, running_daemon

from voiced.config import BrokerConfig
from voiced.doctor.broker import check_broker
from voiced.doctor.checks import Level
from voiced.errors import TransportError
from voiced.transport.broker import EmbeddedBroker

PASSWORDS = {"voiced": "voiced-secret", "kitchen": "kitchen-secret"}


def password_file(tmp_path: Path) -> Path:
    """Made with the documented command, the password on its stdin."""
    path = tmp_path / "broker.passwd"
    for user, password in PASSWORDS.items():
        subprocess.run([sys.executable, "-m", "voiced.transport.broker", "passwd", str(path),
                        user], input=password + "\n", text=True, check=True, timeout=60)
    return path


async def round_trip(port: int, username: str | None = None,
                     password: str | None = None) -> bytes:
    """Connect to 127.0.0.1, subscribe, publish, and read the message back."""
    async with aiomqtt.Client("127.0.0.1", port, username=username, password=password,
                              timeout=10) as client:
        await client.subscribe("check/#", qos=1)
        await client.publish("check/me", b"through the broker", qos=1)
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
    raise AssertionError("no message")


async def test_off_loopback_only_the_users_in_the_password_file_connect(
        tmp_path: Path) -> None:
    passwd = password_file(tmp_path)
    assert stat.S_IMODE(passwd.stat().st_mode) == 0o600
    assert "kitchen-secret" not in passwd.read_text()  # hashes, not passwords
    broker = EmbeddedBroker("0.0.0.0", free_port(), passwd)
    await broker.start()
    try:
        for username, password in [(None, None), ("kitchen", "wrong"), ("stranger", "x"),
                                   ("kitchen", None)]:
            with pytest.raises(aiomqtt.MqttError) as refused:
                await round_trip(broker.port, username, password)
            assert "authoriz" in str(refused.value).lower() or \
                "bad user name or password" in str(refused.value).lower(), refused.value
        assert await round_trip(broker.port, "kitchen", "kitchen-secret") == \
            b"through the broker"
    finally:
        await broker.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "voiced.home.arpa"])
async def test_off_loopback_without_a_password_file_it_does_not_start(host: str) -> None:
    port = free_port()
    broker = EmbeddedBroker(host, port)
    with pytest.raises(TransportError) as failed:
        await broker.start()
    assert failed.value.code == "broker_open"
    assert host in failed.value.message and "broker.password_file" in failed.value.message
    # and voiced.yaml says so before anything starts (voiced check-config)
    with pytest.raises(ValidationError, match=r"broker\.password_file"):
        BrokerConfig.model_validate({"embedded": True, "host": host})
    BrokerConfig.model_validate({"embedded": False, "host": host})  # not started: fine


async def test_a_missing_password_file_is_a_clear_start_error(tmp_path: Path) -> None:
    broker = EmbeddedBroker("0.0.0.0", free_port(), tmp_path / "nowhere.passwd")
    with pytest.raises(TransportError) as failed:
        await broker.start()
    assert failed.value.code == "broker_password_file"
    assert "nowhere.passwd" in failed.value.message


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_on_loopback_anonymous_clients_work_as_before(host: str) -> None:
    broker = EmbeddedBroker(host, free_port())
    await broker.start()
    try:
        assert await round_trip(broker.port) == b"through the broker"
    finally:
        await broker.stop()


async def test_voiced_logs_in_to_its_own_closed_broker(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = password_file(tmp_path)
    monkeypatch.setenv("VOICED_TEST_BROKER_PASSWORD", PASSWORDS["voiced"])
    port = free_port()
    config = make_config(tmp_path, port,
                         broker={"embedded": True, "host": "0.0.0.0",
                                 "password_file": str(passwd)},
                         mqtt={"username": "voiced",
                               "password_env": "VOICED_TEST_BROKER_PASSWORD"})
    doctor = check_broker(config)
    assert doctor.level == Level.OK and "anonymous clients refused" in doctor.detail, doctor
    async with running_daemon(config) as daemon:
        assert daemon.link.connections == 1 and daemon.reader.connections == 1
        with pytest.raises(aiomqtt.MqttError):
            await round_trip(port)
    # doctor: voiced's own login must be one of the file's users
    monkeypatch.setenv("VOICED_TEST_BROKER_PASSWORD", "not it")
    doctor = check_broker(config)
    assert doctor.level == Level.ERROR and "mqtt.username" in doctor.detail, doctor


def test_the_passwd_command_replaces_a_user(tmp_path: Path) -> None:
    path = password_file(tmp_path)
    before = path.read_text().splitlines()
    run = subprocess.run([sys.executable, "-m", "voiced.transport.broker", "passwd",
                          str(path), "kitchen"], input="new\n", text=True, timeout=60,
                         capture_output=True, env={**os.environ})
    assert run.returncode == 0, run.stderr
    after = path.read_text().splitlines()
    assert [line.split(":")[0] for line in after] == ["voiced", "kitchen"]
    assert after[0] == before[0] and after[1] != before[1]
    bad = subprocess.run([sys.executable, "-m", "voiced.transport.broker", "passwd",
                          str(path), "a:b"], input="x\n", text=True, timeout=60,
                         capture_output=True)
    assert bad.returncode == 1 and "not a usable user name" in bad.stderr
