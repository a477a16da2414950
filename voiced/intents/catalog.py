"""The intent catalog: the ONE loader of the sentence set, for the daemon and every command.

`voiced serve`, `voiced intents`, `voiced transcribe`, `voiced check-config --intents` and
`voiced doctor` all call `load_catalog`, so they match text against the same sentences: the
intent files, Home Assistant's official sentences when `intents.official` is on, the lists
imported from Home Assistant, and the people's names as the `{person}` list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from voiced.config import Config
from voiced.errors import IntentError, VoicedError
from voiced.intents.recognizer import IntentRecognizer
from voiced.intents.sources import official_intents
from voiced.languages import language_code
from voiced.models import UNKNOWN_SPEAKER
from voiced.redact import redact

log = logging.getLogger(__name__)


def load_catalog(
    config: Config,
    paths: Sequence[Path] | None = None,
    imported_lists: Mapping[str, Any] | None = None,
) -> IntentRecognizer:
    """Load the configured sentence set (`paths` replaces `intents.paths` when given).

    Raises IntentError naming the file and line of the first problem.
    """
    cfg = config.intents

    def extra(language: str) -> list[dict[str, Any]]:
        if not cfg.official:
            return []
        try:
            return [official_intents(language, cfg.areas, cfg.entities, cfg.floors, cfg.zones)]
        except IntentError as exc:
            if language_code(language) == language_code(cfg.language):
                raise
            log.warning("intents (%s): only your own files: %s", language, exc.message)
            return []

    overrides: list[dict[str, Any]] = []
    if imported_lists:
        overrides.append({"lists": dict(imported_lists)})
    people = sorted(p for p in config.speakers.people if p != UNKNOWN_SPEAKER)
    if people:
        overrides.append({"lists": {"person": {"values": people}}})
    if any(rule.confirm is not None for rule in config.protect):
        from voiced.protect import confirmation_intents

        # spoken PINs must be in the embedded recognizer's grammar (voiced.protect)
        overrides.append(confirmation_intents())
    from voiced import teach

    if teach.review_active(config):  # "that's not what I said" (voiced.review)
        overrides.append(teach.builtin_intents())
    # sentences and aliases learned from corrections (voiced.teach)
    files = list(paths) if paths is not None else [*cfg.paths, *teach.learned_paths(config)]
    overrides.extend(teach.alias_overrides(config, files, overrides))
    return IntentRecognizer.load(
        files, cfg.language, extra=extra,
        overrides=overrides, fuzzy=cfg.fuzzy, fuzzy_min_confidence=cfg.fuzzy_min_confidence,
        fuzzy_budget_ms=cfg.fuzzy_budget_ms)


async def import_home_assistant_lists(config: Config) -> dict[str, Any] | None:
    """Areas and entity names from Home Assistant (`intents.home_assistant`) as hassil
    lists; None when not configured or when the import failed (logged, credentials
    masked: the lists from voiced.yaml and the files are used)."""
    ha = config.intents.home_assistant
    if ha is None:
        return None
    from voiced_plugins._ha_import import import_home_assistant

    try:
        imported = await import_home_assistant(
            ha.url, token_env=ha.token_env, token_credential=ha.token_credential,
            domains=set(ha.domains), timeout_s=ha.timeout_s)
    except VoicedError as exc:
        log.error("could not import areas and devices from Home Assistant at %s (%s); "
                  "using the lists from voiced.yaml and the intent files",
                  redact(ha.url), redact(exc.message))
        return None
    except Exception as exc:  # an answer of a shape no check foresaw: same fallback
        log.error("could not import areas and devices from Home Assistant at %s (its "
                  "answer broke the import: %s: %s); using the lists from voiced.yaml and "
                  "the intent files", redact(ha.url), type(exc).__name__,
                  redact(str(exc))[:200])
        return None
    log.info("imported %d areas and %d devices from Home Assistant",
             len(imported.areas), len(imported.entities))
    return dict(imported.to_hassil_lists())
