"""`voiced doctor`: check the environment a user actually has against their config.

Each check returns one `Check` (ok / warning / error, what was found, what to do). A check
is an error when something the config needs is broken (a backend it selects does not
import, torch and torchaudio are not one release, the intents do not load, the broker
refuses the credentials); a warning when voiced will run but not as well as it could (a
model still to download, a broker not up yet, a state folder others can read).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from voiced.config import Config
from voiced.doctor.broker import check_broker
from voiced.doctor.checks import Check, Level
from voiced.errors import VoicedError

SETUP_FIX = "run `make setup`: it installs the locked environment (uv sync --locked)"
PYTHON_RANGE = ((3, 11), (3, 15))
"""Python versions pyproject.toml and uv.lock cover: >= the first, < the second."""

__all__ = ["Check", "Level", "check_broker", "run_checks"]


@dataclass(frozen=True, slots=True)
class Backend:
    """A Python module voiced may import, and when the config needs it."""

    module: str
    distribution: str
    needed: Callable[[Config], bool]
    role: str


def _whisper(c: Config) -> bool:
    return c.asr.backend == "whisper"


BACKENDS: tuple[Backend, ...] = (
    Backend("webrtcvad", "webrtcvad-wheels", lambda c: True, "voice activity detection"),
    Backend("pocketsphinx", "pocketsphinx", lambda c: c.asr.backend == "pocketsphinx",
            "embedded speech recognition"),
    Backend("torch", "torch", lambda c: _whisper(c) or c.speakers.backend != "none",
            "Whisper and speaker identification"),
    Backend("torchaudio", "torchaudio", lambda c: c.speakers.backend == "speechbrain",
            "speechbrain's audio front end"),
    Backend("whisper", "openai-whisper", _whisper, "Whisper speech recognition"),
    Backend("speechbrain", "speechbrain", lambda c: c.speakers.backend == "speechbrain",
            "ECAPA speaker identification"),
    Backend("resemblyzer", "resemblyzer", lambda c: c.speakers.backend == "resemblyzer",
            "embedded speaker identification"),
)


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _base(version: str) -> str:
    """`2.11.0+cu130` → `2.11.0`."""
    return version.split("+", 1)[0]


def check_python() -> Check:
    """The interpreter is one the lock covers."""
    low, high = PYTHON_RANGE
    version = ".".join(map(str, sys.version_info[:3]))
    if low <= sys.version_info[:2] < high:
        return Check("python", Level.OK, f"{version} ({sys.executable})")
    return Check("python", Level.ERROR,
                 f"{version}: voiced and its lock cover Python {low[0]}.{low[1]} to "
                 f"{high[0]}.{high[1] - 1}", "install a supported Python and run `make setup`")


def check_backends(config: Config, imported: dict[str, Any]) -> Iterator[Check]:
    """Import every backend module; what fails is an error when the config selects it."""
    for backend in BACKENDS:
        needed = backend.needed(config)
        installed = _dist_version(backend.distribution)
        try:
            module = importlib.import_module(backend.module)
        except Exception as exc:  # an import can fail with OSError, AttributeError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = (f"{backend.distribution} {installed} does not import" if installed
                    else f"{backend.distribution} is not installed")
            yield Check(backend.module, Level.ERROR if needed else Level.WARNING,
                        f"{what}: {type(exc).__name__}: {first}"
                        + ("" if needed else f" (not used by this config: {backend.role})"),
                        SETUP_FIX)
            continue
        imported[backend.module] = module
        version = str(getattr(module, "__version__", None) or installed or "unknown version")
        use = backend.role if needed else f"{backend.role}; not used by this config"
        yield Check(backend.module, Level.OK, f"{version} ({use})")
    plain = _dist_version("webrtcvad")
    if plain is not None:
        yield Check("webrtcvad", Level.WARNING,
                    f"plain webrtcvad {plain} is installed beside webrtcvad-wheels; both write "
                    "the module `webrtcvad` and the plain one fails on current setuptools",
                    "pip uninstall -y webrtcvad webrtcvad-wheels, then run `make setup`")


def check_torch_pair(imported: dict[str, Any]) -> Check | None:
    """torch and torchaudio are binary builds of one release (same version and build tag)."""
    torch_v = getattr(imported.get("torch"), "__version__", None) or _dist_version("torch")
    audio_v = (getattr(imported.get("torchaudio"), "__version__", None)
               or _dist_version("torchaudio"))
    if torch_v is None or audio_v is None:
        return None
    torch_v, audio_v = str(torch_v), str(audio_v)
    if torch_v == audio_v or (_base(torch_v) == _base(audio_v) and "+" not in audio_v):
        return Check("torch-pair", Level.OK, f"torch {torch_v} with torchaudio {audio_v}")
    return Check("torch-pair", Level.ERROR,
                 f"torch {torch_v} and torchaudio {audio_v} are not one release: torchaudio's "
                 "compiled library only loads beside the torch it was built with",
                 SETUP_FIX)


def check_cuda(config: Config, imported: dict[str, Any]) -> Check:
    """Which GPU torch sees, and whether the config insists on one."""
    torch = imported.get("torch")
    wants_cuda = "cuda" in (config.asr.device, config.speakers.device)
    if torch is None:
        level = Level.ERROR if wants_cuda else Level.OK
        return Check("cuda", level, "torch is not importable, so no GPU can be used",
                     SETUP_FIX if wants_cuda else "")
    build = getattr(torch.version, "cuda", None)
    try:
        available = bool(torch.cuda.is_available())
    except Exception as exc:
        available, build = False, f"{build} ({exc})"
    if available:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Check("cuda", Level.OK, f"CUDA {build}: {', '.join(names)}")
    detail = (f"no GPU visible (torch built for CUDA {build})" if build
              else "torch is a CPU-only build")
    if wants_cuda:
        return Check("cuda", Level.ERROR, f"{detail}, but the config sets device: cuda",
                     "set asr.device / speakers.device to auto or cpu, or check the "
                     "NVIDIA driver (nvidia-smi)")
    if _whisper(config):
        return Check("cuda", Level.WARNING, f"{detail}: Whisper runs on the CPU, slowly",
                     "use a machine with an NVIDIA GPU, or asr.backend: pocketsphinx")
    return Check("cuda", Level.OK, f"{detail}; the configured backends run on the CPU")


def check_lock(root: Path | None = None) -> Check | None:
    """The installed versions are the ones uv.lock names (in a source checkout)."""
    root = root or Path(__file__).resolve().parents[2]
    lock = root / "uv.lock"
    if not lock.is_file():
        return None
    try:
        packages = tomllib.loads(lock.read_text(encoding="utf-8")).get("package", [])
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return Check("lock", Level.ERROR, f"{lock} does not read: {exc}", "git checkout uv.lock")
    locked: dict[str, set[str]] = {}
    for package in packages:
        if "registry" in package.get("source", {}):
            locked.setdefault(package["name"], set()).add(package["version"])
    differ = []
    for name, versions in sorted(locked.items()):
        installed = _dist_version(name)
        if installed is not None and installed not in versions:
            differ.append(f"{name} {installed} (locked {', '.join(sorted(versions))})")
    if differ:
        return Check("lock", Level.WARNING,
                     f"{len(differ)} installed package(s) differ from {lock}: "
                     + "; ".join(differ), SETUP_FIX)
    return Check("lock", Level.OK, f"installed versions match {lock} ({len(locked)} locked)")


def check_models(config: Config, imported: dict[str, Any]) -> Iterator[Check]:
    """The model files the configured backends load, or where they will come from."""
    if config.vad.engine == "silero":
        from voiced.vad.silero import shared_model, weights_path

        try:
            shared_model()  # reads and checks the weights (not through torch)
            yield Check("vad-model", Level.OK, f"silero-vad model {weights_path()}")
        except VoicedError as exc:
            yield Check("vad-model", Level.ERROR, exc.message, SETUP_FIX)
    if config.asr.backend == "pocketsphinx" and "pocketsphinx" in imported:
        from voiced.asr.pocketsphinx import model_dir

        folder = model_dir()
        if (folder / "en-us" / "mdef").is_file() and (folder / "cmudict-en-us.dict").is_file():
            yield Check("asr-model", Level.OK, f"pocketsphinx en-US model in {folder}")
        else:
            yield Check("asr-model", Level.ERROR, f"pocketsphinx's model is missing in {folder}",
                        "reinstall pocketsphinx: " + SETUP_FIX)
    if _whisper(config) and "whisper" in imported:
        yield _whisper_model(config, imported)
    if config.speakers.backend == "resemblyzer" and "resemblyzer" in imported:
        weights = (Path(config.speakers.model).expanduser() if config.speakers.model
                   else Path(imported["resemblyzer"].__file__).resolve().parent / "pretrained.pt")
        if weights.is_file():
            yield Check("speaker-model", Level.OK, f"resemblyzer weights {weights}")
        else:
            yield Check("speaker-model", Level.ERROR, f"resemblyzer weights not found: {weights}",
                        "fix speakers.model, or " + SETUP_FIX)
    if config.speakers.backend == "speechbrain" and "speechbrain" in imported:
        from voiced.speakers.speechbrain import DEFAULT_MODEL, SpeechbrainEmbedder, model_savedir

        embedder = SpeechbrainEmbedder(config.speakers.model, "cpu", config.state_dir)
        try:
            local = embedder._local_folder()
        except VoicedError as exc:
            yield Check("speaker-model", Level.ERROR, exc.message, "fix speakers.model")
            return
        if local is not None:
            yield Check("speaker-model", Level.OK, f"speechbrain model in {local}")
        else:
            hub = config.speakers.model or DEFAULT_MODEL
            yield Check("speaker-model", Level.WARNING,
                        f"speechbrain model {hub} is not downloaded yet; the first start "
                        f"fetches it into {model_savedir(config.state_dir, hub)}",
                        "start voiced once with internet access, or copy the model folder "
                        "there and set speakers.model to it")


def _whisper_model(config: Config, imported: dict[str, Any]) -> Check:
    from voiced.asr.whisper_models import DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL, official_models

    torch = imported.get("torch")
    gpu = torch is not None and config.asr.device != "cpu" and torch.cuda.is_available()
    name = config.asr.model or (DEFAULT_GPU_MODEL if gpu else DEFAULT_CPU_MODEL)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "model.pt").is_file():  # voiced finetune whisper --out
        path = path / "model.pt"
    if path.is_file():
        return Check("asr-model", Level.OK, f"Whisper checkpoint {path}")
    names = official_models()
    if name not in names:
        return Check("asr-model", Level.ERROR,
                     f"asr.model {name!r} is neither a checkpoint file nor a Whisper model name",
                     f"use a .pt path or one of {', '.join(names)}")
    filename = names[name].rsplit("/", 1)[-1]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "whisper"
    for folder in (config.state_dir / "models" / "whisper", cache):
        if (folder / filename).is_file():
            return Check("asr-model", Level.OK, f"Whisper {name}: {folder / filename}")
    return Check("asr-model", Level.WARNING,
                 f"Whisper {name} is not downloaded yet; the first start fetches it into "
                 f"{config.state_dir / 'models' / 'whisper'}",
                 "start voiced once with internet access, or set asr.model to a local .pt file")


def check_state_dir(config: Config) -> Check:
    """The state folder is writable by voiced and closed to everyone else."""
    state = config.state_dir.resolve()
    if not state.exists():
        parent = next(p for p in state.parents if p.exists())
        if os.access(parent, os.W_OK | os.X_OK):
            return Check("state", Level.OK, f"{state} will be created (mode 0700)")
        return Check("state", Level.ERROR, f"{state} does not exist and {parent} is not writable",
                     f"create it: install -d -m 0700 -o $USER {state}")
    if not state.is_dir():
        return Check("state", Level.ERROR, f"{state} is not a folder", "fix state_dir")
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check("state", Level.ERROR, f"{state} is not writable: {exc.strerror or exc}",
                     f"chown it to the user voiced runs as, mode 0700: chmod 700 {state}")
    mode = state.stat().st_mode & 0o777
    if mode & 0o077:
        return Check("state", Level.WARNING,
                     f"{state} (mode {mode:04o}) is open to other users; it holds recordings "
                     "and voiceprints", f"chmod 700 {state}")
    return Check("state", Level.OK, f"{state} writable, mode {mode:04o}")


def check_intents(config: Config) -> tuple[Check, Any]:
    """The intent catalog loads (and so the grammar can be built from it)."""
    from voiced.intents.catalog import load_catalog

    try:
        catalog = load_catalog(config)
    except VoicedError as exc:
        return Check("intents", Level.ERROR, exc.message, "fix the file and line named"), None
    languages = ", ".join(r.language for r in catalog.languages())
    return Check("intents", Level.OK, f"{len(catalog.intent_names())} intents "
                                      f"(languages: {languages})"), catalog


def check_handlers(config: Config, catalog: Any) -> Check:
    """Every handler's plugin is installed and its options are valid (nothing starts)."""
    from voiced.intents.api import PluginContext
    from voiced.intents.router import Router

    async def publish(topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
        return None

    def slots(intent: str) -> set[str] | None:
        return catalog.slot_names(intent) if intent in catalog.intent_names() else None

    router = Router(config.handlers, PluginContext(publish=publish, state_dir=config.state_dir),
                    slots)
    router.validate()
    bad = [s for s in router.statuses if not s.ok]
    if bad:
        return Check("handlers", Level.ERROR, "; ".join(str(s.error) for s in bad),
                     "fix the handlers in voiced.yaml, or install the plugin")
    plugins = sorted({s.plugin for s in router.statuses})
    return Check("handlers", Level.OK, f"{len(router.statuses)} handlers, plugins: "
                                       f"{', '.join(plugins) or 'none'}")


def check_tts(config: Config) -> Check:
    """A program to speak answers with, when the config speaks them here."""
    if config.tts.mode == "hermes":
        return Check("tts", Level.OK, "answers go to hermes/tts/say")
    from voiced.tts import find_tts

    found = find_tts(config.tts.voice)
    if found:
        return Check("tts", Level.OK, f"answers spoken with {found}")
    if config.tts.mode == "builtin":
        return Check("tts", Level.WARNING, "tts.mode is builtin but neither espeak-ng nor "
                     "piper is installed; answers go to hermes/tts/say",
                     "apt install espeak-ng")
    return Check("tts", Level.OK, "no espeak-ng or piper: answers go to hermes/tts/say")


def run_checks(config: Config) -> Iterator[Check]:
    """Every check, in the order the report prints them."""
    imported: dict[str, Any] = {}
    yield check_python()
    lock = check_lock()
    if lock is not None:
        yield lock
    yield from check_backends(config, imported)
    pair = check_torch_pair(imported)
    if pair is not None:
        yield pair
    yield check_cuda(config, imported)
    yield from check_models(config, imported)
    yield check_broker(config)
    yield check_state_dir(config)
    intents, catalog = check_intents(config)
    yield intents
    if catalog is not None:
        yield check_handlers(config, catalog)
    yield check_tts(config)
