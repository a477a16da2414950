"""The command plugin with real subprocesses: no shell, timeouts kill the process group,
only allowed environment variables reach the program."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from voiced_plugins.command import CommandPlugin

from voiced.errors import PluginError
from voiced.intents.api import PluginContext

PRINT_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
# a child that starts a grandchild `sleep`, writes its pid, then hangs
SPAWN_AND_HANG = (
    "import subprocess, sys, time;"
    "p = subprocess.Popen(['sleep', '30']);"
    "open(sys.argv[1], 'w').write(str(p.pid));"
    "time.sleep(30)"
)


@pytest.fixture
def plugin(context: PluginContext) -> CommandPlugin:
    return CommandPlugin(context)


def gone(pid: int, within_s: float = 3.0) -> bool:
    """True once `pid` no longer runs (absent, or a zombie awaiting its reaper)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _wait_pid(path: Path, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {within_s} s")


async def read_pid(path: Path) -> int:
    """The pid the child wrote (polled in a thread, so the event loop keeps running)."""
    return await asyncio.to_thread(_wait_pid, path)


async def test_slot_value_is_one_literal_argument(
    plugin: CommandPlugin, make_request: Any, tmp_path: Path
) -> None:
    canary = tmp_path / "pwned"
    evil = f'; rm -rf / ; touch {canary} && $(touch {canary}) `touch {canary}` | "x" > {canary}'
    request = make_request(
        plugin,
        {
            "argv": [sys.executable, "-c", PRINT_ARGV, "{query}", "say {query}"],
            "speak_stdout": True,
        },
        slots={"query": evil},
    )
    response = await plugin.handle(request)

    assert json.loads(response.text) == [evil, f"say {evil}"]
    assert not canary.exists()
    assert response.data["returncode"] == 0


async def test_answer_template_from_stdout(plugin: CommandPlugin, make_request: Any) -> None:
    request = make_request(
        plugin,
        {
            "argv": [sys.executable, "-c", "print(6 * 7)"],
            "answer": "The answer for {site} is {{stdout}} (status {{returncode}}).",
        },
        site="office",
    )
    assert (await plugin.handle(request)).text == "The answer for office is 42 (status 0)."


async def test_timeout_kills_a_hanging_sleep(plugin: CommandPlugin, make_request: Any) -> None:
    started = time.monotonic()
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"argv": ["sleep", "30"], "timeout_s": 0.3}))
    assert err.value.code == "command_timeout"
    assert "'sleep'" in err.value.message and "0.3 s" in err.value.message
    assert time.monotonic() - started < 3


async def test_timeout_kills_the_whole_process_group(
    plugin: CommandPlugin, make_request: Any, tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    request = make_request(
        plugin,
        {"argv": [sys.executable, "-c", SPAWN_AND_HANG, str(pidfile)], "timeout_s": 1.0},
    )
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "command_timeout"
    assert gone(await read_pid(pidfile))


async def test_cancellation_kills_the_process_group(
    plugin: CommandPlugin, make_request: Any, tmp_path: Path
) -> None:
    """The router's own handler timeout cancels handle(): nothing may be left running."""
    pidfile = tmp_path / "grandchild.pid"
    request = make_request(
        plugin, {"argv": [sys.executable, "-c", SPAWN_AND_HANG, str(pidfile)], "timeout_s": 60}
    )
    task = asyncio.create_task(plugin.handle(request))
    pid = await read_pid(pidfile)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)


async def test_environment_allow_list(
    plugin: CommandPlugin, make_request: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICED_TEST_SECRET", "do-not-leak")
    monkeypatch.setenv("VOICED_TEST_ALLOWED", "fine")
    request = make_request(
        plugin,
        {
            "argv": ["env"],
            "env": ["VOICED_TEST_ALLOWED", "VOICED_TEST_UNSET"],
            "set_env": {"ROOM": "{area}"},
        },
        area="kitchen",
    )
    response = await plugin.handle(request)
    assert response.text is None  # no answer configured
    # run again speaking stdout, to read what the program saw
    request = make_request(
        plugin,
        {
            "argv": ["env"],
            "env": ["VOICED_TEST_ALLOWED", "VOICED_TEST_UNSET"],
            "set_env": {"ROOM": "{area}"},
            "speak_stdout": True,
        },
        area="kitchen",
    )
    seen = dict(line.split("=", 1) for line in (await plugin.handle(request)).text.splitlines())
    assert seen == {"PATH": os.environ["PATH"], "VOICED_TEST_ALLOWED": "fine", "ROOM": "kitchen"}


async def test_failure_reports_stderr(plugin: CommandPlugin, make_request: Any) -> None:
    code = "import sys; sys.stderr.write('disk on fire'); sys.exit(3)"
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"argv": [sys.executable, "-c", code]}))
    assert err.value.code == "command_failed"
    assert "status 3" in err.value.message and "disk on fire" in err.value.message


async def test_failure_allowed_without_check(plugin: CommandPlugin, make_request: Any) -> None:
    options = {"argv": ["false"], "check": False, "answer": "status {{returncode}}"}
    assert (await plugin.handle(make_request(plugin, options))).text == "status 1"


async def test_missing_program(plugin: CommandPlugin, make_request: Any) -> None:
    with pytest.raises(PluginError) as err:
        await plugin.handle(make_request(plugin, {"argv": ["no-such-program-voiced"]}))
    assert err.value.code == "command_not_found"
    assert "no-such-program-voiced" in err.value.message


async def test_working_directory(plugin: CommandPlugin, make_request: Any, tmp_path: Path) -> None:
    options = {"argv": ["pwd"], "cwd": str(tmp_path), "speak_stdout": True}
    assert (await plugin.handle(make_request(plugin, options))).text == str(tmp_path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"argv": []}, "at least 1 item"),
        ({"argv": [" "]}, "argv[0]"),
        ({"argv": ["ls"], "env": ["A=B"]}, "names, not assignments"),
        ({"argv": ["ls"], "shell": True}, "Extra inputs are not permitted"),
        ({"argv": "ls -l"}, "valid list"),
        ({"argv": ["ls"], "timeout_s": -1}, "greater than 0"),
        # what is said must not choose the program, nor become code
        ({"argv": ["{name}"]}, "must be written out"),
        ({"argv": ["/bin/sh", "-c", "echo hello {name}"]}, "after -c is run as code"),
        ({"argv": ["bash", "-x", "-c", "ls {name}"]}, "after -c is run as code"),
        ({"argv": ["python3", "-c", "print('{name}')"]}, "after -c is run as code"),
        ({"argv": ["perl", "-e", "print '{name}'"]}, "after -e is run as code"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        CommandPlugin.Options.model_validate(options)
    assert message in str(err.value)


def test_values_after_a_script_are_arguments() -> None:
    """The safe way to hand a value to a script: as an argument after it ($1)."""
    for argv in (["sh", "-c", 'echo "hello $1"', "sh", "{name}"],
                 ["python3", "-c", "import sys; print(sys.argv[1])", "{name}"],
                 ["echo", "-c", "{name}"]):  # echo takes no script
        assert CommandPlugin.Options.model_validate({"argv": argv}).argv == argv


async def test_answer_values_are_text_never_templates(
    plugin: CommandPlugin, make_request: Any
) -> None:
    """`{name}` is rendered once: a spoken `{stdout}` or a lone `{x` is said as it is."""
    for said in ("{stdout}{stderr}", "{x", "{text:>300000000}"):
        request = make_request(plugin, {"argv": ["echo", "ok"],
                                        "answer": "ran {name}: {{stdout}}"},
                               slots={"name": said})
        response = await plugin.handle(request)
        assert response.text == f"ran {said}: ok"


async def test_a_number_slot_is_a_whole_argument(plugin: CommandPlugin,
                                                 make_request: Any) -> None:
    """A range slot renders to its text, a negative number included; set_env too."""
    request = make_request(
        plugin,
        {"argv": [sys.executable, "-c", PRINT_ARGV + "; import os; print(os.environ['LEVEL'])",
                  "{level}"],
         "set_env": {"LEVEL": "{level}"}},
        slots={"level": -5},
    )
    response = await plugin.handle(request)
    assert response.data["returncode"] == 0
    assert request.options.argv[-1] == "-5"
    assert request.options.set_env == {"LEVEL": "-5"}


async def test_an_options_error_names_the_argument(context: PluginContext) -> None:
    """Through the router: a value that cannot be an argument names argv[1]."""
    from voiced.config import HandlerConfig
    from voiced.intents.router import Router
    from voiced.models import NO_SPEAKER, IntentResult, Slot

    handler = HandlerConfig(intent="Volume", plugin="command",
                            options={"argv": ["echo", "{level}"]})
    router = Router([handler], context, slot_names=lambda intent: {"level"})
    await router.start()
    try:
        intent = IntentResult(text="volume", name="Volume", confidence=1.0,
                              slots=(Slot("level", {"db": 5}, "five", "level", 0, 0),))
        outcome = await router.handle(intent, site="kitchen", session_id="s1",
                                      speaker=NO_SPEAKER, area=None, language="en")
    finally:
        await router.stop()
    assert outcome.code == "options_invalid"
    assert "options.argv.1:" in (outcome.error or "")


async def test_output_is_read_with_a_bound(plugin: CommandPlugin, make_request: Any) -> None:
    """A program that writes 100 MB is stopped after 64 KB + 1: never read whole."""
    started = time.monotonic()
    request = make_request(plugin, {"argv": ["head", "-c", "100000000", "/dev/zero"],
                                    "timeout_s": 20})
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "command_output_too_large"
    assert "standard output" in err.value.message
    assert time.monotonic() - started < 10


async def test_a_missing_working_directory_is_named(
    plugin: CommandPlugin, make_request: Any, tmp_path: Path
) -> None:
    request = make_request(plugin, {"argv": ["pwd"], "cwd": str(tmp_path / "gone")})
    with pytest.raises(PluginError) as err:
        await plugin.handle(request)
    assert err.value.code == "command_bad_cwd"
    assert "gone" in err.value.message and "working directory" in err.value.message
