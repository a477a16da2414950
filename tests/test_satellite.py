"""The satellite client (voiced.satellite) and `voiced satellite`'s settings, on a plain
mosquitto: native and Hermes answers agree, hostile answers are skipped, settings come from
the file, the flags and the credential, and every mistake is named without its value.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from support import FIXTURES, REPO, Mosquitto, make_config, running_daemon

from voiced.audio.wav import read_wav_file
from voiced.cli import build_parser
from voiced.commands import satellite as command
from voiced.errors import ConfigError
from voiced.satellite import Satellite, Topics
from voiced.satellite_answers import Answer, take_hermes, take_native

COMMAND = FIXTURES / "commands" / "dim_kitchen_20.wav"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["satellite", *argv])


async def test_native_and_hermes_answers_agree(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """One command, heard by a native and a Hermes client of the same site."""
    config = make_config(tmp_path, mosquitto.port, handlers=[
        {"intent": "HassLightSet", "plugin": "say", "options": {"text": "Dimming"}}])
    port = mosquitto.port
    async with running_daemon(config), \
            Satellite("127.0.0.1", port, "hall", topics="native") as native, \
            Satellite("127.0.0.1", port, "hall", topics="hermes") as hermes:
        assert Satellite("h", 1, "hall").topics == Topics.HERMES  # auto, no login
        listened = asyncio.create_task(hermes.next_answer())
        spoken = await native.command(read_wav_file(COMMAND), timeout=60)
        async with asyncio.timeout(10):
            heard = await listened
    assert spoken.intent == "HassLightSet" and spoken.slots["brightness"] == 20, spoken
    for key in ("text", "intent", "slots", "said", "errors", "termination", "session_id",
                "timings"):
        assert getattr(spoken, key) == getattr(heard, key), key
    assert spoken.confidence == pytest.approx(heard.confidence, abs=1e-4)
    assert spoken.intent_latency_ms is not None and spoken.said == ["Dimming"]


async def test_hostile_answers_are_skipped(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    async with Satellite("127.0.0.1", port, "den", topics="native") as sat, \
            aiomqtt.Client("127.0.0.1", port) as server:
        topic = "voiced/events/den"
        hostile: list[Any] = [b"\xff not json", b"[" * 100_000, b"[1, 2]", b"null",
                              {"type": "intent", "site": "other", "intent": "Forged"},
                              {"type": "intent", "site": "den", "slots": "x", "timings": 7},
                              {"type": "speaker", "site": "den"},
                              {"type": "transcript", "site": "den", "text": ["a"]},
                              {"type": 5, "site": "den"}]
        for payload in hostile:
            await server.publish(topic, payload if isinstance(payload, bytes)
                                 else json.dumps(payload))
        await server.publish("hermes/audioServer/den/playBytes/1", b"RIFF....")
        await server.publish(topic, json.dumps({"type": "session_ended", "site": "den",
                                                "sessionId": "s1", "reason": "nominal"}))
        async with asyncio.timeout(10):
            answer = await sat.next_answer()
    assert answer.termination == "nominal" and answer.session_id == "s1"
    assert answer.intent is None and answer.slots == {} and answer.timings == {}
    assert answer.text is None and answer.speaker is None and answer.played == 1
    assert sat.ignored == 4  # not JSON, nested too deeply, not an object (twice)


async def test_hermes_answers_with_a_wrong_shape_are_skipped(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    async with Satellite("127.0.0.1", port, "den", topics="hermes") as sat, \
            aiomqtt.Client("127.0.0.1", port) as server:
        for topic, payload in [("hermes/intent/X", {"siteId": "den", "intent": "X"}),
                               ("hermes/intent/Y", {"siteId": "den", "intent": {},
                                                    "slots": [{"slotName": "a", "value": 3}]}),
                               ("hermes/tts/say", {"siteId": "den", "text": {"no": 1}}),
                               ("hermes/dialogueManager/sessionEnded",
                                {"siteId": "den", "termination": "odd"})]:
            await server.publish(topic, json.dumps(payload))
        async with asyncio.timeout(10):
            answer = await sat.next_answer()
    assert answer.intent is None and answer.said == [] and answer.termination is None
    assert sat.ignored == 2  # the two intents


def test_username_and_topics_follow_the_login() -> None:
    assert Satellite("h", 1, "kitchen", password="pw").username == "kitchen"
    assert Satellite("h", 1, "kitchen", username="pi", password="pw").username == "pi"
    assert Satellite("h", 1, "kitchen").username is None
    assert Satellite("h", 1, "kitchen", password="pw").topics == Topics.NATIVE
    assert Satellite("h", 1, "kitchen", password="pw", topics="hermes").topics == Topics.HERMES
    with pytest.raises(ValueError):
        Satellite("h", 1, "kitchen", topics="carrier-pigeon")


def test_settings_from_the_file_and_the_flags(tmp_path: Path) -> None:
    settings = tmp_path / "etc" / "satellite.yaml"
    settings.parent.mkdir()
    settings.write_text("site: porch\ntopics: hermes\nmqtt:\n  host: broker.lan\n"
                        "  password_credential: sat-pw\n  tls: {ca_file: ca.crt}\n")
    from_file = command.settings(parse("--config", str(settings), "--mic"))
    assert from_file.site == "porch" and from_file.topics == Topics.HERMES
    assert from_file.mqtt.host == "broker.lan" and from_file.mqtt.port is None
    assert from_file.mqtt.tls is not None
    assert from_file.mqtt.tls.ca_file == settings.parent / "ca.crt"  # next to the file
    flags = command.settings(parse(
        "--config", str(settings), "--mic", "--site", "hall", "--mqtt-port", "8884",
        "--mqtt-password-env", "PW", "--mqtt-no-check-hostname", "--topics", "native"))
    assert (flags.site, flags.topics, flags.mqtt.port) == ("hall", Topics.NATIVE, 8884)
    assert flags.mqtt.password_env == "PW" and flags.mqtt.password_credential is None
    assert flags.mqtt.tls is not None and flags.mqtt.tls.check_hostname is False
    assert flags.mqtt.tls.ca_file == settings.parent / "ca.crt"
    plain = command.settings(parse("--site", "hall", "--wav", "x.wav"))
    assert plain.mqtt.tls is None and plain.topics == Topics.AUTO
    system_cas = command.settings(parse("--site", "hall", "--wav", "x.wav", "--mqtt-tls"))
    assert system_cas.mqtt.tls is not None and system_cas.mqtt.tls.ca_file is None
    sat = command.connect(system_cas)
    assert (sat.port, sat.topics) == (8883, Topics.NATIVE)


def test_the_shipped_example_is_valid() -> None:
    example = command.settings(parse("--config", str(REPO / "config" / "satellite.yaml"),
                                     "--mic"))
    assert example.site == "kitchen" and example.topics == Topics.AUTO


@pytest.mark.parametrize(("argv", "text", "yaml"), [
    ([], "give --site", ""),
    (["--site", "a/b"], "site: Value error, not a valid site id", ""),
    ([], "satellite.yaml: mqtt.port", "site: x\nmqtt: {port: 0}\n"),
    ([], "satellite.yaml: mqtt.password_credential", "site: x\nmqtt: "
     "{password_credential: ../../etc/shadow}\n"),
    ([], "give at most one of password_env", "site: x\nmqtt: {password_env: A, "
     "password_credential: b}\n"),
    ([], "satellite.yaml: mqtt.tls", "site: x\nmqtt: {tls: {cert_file: c.pem}}\n"),
    ([], "satellite.yaml: mqtt.passwd: Extra inputs", "site: x\nmqtt: {passwd: hunter2}\n"),
    ([], "expected a mapping", "- site\n"),
    ([], "YAML syntax error", "site: [\n"),
])
def test_bad_settings_are_named(tmp_path: Path, argv: list[str], text: str,
                                yaml: str) -> None:
    if yaml:
        (tmp_path / "satellite.yaml").write_text(yaml)
        argv = [*argv, "--config", str(tmp_path / "satellite.yaml")]
    with pytest.raises(ConfigError) as caught:
        command.settings(parse(*argv, "--mic"))
    assert text in caught.value.message
    assert "hunter2" not in caught.value.message


def test_the_password_comes_from_a_credential_or_the_environment(tmp_path: Path) -> None:
    def password(env: dict[str, str], *flags: str) -> str | None:
        mqtt = command.settings(parse("--site", "kitchen", "--mic", *flags)).mqtt
        return command.read_password(mqtt, env)

    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "empty").write_text("")
    folder = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert password(folder, "--mqtt-password-credential", "pw") == "s3cret"
    assert password({"PW": "s3cret"}, "--mqtt-password-env", "PW") == "s3cret"
    assert password({"PW": "s3cret"}) is None
    for env, flags, text in [
        ({}, ("--mqtt-password-credential", "pw"), "needs $CREDENTIALS_DIRECTORY"),
        (folder, ("--mqtt-password-credential", "nope"), "No such file"),
        (folder, ("--mqtt-password-credential", "empty"), "is empty"),
        ({}, ("--mqtt-password-env", "PW"), "PW (mqtt.password_env) is not set"),
    ]:
        with pytest.raises(ConfigError) as caught:
            password(env, *flags)
        assert text in caught.value.message and "s3cret" not in caught.value.message


async def test_a_refused_login_is_one_clear_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Mosquitto(tmp_path, users={"kitchen": "right"})
    broker.start()
    try:
        monkeypatch.setenv("SAT_PW", "wrong")
        args = parse("--site", "kitchen", "--mqtt-host", "127.0.0.1", "--mqtt-port",
                     str(broker.port), "--mqtt-password-env", "SAT_PW",
                     "--wav", str(COMMAND))
        assert await asyncio.to_thread(command.run, args) == 1
    finally:
        broker.stop()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"voiced satellite: MQTT broker 127.0.0.1:{broker.port}: "), err
    assert "Not authorized" in err and "wrong" not in err and "\n" not in err


def test_a_refusal_answers_like_hermes_intent_not_recognized() -> None:
    """Refused before it ran (by voice, by a protection rule): an answer without an
    intent; refused by its handler after the intent was announced: the intent stays."""
    refused = Answer()
    assert not take_native(refused, "voiced/events/porch", {
        "type": "handled", "site": "porch", "intent": "HassTurnOff", "outcome": "refused"}, 1.0)
    assert refused.intent is None and refused.answered_at == 1.0
    ran = Answer()
    take_native(ran, "t", {"type": "intent", "intent": "HassTurnOff", "slots": {"a": 1}}, 1.0)
    take_native(ran, "t", {"type": "handled", "outcome": "refused"}, 2.0)
    assert ran.intent == "HassTurnOff" and ran.answered_at == 1.0
    assert take_native(ran, "t", {"type": "session_ended", "reason": "abortedByUser"}, 3.0)
    assert ran.termination == "abortedByUser"


HUGE = 10**400
"""A valid JSON integer no float can hold."""


def test_numbers_no_float_can_hold_are_left_out() -> None:
    hermes = Answer()
    take_hermes(hermes, "hermes/intent/HassTurnOn", {
        "intent": {"intentName": "HassTurnOn", "confidenceScore": HUGE},
        "timings": {"processing": HUGE, "asr": float("inf"), "vad": float("nan"), "ok": 3}},
        1.0)
    assert hermes.intent == "HassTurnOn" and hermes.confidence is None
    assert hermes.timings == {"ok": 3.0}
    native = Answer()
    take_native(native, "voiced/events/den", {
        "type": "intent", "intent": "HassTurnOn", "confidence": float("nan"),
        "timings": {"processing": HUGE}}, 1.0)
    assert native.intent == "HassTurnOn" and native.confidence is None
    assert native.timings == {}


def test_json_output_is_strict(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer(intent="HassTurnOn", slots={"level": float("nan"), "n": [float("inf")]},
                    speaker={"name": "ann", "confidence": float("-inf")}, confidence=0.5)
    command._print("mic", answer, as_json=True)
    line = capsys.readouterr().out

    def refuse(word: str) -> None:
        raise ValueError(f"not JSON: {word}")

    printed = json.loads(line, parse_constant=refuse)
    assert printed["slots"] == {"level": None, "n": [None]} and printed["confidence"] == 0.5
    assert printed["speaker"] == {"name": "ann", "confidence": None}


async def test_a_lost_broker_ends_the_wait_at_once(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    broker.start()
    try:
        async with Satellite("127.0.0.1", broker.port, "den", topics="native") as sat:
            broker.stop()
            start = asyncio.get_running_loop().time()
            with pytest.raises(aiomqtt.MqttError, match="connection lost"):
                await sat.command(read_wav_file(COMMAND), timeout=30)
            assert asyncio.get_running_loop().time() - start < 10
            with pytest.raises(aiomqtt.MqttError, match="connection lost"):
                await sat.next_answer()
    finally:
        broker.stop()


async def test_mic_mode_prints_every_answer_and_ends_when_it_cannot(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`voiced satellite --mic --json` as a process (arecord a script that records
    nothing): answers with numbers JSON cannot carry are printed as strict JSON, and once
    its output is closed it says so and exits 1 instead of streaming on without a printer."""
    import os
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "arecord").write_text("#!/bin/sh\nexec sleep 300\n")
    (bin_dir / "arecord").chmod(0o755)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiced", "satellite", "--mic", "--json", "--site", "den",
        "--topics", "native", "--mqtt-host", "127.0.0.1", "--mqtt-port", str(mosquitto.port),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.stdout is not None and proc.stderr is not None
    topic = "voiced/events/den"
    hostile = {"type": "intent", "site": "den", "intent": "HassTurnOn", "confidence": HUGE,
               "slots": {"level": float("nan")}, "timings": {"processing": float("inf")}}
    ended = {"type": "session_ended", "site": "den", "reason": "nominal"}
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as server:
            async def answer() -> None:
                await server.publish(topic, json.dumps(hostile))
                await server.publish(topic, json.dumps(ended))

            lines = []
            async with asyncio.timeout(60):
                while len(lines) < 2:  # until it is subscribed and has printed two answers
                    await answer()
                    try:
                        async with asyncio.timeout(0.5):
                            lines.append(await proc.stdout.readline())
                    except TimeoutError:
                        pass
            for line in lines:
                printed = json.loads(line, parse_constant=lambda word: {}[word])
                assert printed["intent"] == "HassTurnOn" and printed["confidence"] is None
                assert printed["slots"] == {"level": None} and printed["timings"] == {}
            # nobody reads its answers any more
            proc.stdout.feed_eof()
            transport: Any = proc._transport  # type: ignore[attr-defined]
            transport.get_pipe_transport(1).close()
            async with asyncio.timeout(30):
                while proc.returncode is None:
                    await answer()
                    try:
                        async with asyncio.timeout(0.5):
                            await proc.wait()
                    except TimeoutError:
                        pass
        assert proc.returncode != 0
        assert "Broken pipe" in (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
