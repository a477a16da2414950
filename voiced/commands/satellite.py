"""`voiced satellite`: a satellite client that streams WAV files or a microphone.

Its settings come from flags, or from a small YAML file (`--config`, see
config/satellite.yaml) that flags override. The MQTT part mirrors voiced.yaml's `mqtt:`
(host, port, username, `password_env`, `tls` as `MqttTlsConfig`) plus
`password_credential`, a systemd credential (`LoadCredential=` in
systemd/voiced-satellite.service), so the password is never in a file or on a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiomqtt
from pydantic import Field, ValidationError, field_validator, model_validator

from voiced.audio.wav import read_wav_file
from voiced.config import Config, MqttTlsConfig, Strict
from voiced.const import CHANNELS, SAMPLE_RATE
from voiced.credentials import CredentialError, read_credential
from voiced.errors import ConfigError, VoicedError
from voiced.events import finite
from voiced.satellite import FRAME_BYTES, Answer, Satellite, Topics
from voiced.sites import ID_CHARS_TEXT, SITE_ID_MAX, is_valid_id
from voiced.yamlfile import read_yaml

_CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_@:-][A-Za-z0-9_.@:-]{0,254}")
"""A systemd credential id: a plain file name (no `/`, not `.` or `..`)."""
TLS_PORT, PLAIN_PORT = 8883, 1883


class SatelliteMqtt(Strict):
    """How the satellite reaches the broker (voiced.yaml's `mqtt:` keys that apply)."""

    host: str = Field("localhost", min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    """None: 8883 with TLS, 1883 without."""
    username: str | None = Field(None, min_length=1)
    """None: the site id when a password is given (the ACL's convention), else none."""
    password_env: str | None = Field(None, min_length=1)
    """Environment variable holding the password (never the password here)."""
    password_credential: str | None = None
    """systemd credential name ($CREDENTIALS_DIRECTORY/<name>) holding the password."""
    tls: MqttTlsConfig | None = None
    client_id: str | None = Field(None, min_length=1)

    @field_validator("password_credential")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and not _CREDENTIAL_NAME.fullmatch(value):
            raise ValueError("a credential name is a plain file name (letters, digits, "
                             "_.@:-; no '/')")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> SatelliteMqtt:
        if self.password_env is not None and self.password_credential is not None:
            raise ValueError("give at most one of password_env and password_credential")
        return self


class SatelliteSettings(Strict):
    """Everything `voiced satellite` needs besides its audio source."""

    site: str
    topics: Topics = Topics.AUTO
    raw: bool = False
    mqtt: SatelliteMqtt = SatelliteMqtt()

    @field_validator("site")
    @classmethod
    def _site_id(cls, value: str) -> str:
        if not is_valid_id(value, SITE_ID_MAX):
            raise ValueError(f"not a valid site id: 1 to {SITE_ID_MAX} of {ID_CHARS_TEXT}")
        return value


def read_password(mqtt: SatelliteMqtt, environ: Mapping[str, str] | None = None) -> str | None:
    """The password from the systemd credential or the environment variable (None when
    neither is configured); ConfigError, never showing a value, when it cannot be had."""
    env = os.environ if environ is None else environ
    if mqtt.password_credential is not None:
        try:
            return read_credential(mqtt.password_credential, key="mqtt.password_credential",
                                   what="the MQTT password", environ=env)
        except CredentialError as exc:
            raise ConfigError("mqtt_password", str(exc)) from None
    if mqtt.password_env is not None:
        password = env.get(mqtt.password_env, "")
        if not password:
            raise ConfigError("mqtt_password", f"the environment variable "
                              f"{mqtt.password_env} (mqtt.password_env) is not set or empty")
        return password
    return None


def register(sub: Any) -> None:
    """Add `voiced satellite`."""
    p: argparse.ArgumentParser = sub.add_parser(
        "satellite", help="stream WAV files or a microphone to voiced like a satellite")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="satellite settings (YAML, see config/satellite.yaml); flags override")
    p.add_argument("--site", help="site id of this satellite (required here or in --config)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", type=Path, nargs="+", metavar="FILE", help="WAV files to stream")
    src.add_argument("--mic", action="store_true", help="stream from the microphone (arecord)")
    p.add_argument("--raw", action="store_true", default=None,
                   help="send raw PCM on voiced/audio/<site>/pcm instead of Hermes WAV chunks")
    p.add_argument("--realtime", action="store_true", help="pace frames at real time")
    p.add_argument("--hotword", action="store_true",
                   help="open a session before each file (wake-gated sites): "
                        "voiced/control/<site>/listen, or hermes/hotword/voiced/detected")
    p.add_argument("--topics", choices=[t.value for t in Topics],
                   help="native: voiced/events/<site>, its playBytes and voiced/control (what "
                        "the broker ACL allows); hermes: the Hermes topics; auto (default): "
                        "native when logging in or using TLS")
    m = p.add_argument_group("MQTT (as voiced.yaml's mqtt:)")
    m.add_argument("--mqtt-host")
    m.add_argument("--mqtt-port", type=int, help="default 8883 with TLS, else 1883")
    m.add_argument("--mqtt-user", help="default: the site id when a password is given")
    pw = m.add_mutually_exclusive_group()
    pw.add_argument("--mqtt-password-env", metavar="VAR",
                    help="environment variable holding the password")
    pw.add_argument("--mqtt-password-credential", metavar="NAME",
                    help="systemd credential ($CREDENTIALS_DIRECTORY/NAME) holding it")
    m.add_argument("--mqtt-tls", action="store_true",
                   help="TLS, the broker's certificate checked against the system's CAs")
    m.add_argument("--mqtt-ca-file", type=Path, help="TLS: CA the broker's certificate is from")
    m.add_argument("--mqtt-cert-file", type=Path, help="TLS: this client's certificate")
    m.add_argument("--mqtt-key-file", type=Path, help="TLS: its key")
    m.add_argument("--mqtt-no-check-hostname", action="store_true",
                   help="TLS: accept a certificate that does not name --mqtt-host")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    p.add_argument("--json", action="store_true", help="print one JSON object per utterance")
    p.set_defaults(func=run)


def _problems(exc: ValidationError, source: str) -> str:
    return "\n".join(f"{source}: {'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
                     f"{e['msg']}" for e in exc.errors())


def _file_settings(path: Path) -> dict[str, Any]:
    """The --config file as a dict, checked; relative TLS files are relative to it."""
    data, _ = read_yaml(path, ConfigError, "config_syntax")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("config_syntax", f"{path}: expected a mapping at the top level")
    try:
        SatelliteSettings.model_validate({"site": "x", **data})
    except ValidationError as exc:
        raise ConfigError("config_invalid", _problems(exc, str(path))) from None
    tls = (data.get("mqtt") or {}).get("tls")
    if isinstance(tls, dict):
        for key in ("ca_file", "cert_file", "key_file"):
            if isinstance(tls.get(key), str):
                tls[key] = str(path.parent / tls[key])
    return data


def settings(args: argparse.Namespace) -> SatelliteSettings:
    """The settings from --config and the flags (flags win); ConfigError when invalid."""
    data = _file_settings(args.config) if args.config is not None else {}
    mqtt: dict[str, Any] = dict(data.get("mqtt") or {})
    for key, value in (("site", args.site), ("topics", args.topics), ("raw", args.raw)):
        if value is not None:
            data[key] = value
    for key, value in (("host", args.mqtt_host), ("port", args.mqtt_port),
                       ("username", args.mqtt_user)):
        if value is not None:
            mqtt[key] = value
    if args.mqtt_password_env is not None or args.mqtt_password_credential is not None:
        mqtt["password_env"] = args.mqtt_password_env
        mqtt["password_credential"] = args.mqtt_password_credential
    tls_flags = {k: v for k, v in (("ca_file", args.mqtt_ca_file),
                                   ("cert_file", args.mqtt_cert_file),
                                   ("key_file", args.mqtt_key_file)) if v is not None}
    if args.mqtt_no_check_hostname:
        tls_flags["check_hostname"] = False
    if tls_flags or args.mqtt_tls:
        mqtt["tls"] = {**(mqtt.get("tls") or {}), **tls_flags}
    data["mqtt"] = mqtt
    if not data.get("site"):
        raise ConfigError("config_invalid", "give --site NAME (or site: in --config FILE)")
    try:
        return SatelliteSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("config_invalid", _problems(exc, "voiced satellite")) from None


def connect(config: SatelliteSettings) -> Satellite:
    """The client these settings describe (the password read now)."""
    mqtt = config.mqtt
    port = mqtt.port or (TLS_PORT if mqtt.tls is not None else PLAIN_PORT)
    return Satellite(mqtt.host, port, config.site, raw=config.raw, client_id=mqtt.client_id,
                     username=mqtt.username, password=read_password(mqtt), tls=mqtt.tls,
                     topics=config.topics)


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced satellite`."""
    try:
        sat = connect(settings(args))
    except VoicedError as exc:
        print(f"voiced satellite: {exc.message}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(_mic(args, sat) if args.mic else _files(args, sat))
    except VoicedError as exc:
        print(f"voiced satellite: {exc.message}", file=sys.stderr)
        return 1
    except aiomqtt.MqttError as exc:  # refused login, lost connection
        print(f"voiced satellite: MQTT broker {sat.host}:{sat.port}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file, arecord, a TLS certificate
        print(f"voiced satellite: {exc}", file=sys.stderr)
        return 1


def _print(name: str, answer: Answer, as_json: bool) -> None:
    if as_json:  # strict JSON (RFC 8259): an answer's NaN becomes null
        print(json.dumps(finite({"file": name, **answer.as_dict()}), allow_nan=False),
              flush=True)
    else:
        print(f"{name}: {answer.summary()}", flush=True)


async def _files(args: argparse.Namespace, satellite: Satellite) -> int:
    audio = [(path, read_wav_file(path)) for path in args.wav]
    failures = 0
    async with satellite as sat:
        for path, pcm in audio:
            try:
                answer = await sat.command(pcm, realtime=args.realtime, timeout=args.timeout,
                                           hotword=args.hotword)
            except TimeoutError:
                hint = (" (behind the broker ACL a satellite cannot read the Hermes topics: "
                        "use --topics native)" if sat.topics == Topics.HERMES
                        and sat.username is not None else "")
                print(f"{path}: no answer from voiced within {args.timeout:g} s{hint}",
                      file=sys.stderr)
                failures += 1
                continue
            _print(str(path), answer, args.json)
    return 1 if failures else 0


async def _mic(args: argparse.Namespace, satellite: Satellite) -> int:
    if shutil.which("arecord") is None:
        print("voiced satellite: --mic needs arecord (Debian package alsa-utils)", file=sys.stderr)
        return 1
    proc = await asyncio.create_subprocess_exec(
        "arecord", "-q", "-r", str(SAMPLE_RATE), "-f", "S16_LE", "-c", str(CHANNELS), "-t", "raw",
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    async with satellite as sat:
        # two tasks, each watched: if either ends, so does the satellite
        printer = asyncio.create_task(_print_answers(sat, args.json), name="satellite-answers")
        microphone = asyncio.create_task(_stream_mic(proc.stdout, sat), name="satellite-mic")
        tasks = {printer, microphone}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if printer.done():  # it never returns: the connection is lost, stdout closed...
                exc = printer.exception()
                if isinstance(exc, aiomqtt.MqttError | OSError):
                    raise exc
                print(f"voiced satellite: answers can no longer be printed: {exc!r}",
                      file=sys.stderr)
                return 1
            microphone.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            for task in tasks:  # retrieved: the error that ended it was raised above
                if not task.cancelled():
                    task.exception()
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    return 0


async def _stream_mic(audio: asyncio.StreamReader, sat: Satellite) -> None:
    """Send arecord's audio until it ends."""
    try:
        while True:
            await sat.send_frame(await audio.readexactly(FRAME_BYTES))
    except asyncio.IncompleteReadError:
        pass


async def _print_answers(sat: Satellite, as_json: bool) -> None:
    while True:
        answer = await sat.next_answer()
        _print("mic", answer, as_json)


async def play_demo(config: Config, folder: Path) -> None:
    """The first-run demo: play sample commands through a simulated satellite (logged in
    as voiced itself, so it works on a broker with passwords too)."""
    files = sorted(folder.glob("*.wav"))
    if not files:
        print(f"demo: no WAV files in {folder}", file=sys.stderr)
        return
    embedded = config.broker.embedded
    host = "127.0.0.1" if embedded else config.mqtt.host
    print(f"\ndemo: playing {len(files)} sample commands from {folder} as satellite 'demo'",
          flush=True)
    async with Satellite(host, config.mqtt.port, "demo", username=config.mqtt.username,
                         password=config.mqtt.password(),
                         tls=None if embedded else config.mqtt.tls,
                         topics=Topics.HERMES) as sat:
        for path in files:
            answer = await sat.command(read_wav_file(path), realtime=True)
            print(f"demo: {path.name}: {answer.summary()}", flush=True)
    print("demo: done; voiced keeps serving (Ctrl-C to stop). Try: voiced satellite --site "
          f"kitchen --mqtt-port {config.mqtt.port} --wav YOUR.wav\n", flush=True)
