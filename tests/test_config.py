"""Config loading and check-config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from voiced.cli import main
from voiced.config import SiteMode, load_config
from voiced.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_example_config_is_valid_and_documents_people() -> None:
    config = load_config(REPO / "config" / "voiced.yaml")
    assert config.speakers.people["alice"]["playlist"] == "Alice's mix"
    assert config.sites.mode_for("bedroom") == SiteMode.WAKE
    assert config.sites.area_for("kitchen") == "kitchen"
    assert config.intents.paths == [REPO / "config" / "intents"]


def test_errors_name_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "voiced.yaml"
    bad.write_text("mqtt:\n  port: high\nvad:\n  preset: sleepy\nsurprise: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = info.value.message.splitlines()
    assert f"{bad}:2: mqtt.port:" in lines[0]
    assert any(line.startswith(f"{bad}:4: vad.preset:") and "'fast'" in line for line in lines)
    assert any(line.startswith(f"{bad}:5: surprise:") for line in lines)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "voiced.yaml"
    bad.write_text("mqtt:\n  port: [1883\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.code == "config_syntax"
    assert str(bad) in info.value.message


@pytest.mark.parametrize(("text", "says"), [
    (b"mqtt:\n  port: 1883\n\xff\xfe\n", ":3: not UTF-8 text (byte 0xff at offset 19)"),
    (b"mqtt:\n  port: 1883\nvad: {}\nmqtt:\n  port: 1\n",
     ":4: YAML syntax error: key 'mqtt' appears twice in one mapping (first on line 1"),
    (b"x: &a [*a]\n", ":1: a YAML alias refers to a value that contains it"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + b"".join(b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n"
                % ((ord("b") + i,) * 2 + (ord("a") + i,) * 10) for i in range(6)),
     "its aliases expand to over 1000000 values"),
    (b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
])
def test_yaml_that_readers_would_trip_over_is_refused_by_line(tmp_path: Path, text: bytes,
                                                              says: str) -> None:
    """Not UTF-8, a key twice (the second silently replaced the first), an alias loop or
    a "billion laughs" (the key-line walk never ended), nesting too deep: each is an error
    naming the file (and line), never a traceback."""
    bad = tmp_path / "voiced.yaml"
    bad.write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.code == "config_syntax"
    assert info.value.message.startswith(str(bad)) and says in info.value.message, \
        info.value.message


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("vad: {preset: fast}\n")
    assert main(["check-config", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("asr:\n  backend: kaldi\n")
    assert main(["check-config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: asr.backend:" in err and "pocketsphinx" in err


def test_vad_preset_and_override() -> None:
    from voiced.config import VadConfig

    assert VadConfig(preset="fast").silence_ms == 300
    assert VadConfig(preset="fast", end_silence_ms=700).silence_ms == 700


def test_check_config_with_intents_checks_the_handlers(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`check-config --intents` makes the handler check `voiced doctor` and start-up make:
    an unknown plugin, or an option naming no slot, printed OK before."""
    config = tmp_path / "voiced.yaml"
    config.write_text(
        f"intents:\n  paths: [{REPO / 'config' / 'intents'}]\nhandlers:\n"
        "  - intent: HassTurnOn\n    plugin: nosuchplugin\n"
        "  - intent: HassTurnOff\n    plugin: mqtt_publish\n"
        "    options: {topic: 'home/{nme}/set', payload: x}\n")
    assert main(["check-config", "--intents", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}: handlers: unknown plugin 'nosuchplugin'" in err
    assert "options use {nme}, which is neither a slot of HassTurnOff" in err
    assert main(["check-config", "--intents", str(REPO / "config" / "voiced.yaml")]) == 0


def test_infinite_or_nan_numbers_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "voiced.yaml"
    bad.write_text("shutdown_grace_s: .inf\nhandlers:\n  - intent: A\n    plugin: say\n"
                   "    timeout_s: .inf\nvad:\n  wake_timeout_s: .nan\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = info.value.message.splitlines()
    assert any(line.startswith(f"{bad}:1: shutdown_grace_s:") and "finite" in line
               for line in lines), lines
    assert any(line.startswith(f"{bad}:5: handlers.0.timeout_s:") for line in lines), lines
    assert any(line.startswith(f"{bad}:7: vad.wake_timeout_s:") for line in lines), lines
