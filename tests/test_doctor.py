"""`voiced doctor` as a user runs it: a real process, a real mosquitto, real imports.

Broken installs are made for real: a module on PYTHONPATH that shadows the installed one
and fails to load the way a mismatched binary does, not a stand-in for the check. Those
runs, and the example config's, are processes of their own; the others run the same
command in this process (`_doctor_here`: a doctor process spends ~12 s importing torch).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, Mosquitto, free_port

from voiced.config import load_config
from voiced.doctor import check_models
from voiced.doctor.broker import check_broker
from voiced.doctor.checks import Level

EXAMPLE = REPO / "config" / "voiced.yaml"
UNDEFINED_SYMBOL = ("{lib}/torchaudio/lib/libtorchaudio.so: undefined symbol: "
                    "torch_exception_get_what_without_backtrace")


def _doctor(*args: str, pythonpath: Path | None = None,
            env: dict[str, str] | None = None) -> tuple[int, dict[str, list[dict[str, str]]]]:
    environ = {**os.environ, **(env or {})}
    if pythonpath is not None:
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *filter(None, [environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "voiced", "doctor", "--json", *args],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=180)
    checks: dict[str, list[dict[str, str]]] = {}
    for line in proc.stdout.splitlines():
        check = json.loads(line)
        checks.setdefault(check["check"], []).append(check)
    assert checks, proc.stderr
    return proc.returncode, checks


def _doctor_here(*args: str, env: dict[str, str] | None = None
                 ) -> tuple[int, dict[str, list[dict[str, str]]]]:
    """`voiced doctor --json ARGS` run by the CLI's own code in this process, with `env`
    set for it."""
    from voiced.cli import build_parser

    parsed = build_parser().parse_args(["doctor", "--json", *args])
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        with contextlib.redirect_stdout(out):
            code = parsed.func(parsed)
    checks: dict[str, list[dict[str, str]]] = {}
    for line in out.getvalue().splitlines():
        check = json.loads(line)
        checks.setdefault(check["check"], []).append(check)
    assert checks
    return code, checks


def _status(checks: dict[str, list[dict[str, str]]], name: str) -> str:
    return checks[name][0]["status"]


def _config(tmp_path: Path, **sections: Any) -> Path:
    """The example config with some sections changed (paths made absolute)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["intents"]["paths"] = [str(REPO / "config" / "intents")]
    data["state_dir"] = str(tmp_path / "state")
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(data.get(key), dict) else value
    path = tmp_path / "voiced.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_example_config_every_check_passes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, checks = _doctor("--config", str(EXAMPLE), "--mqtt-host", "127.0.0.1",
                           "--mqtt-port", str(mosquitto.port), "--state-dir", str(state))
    expected = ["python", "lock", "webrtcvad", "pocketsphinx", "torch", "torchaudio", "whisper",
                "speechbrain", "resemblyzer", "torch-pair", "cuda", "asr-model", "broker",
                "state", "intents", "handlers", "tts"]
    assert list(checks) == expected
    assert {name: _status(checks, name) for name in expected} == dict.fromkeys(expected, "ok")
    assert code == 0
    assert "torch 2.11.0" in checks["torch-pair"][0]["detail"]
    assert "will be created" in checks["state"][0]["detail"]
    # the example's 11, and "that's not what I said" (it keeps history audio: voiced.review)
    assert "12 intents" in checks["intents"][0]["detail"]
    # doctor only looks: it did not create the state folder
    assert not state.exists()


def test_config_faults_are_named(tmp_path: Path) -> None:
    intents = tmp_path / "intents"
    intents.mkdir()
    (intents / "broken.yaml").write_text(
        "language: en\nintents:\n  Foo:\n    data:\n      - sentences: [\"turn {missing}\"]\n")
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    config = _config(tmp_path, intents={"paths": [str(intents)]},
                     mqtt={"host": "127.0.0.1", "port": free_port()})
    code, checks = _doctor_here("--config", str(config))
    # a broker that is not up yet is a warning: voiced retries until it is
    assert _status(checks, "broker") == "warning"
    assert "voiced will keep retrying" in checks["broker"][0]["detail"]
    assert _status(checks, "state") == "warning"
    assert "chmod 700" in checks["state"][0]["fix"]
    assert _status(checks, "intents") == "error"
    assert "broken.yaml:5" in checks["intents"][0]["detail"]
    assert "handlers" not in checks
    assert code == 1


def test_refused_credentials_are_an_error(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, users={"voiced": "right-password"})
    broker.start()
    try:
        config = _config(tmp_path, mqtt={"host": "127.0.0.1", "port": broker.port,
                                         "username": "voiced", "password_env": "MQTT_PW"})
        code, checks = _doctor_here("--config", str(config),
                                    env={"MQTT_PW": "wrong-password"})
        assert _status(checks, "broker") == "error"
        assert "refused" in checks["broker"][0]["detail"]
        assert code == 1
        code, checks = _doctor_here("--config", str(config),
                                    env={"MQTT_PW": "right-password"})
        assert _status(checks, "broker") == "ok"
        assert code == 0
    finally:
        broker.stop()


def test_the_mqtt_password_from_a_systemd_credential(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """mqtt.password_credential: read from $CREDENTIALS_DIRECTORY, as systemd's
    LoadCredential= hands it over; a missing folder or file is a clear error."""
    broker = Mosquitto(tmp_path, users={"voiced": "from-a-credential"})
    broker.start()
    try:
        config = _config(tmp_path, mqtt={"host": "127.0.0.1", "port": broker.port,
                                         "username": "voiced",
                                         "password_credential": "mqtt_password"})
        creds = tmp_path / "creds"
        creds.mkdir()
        # the two faults through the check itself (each doctor process takes ~12 s)
        loaded = load_config(config)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", "")
        broker_check = check_broker(loaded)
        assert broker_check.level == Level.ERROR
        assert "mqtt.password_credential 'mqtt_password' needs $CREDENTIALS_DIRECTORY" in \
            broker_check.detail
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        broker_check = check_broker(loaded)
        assert broker_check.level == Level.ERROR
        assert "cannot read the MQTT password from" in broker_check.detail
        # the working setup as a user runs it
        (creds / "mqtt_password").write_text("from-a-credential\n")
        _, checks = _doctor_here("--config", str(config),
                                 env={"CREDENTIALS_DIRECTORY": str(creds)})
        assert _status(checks, "broker") == "ok", checks["broker"]
        assert "from-a-credential" not in json.dumps(checks)
    finally:
        broker.stop()


def test_torchaudio_that_does_not_load_is_an_error(tmp_path: Path) -> None:
    """The fresh-clone failure: torchaudio's library built for another torch."""
    shadow = tmp_path / "shadow"
    (shadow / "torchaudio").mkdir(parents=True)
    message = UNDEFINED_SYMBOL.format(lib=shadow)
    (shadow / "torchaudio" / "__init__.py").write_text(f"raise OSError({message!r})\n")
    (shadow / "pocketsphinx.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pocketsphinx'\", name='pocketsphinx')\n")
    config = _config(tmp_path, speakers={"backend": "speechbrain"})
    code, checks = _doctor("--config", str(config), pythonpath=shadow)
    assert code == 1
    assert _status(checks, "torchaudio") == "error"
    detail = checks["torchaudio"][0]["detail"]
    assert detail.startswith("torchaudio ") and "does not import" in detail
    assert "undefined symbol" in detail
    assert "make setup" in checks["torchaudio"][0]["fix"]
    assert _status(checks, "pocketsphinx") == "error"
    assert "No module named 'pocketsphinx'" in checks["pocketsphinx"][0]["detail"]
    # speechbrain needs torchaudio, so it cannot import either
    assert _status(checks, "speechbrain") == "error"


@pytest.mark.parametrize(("backend", "status"), [("none", "warning"), ("resemblyzer", "error")])
def test_broken_backend_is_an_error_only_when_the_config_uses_it(
        tmp_path: Path, backend: str, status: str) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "resemblyzer.py").write_text("raise ImportError('broken on purpose')\n")
    config = _config(tmp_path, speakers={"backend": backend})
    code, checks = _doctor("--config", str(config), pythonpath=shadow)
    assert _status(checks, "resemblyzer") == status
    assert "broken on purpose" in checks["resemblyzer"][0]["detail"]
    assert code == (1 if status == "error" else 0)


def test_mismatched_pair_is_an_error_naming_both(tmp_path: Path) -> None:
    """torchaudio 2.11.1 beside torch 2.11.0: what the index served a fresh clone."""
    shadow = tmp_path / "shadow"
    (shadow / "torchaudio").mkdir(parents=True)
    (shadow / "torchaudio" / "__init__.py").write_text("__version__ = '2.11.1+cu130'\n")
    config = _config(tmp_path, speakers={"backend": "speechbrain"})
    code, checks = _doctor("--config", str(config), pythonpath=shadow)
    assert code == 1
    pair = checks["torch-pair"][0]
    assert pair["status"] == "error"
    assert "torchaudio 2.11.1+cu130" in pair["detail"]
    import torch

    assert f"torch {torch.__version__}" in pair["detail"]


def test_the_silero_model_is_checked_when_the_config_uses_it(tmp_path: Path) -> None:
    config = _config(tmp_path, vad={"engine": "silero"})
    code, checks = _doctor_here("--config", str(config))
    assert _status(checks, "vad-model") == "ok"
    assert "silero_vad.jit" in checks["vad-model"][0]["detail"]
    # a silero-vad package without its model file (a broken install) is an error
    shadow = tmp_path / "shadow"
    (shadow / "silero_vad" / "data").mkdir(parents=True)
    (shadow / "silero_vad" / "__init__.py").write_text("")
    code, checks = _doctor("--config", str(config), pythonpath=shadow)
    assert code == 1 and _status(checks, "vad-model") == "error"
    assert "missing from the silero-vad package" in checks["vad-model"][0]["detail"]
    assert "make setup" in checks["vad-model"][0]["fix"]
    # not checked when the config does not use it
    webrtc = load_config(_config(tmp_path))
    assert webrtc.vad.engine == "webrtc"
    assert all(c.name != "vad-model" for c in check_models(webrtc, {}))
