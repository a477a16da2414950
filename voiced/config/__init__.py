"""voiced.yaml: pydantic models and `load_config()`.

Every model forbids unknown keys. Errors name the file, the line, the key path and what
was expected, so `voiced check-config` can print all of them at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from voiced.config.base import Strict
from voiced.config.home import (
    ConfirmConfig,
    EntityConfig,
    HandlerConfig,
    HistoryConfig,
    HomeAssistantImportConfig,
    HttpConfig,
    IntentsConfig,
    ProtectRule,
    ReviewConfig,
    ReviewReason,
    TtsConfig,
)
from voiced.config.recognition import (
    VAD_PRESETS,
    AsrConfig,
    RayAsrConfig,
    SpeakersConfig,
    VadConfig,
    WyomingAsrConfig,
)
from voiced.config.transport import (
    ArbitrationConfig,
    BrokerConfig,
    MqttConfig,
    MqttTlsConfig,
    SiteConfig,
    SiteMode,
    SitesConfig,
)
from voiced.errors import ConfigError
from voiced.redact import redact, secret_key
from voiced.yamlfile import read_yaml

__all__ = [
    "VAD_PRESETS", "ArbitrationConfig", "AsrConfig", "BrokerConfig", "Config", "ConfirmConfig",
    "EntityConfig", "HandlerConfig", "HistoryConfig", "HomeAssistantImportConfig",
    "HttpConfig", "IntentsConfig", "MqttConfig", "MqttTlsConfig", "ProtectRule",
    "RayAsrConfig", "ReviewConfig", "ReviewReason", "SiteConfig", "SiteMode", "SitesConfig",
    "SpeakersConfig", "Strict", "TtsConfig", "VadConfig", "WyomingAsrConfig", "config_errors",
    "load_config",
]


class Config(Strict):
    """The whole of voiced.yaml."""

    mqtt: MqttConfig = MqttConfig()
    broker: BrokerConfig = BrokerConfig()
    state_dir: Path = Path("state")
    sites: SitesConfig = SitesConfig()
    vad: VadConfig = VadConfig()
    asr: AsrConfig = AsrConfig()
    speakers: SpeakersConfig = SpeakersConfig()
    intents: IntentsConfig = IntentsConfig()
    handlers: list[HandlerConfig] = Field(default_factory=list)
    protect: list[ProtectRule] = Field(default_factory=list)
    """Protection rules on what handlers act on (voiced.protect, docs/security.md)."""
    tts: TtsConfig = TtsConfig()
    history: HistoryConfig = HistoryConfig()
    review: ReviewConfig = ReviewConfig()
    """The review queue and what corrections teach (voiced.review)."""
    http: HttpConfig = HttpConfig()
    shutdown_grace_s: float = Field(5.0, ge=0)
    """On SIGTERM, utterances in flight get this long to finish."""
    error_rate_limit_s: float = Field(2.0, ge=0)
    """At most one hermes/error message per site and reason in this interval."""
    max_utterances_in_flight: int = Field(64, ge=1)
    """Utterances being recognized and handled at once; more are refused (`overloaded`)."""

    @field_validator("protect")
    @classmethod
    def _protect(cls, rules: list[ProtectRule], info: ValidationInfo) -> list[ProtectRule]:
        names = [r.name for r in rules]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        speakers = info.data.get("speakers")
        for i, rule in enumerate(rules):
            needs_voice = rule.people is not None or rule.min_confidence is not None
            if needs_voice and speakers is not None and speakers.backend == "none":
                raise ValueError(f"[{i}] {rule.name!r}: people/min_confidence need a voice "
                                 "identified, but speakers.backend is none")
        return rules


def _key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """Map each key path in a YAML document to its 1-based line."""
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def config_errors(data: Any, source: str, text: str = "") -> list[str]:
    """Validate `data`; return one human-readable line per problem (empty when valid)."""
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        lines = _key_lines(text) if text else {}
        out = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            # the longest prefix of the path that exists in the file gives the line
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), 0)
            where = f"{source}:{line}" if line else source
            key = ".".join(str(p) for p in loc) or "(top level)"
            got = err.get("input")
            got_s = "" if isinstance(got, dict | list) else f" (got {got!r})"
            if got_s and (secret_key(key) or redact(got_s) != got_s):
                got_s = " (the value is not shown: it may be a secret)"
            out.append(f"{where}: {key}: {err['msg']}{got_s}")
        return out
    return []


def load_config(path: Path | None) -> Config:
    """Read and validate voiced.yaml; `None` gives the defaults.

    Raises ConfigError listing every problem with file, line and key.
    """
    if path is None:
        return Config()
    data, text = read_yaml(path, ConfigError, "config_syntax")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("config_syntax", f"{path}: expected a mapping at the top level")
    problems = config_errors(data, str(path), text)
    if problems:
        raise ConfigError("config_invalid", "\n".join(problems))
    config = Config.model_validate(data)
    # relative paths in the file are relative to the file, not the working directory
    base = path.parent
    paths = [p if p.is_absolute() else base / p for p in config.intents.paths]
    state = config.state_dir if config.state_dir.is_absolute() else base / config.state_dir
    update: dict[str, Any] = {
        "intents": config.intents.model_copy(update={"paths": paths}),
        "state_dir": state,
    }
    tls = config.mqtt.tls
    if tls is not None:
        files = {k: (v if v is None or v.is_absolute() else base / v)
                 for k, v in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file),
                              ("key_file", tls.key_file))}
        update["mqtt"] = config.mqtt.model_copy(update={"tls": tls.model_copy(update=files)})
    return config.model_copy(update=update)
