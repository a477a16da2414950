"""`voiced doctor`: does the MQTT broker take voiced's credentials (or can the embedded
broker listen, and does it know voiced's user)?"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from typing import Any

from voiced.config import Config
from voiced.doctor.checks import Check, Level
from voiced.errors import ConfigError

BROKER_TIMEOUT_S = 5.0


def check_broker(config: Config) -> Check:
    """The broker answers with the configured credentials (or the embedded one can bind)."""
    mqtt = config.mqtt
    where = f"{mqtt.host}:{mqtt.port}"
    try:
        mqtt.password()
    except ConfigError as exc:
        return Check("broker", Level.ERROR, exc.message,
                     "LoadCredential=NAME:/etc/voiced/NAME in the unit (systemd/README.md)")
    if config.broker.embedded:
        try:
            with socket.create_server((config.broker.host, mqtt.port)):
                pass
        except OSError as exc:
            return Check("broker", Level.ERROR,
                         f"the embedded broker cannot listen on {config.broker.host}:"
                         f"{mqtt.port}: {exc.strerror or exc}",
                         "stop what uses that port, or set mqtt.port")
        return _check_embedded_users(config)
    if mqtt.password_env and not mqtt.password_credential and mqtt.password() is None:
        return Check("broker", Level.ERROR,
                     f"mqtt.password_env names {mqtt.password_env}, which is not set",
                     f"export {mqtt.password_env}=... (systemd: EnvironmentFile=)")
    try:
        tls = mqtt.tls.context() if mqtt.tls is not None else None
    except OSError as exc:
        return Check("broker", Level.ERROR, f"mqtt.tls: {exc}", "fix the certificate paths")
    return _connect(mqtt.host, mqtt.port, mqtt.username, mqtt.password(), where, tls)


def _check_embedded_users(config: Config) -> Check:
    """Who may use the embedded broker, and whether voiced itself can log in to it."""
    from voiced.transport.broker import check_exposure, read_users, verify_password

    broker, mqtt = config.broker, config.mqtt
    where = f"{broker.host}:{mqtt.port}"
    try:
        check_exposure(broker.host, broker.password_file)
    except ValueError as exc:
        return Check("broker", Level.ERROR, str(exc), "set broker.password_file")
    if broker.password_file is None:
        return Check("broker", Level.OK,
                     f"embedded broker can listen on {where} (loopback, anonymous clients)")
    try:
        users = read_users(broker.password_file)
    except OSError as exc:
        return Check("broker", Level.ERROR,
                     f"broker.password_file {broker.password_file}: {exc.strerror or exc}",
                     "python -m voiced.transport.broker passwd FILE USER creates it")
    hashed = users.get(mqtt.username or "")
    password = mqtt.password()
    if hashed is None or password is None or not verify_password(password, hashed):
        return Check("broker", Level.ERROR,
                     f"the embedded broker on {where} takes only the users in "
                     f"{broker.password_file}, and voiced's own login (mqtt.username "
                     f"{mqtt.username!r}, password from mqtt.password_env) is not one of them",
                     "add voiced's user with python -m voiced.transport.broker passwd "
                     "FILE USER, and set mqtt.username / mqtt.password_env")
    return Check("broker", Level.OK, f"embedded broker can listen on {where}; "
                                     f"{len(users)} users, anonymous clients refused")


def _connect(host: str, port: int, username: str | None, password: str | None,
             where: str, tls: Any = None) -> Check:
    import paho.mqtt.client as paho

    client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                         client_id=f"voiced-doctor-{os.getpid()}")
    if tls is not None:
        client.tls_set_context(tls)
    if username:
        client.username_pw_set(username, password)
    answered = threading.Event()
    reason: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, code: Any, _p: Any = None) -> None:
        reason.append(code)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except ssl.SSLError as exc:
        return Check("broker", Level.ERROR, f"TLS with {where} failed: {exc}",
                     "check mqtt.tls.ca_file (the CA that signed the broker's certificate) "
                     "and that the certificate names mqtt.host")
    except OSError as exc:
        return Check("broker", Level.WARNING,
                     f"no MQTT broker answers at {where}: {exc.strerror or exc}; voiced will "
                     "keep retrying until one does", "start mosquitto (systemctl start "
                     "mosquitto), fix mqtt.host/port, or use --embedded-broker")
    client.loop_start()
    try:
        if not answered.wait(BROKER_TIMEOUT_S):
            return Check("broker", Level.WARNING,
                         f"{where} accepted a connection but sent no MQTT answer within "
                         f"{BROKER_TIMEOUT_S:.0f} s", "check that it is an MQTT broker")
    finally:
        client.disconnect()
        client.loop_stop()
    code = reason[0]
    if getattr(code, "is_failure", False):
        who = f"user {username!r}" if username else "no username"
        return Check("broker", Level.ERROR, f"{where} refused voiced ({who}): {code}",
                     "fix mqtt.username / mqtt.password_env, or the broker's ACL")
    return Check("broker", Level.OK, f"MQTT broker at {where} accepts voiced's credentials")
