"""The ``command`` plugin: run a program with a templated argv list, never through a shell.

```yaml
handlers:
  - intent: PlayRadio
    plugin: command
    options:
      argv: ["mpc", "play", "{station}"]
      timeout_s: 5
      env: [XDG_RUNTIME_DIR]
```

Each argv element is rendered on its own by the router and passed to ``exec`` as one
argument, so a slot value such as ``"; rm -rf /"`` reaches the program as that literal
text; no shell ever parses it. The program runs in its own process group; on timeout the
whole group is killed. Its environment holds only ``PATH`` and the variables named in
``env`` (plus ``set_env``), never the daemon's secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from voiced.errors import PluginError
from voiced.intents.api import Plugin, PluginOptions, Request, Response
from voiced.intents.templates import is_template

from ._render import bound_answer, render_answer

__all__ = ["CommandOptions", "CommandPlugin", "run_command"]

log = logging.getLogger(__name__)

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"})
"""Programs whose `-c` argument is a script: no template may go inside it (nor inside a
Python `-c`, or a perl, ruby or node `-e`)."""


def _script_flag(program: str) -> str | None:
    """The flag after which `program` takes its code as an argument, if any."""
    if program in SHELLS or program.startswith("python"):
        return "-c"
    if program in ("perl", "ruby", "node", "nodejs"):
        return "-e"
    return None

_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_OUTPUT = 64 * 1024
"""Bytes of stdout/stderr read; a program that writes more is stopped
(``command_output_too_large``)."""
_KILL_GRACE_S = 1.0
"""After SIGTERM, how long the process group gets before SIGKILL."""


class CommandOptions(PluginOptions):
    """Options of the ``command`` plugin."""

    argv_fields: ClassVar[tuple[str, ...]] = ("argv",)
    answer_fields: ClassVar[tuple[str, ...]] = ("answer",)

    argv: list[str] = Field(min_length=1)
    """Program and arguments; each element templated on its own."""
    timeout_s: float = Field(4.0, gt=0, le=3600)
    """Seconds; keep it below the handler's ``timeout_s`` (default 5) for a clear error."""
    env: list[str] = Field(default_factory=list)
    """Names of the daemon's environment variables passed through (PATH always is)."""
    set_env: dict[str, str] = Field(default_factory=dict)
    """Extra variables set for the program; templated."""
    cwd: Path | None = None
    answer: str | None = None
    """Spoken answer; ``{{stdout}}``, ``{{stderr}}``, ``{{returncode}}`` are filled in."""
    speak_stdout: bool = False
    """Speak the program's standard output (stripped) when no `answer` is given."""
    check: bool = True
    """A non-zero exit status is an error (``command_failed``)."""

    @field_validator("argv")
    @classmethod
    def _program(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("argv[0] (the program) is empty")
        if is_template(value[0]):
            raise ValueError("argv[0] (the program) must be written out: a template there "
                             "would let what is said choose the program")
        flag = _script_flag(Path(value[0]).name)
        if flag is not None and flag in value[1:-1]:
            script = value[value.index(flag, 1) + 1]
            if is_template(script):
                raise ValueError(
                    f"a template inside the script after {flag} is run as code (what is said "
                    "could run commands); pass values as arguments after the script: "
                    "[sh, -c, 'echo \"$1\"', sh, '{name}']")
        return value

    @field_validator("set_env", mode="before")
    @classmethod
    def _text_values(cls, value: Any) -> Any:
        # a number slot ("{level}") renders to a number: the variable gets its text
        if isinstance(value, dict):
            return {k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for k, v in value.items()}
        return value

    @field_validator("env")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or "=" in name:
                raise ValueError(f"env lists variable names, not assignments (got {name!r})")
        return value


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, reap the leader."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(_KILL_GRACE_S):
            await proc.wait()
    except TimeoutError:
        pass
    # children that ignored SIGTERM, or outlived the leader, go too
    _kill_group(proc.pid, signal.SIGKILL)
    await proc.wait()
    # the pipes' writers died with the group: read what is left to the end so that their
    # transports close now (left unread they were closed by the garbage collector, maybe
    # after the loop: "Event loop is closed"); bounded, in case one escaped the group
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(_KILL_GRACE_S):
                    while await stream.read(1 << 16):
                        pass


async def _read_bounded(stream: asyncio.StreamReader | None, program: str,
                        what: str) -> bytes:
    """Up to `MAX_OUTPUT` bytes of a pipe; PluginError one byte beyond."""
    assert stream is not None
    data = bytearray()
    while chunk := await stream.read(MAX_OUTPUT + 1 - len(data)):
        data += chunk
        if len(data) > MAX_OUTPUT:
            raise PluginError("command_output_too_large",
                              f"{program!r} wrote more than {MAX_OUTPUT} bytes to {what}; "
                              "it was stopped")
    return bytes(data)


async def _output(proc: asyncio.subprocess.Process, program: str) -> tuple[bytes, bytes]:
    """The program's stdout and stderr, each bounded, once it has exited."""
    try:
        async with asyncio.TaskGroup() as group:
            out = group.create_task(_read_bounded(proc.stdout, program, "standard output"))
            err = group.create_task(_read_bounded(proc.stderr, program, "standard error"))
    except* PluginError as failed:
        raise failed.exceptions[0] from None
    await proc.wait()
    return out.result(), err.result()


async def run_command(
    argv: list[str],
    *,
    timeout_s: float,
    env: dict[str, str],
    cwd: Path | None = None,
) -> tuple[int, str, str]:
    """Run `argv` without a shell in a new process group; return (status, stdout, stderr).

    Raise PluginError ``command_not_found``, ``command_bad_cwd``, ``command_timeout`` or
    ``command_output_too_large`` (the group is killed).
    Cancellation (the router's handler timeout) kills the group too.
    """
    program = argv[0]
    resolved = shutil.which(program, path=env.get("PATH", _DEFAULT_PATH))
    if resolved is None:
        raise PluginError(
            "command_not_found", f"{program!r} is not an executable file (PATH={env.get('PATH')})"
        )
    if cwd is not None and not cwd.is_dir():
        raise PluginError("command_bad_cwd",
                          f"cannot run {program!r}: the working directory {str(cwd)!r} "
                          "does not exist (cwd)")
    try:
        proc = await asyncio.create_subprocess_exec(
            resolved,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except OSError as exc:
        raise PluginError("command_not_found", f"cannot run {program!r}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await _output(proc, program)
    except TimeoutError as exc:
        log.warning("command %r ran past %.3g s; killing its process group", program, timeout_s)
        await _terminate(proc)
        raise PluginError(
            "command_timeout", f"{program!r} did not finish within {timeout_s:g} s and was killed"
        ) from exc
    finally:
        if proc.returncode is None:  # cancelled from outside
            await asyncio.shield(_terminate(proc))
    assert proc.returncode is not None
    return (
        proc.returncode,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
    )


class CommandPlugin(Plugin):
    """Run one program per intent."""

    name: ClassVar[str] = "command"
    Options: ClassVar[type[CommandOptions]] = CommandOptions

    @staticmethod
    def targets(options: CommandOptions) -> list[str]:
        """For protection rules: `command:<program>` (argv[0] as written)."""
        return [f"command:{options.argv[0]}"]

    async def handle(self, request: Request) -> Response:
        """Run the program; raise PluginError on a missing program, timeout or failure."""
        opts: CommandOptions = request.options
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
        env.update({name: os.environ[name] for name in opts.env if name in os.environ})
        env.update(opts.set_env)
        log.debug("command plugin: %r", opts.argv)
        status, stdout, stderr = await run_command(
            opts.argv, timeout_s=opts.timeout_s, env=env, cwd=opts.cwd
        )
        if opts.check and status != 0:
            tail = stderr.strip()[-300:] or stdout.strip()[-300:]
            raise PluginError(
                "command_failed", f"{opts.argv[0]!r} exited with status {status}: {tail!r}"
            )
        text: str | None = None
        if opts.answer is not None:
            values: dict[str, Any] = {
                "stdout": stdout.strip(),
                "stderr": stderr.strip(),
                "returncode": status,
            }
            text = render_answer(opts.answer, request.variables, values)
        elif opts.speak_stdout:
            text = bound_answer(stdout.strip()) or None
        return Response(text=text, data={"argv": list(opts.argv), "returncode": status})
