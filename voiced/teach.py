"""What a correction teaches at once, without training: sentences and aliases.

A corrected sentence that the intents do not understand as the chosen intent is offered as
a new sentence for it; a word misheard the same way in `review.alias_after` corrections,
where the word said is a value of a list ("kitchen" in `area`), is offered as an alias of
that value (what was heard then means that value). Nothing is written until a person
accepts; then the learned files under `<state_dir>/learned/` change and the intents reload
like any other intent change, so the embedded recognizer's grammar and Whisper's prompt
vocabulary include the new words too.

- `sentences-<language>.yaml`: a hassil intents file (one data block per slot set, the
  sentence written literally with its slots fixed), loaded after the configured intents.
- `aliases.yaml`: `{language: {list: [{in: heard, out: value}]}}`, appended by the intent
  catalog to that list's values (main language only: a list another language defines
  too is left alone, with a warning).

Also here: the built-in intent "that's not what I said" (`NOT_WHAT_I_SAID`), loaded while
the review queue is on.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from voiced.errors import IntentError
from voiced.languages import language_code

if TYPE_CHECKING:
    from voiced.config import Config
    from voiced.intents.recognizer import IntentRecognizer

log = logging.getLogger(__name__)

NOT_WHAT_I_SAID = "VoicedNotWhatISaid"
"""The built-in intent that marks the site's previous command for review."""
NOT_WHAT_I_SAID_SENTENCES = (
    "(that's | that is | that was) not what i said",
    "(that's | that is | that was) wrong",
    "you got that wrong",
    "you misheard me",
)
LEARNED_FOLDER = "learned"
ALIASES_FILE = "aliases.yaml"
MAX_ALIAS_WORDS = 3
"""Longest misheard phrase (in words) offered as an alias."""
HEADER = ("# Learned from corrections in voiced's review queue (accepted in the web page or\n"
          "# through /api/review). You may edit this file; voiced adds to it when more is\n"
          "# accepted, and reloads it with the other intents.\n")
_WORD = re.compile(r"[\w']+")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def review_active(config: Config) -> bool:
    """True when utterances are queued for review (it needs the history's kept audio)."""
    return config.review.enabled and config.history.enabled and config.history.keep_audio


def builtin_intents() -> dict[str, Any]:
    """The "that's not what I said" intent, as an intents document."""
    return {"intents": {NOT_WHAT_I_SAID: {"data": [
        {"sentences": list(NOT_WHAT_I_SAID_SENTENCES)}]}}}


def learned_dir(state_dir: Path) -> Path:
    """Where accepted sentences and aliases are written."""
    return state_dir / LEARNED_FOLDER


def sentences_file(folder: Path, language: str) -> Path:
    """The learned sentences of `language`."""
    safe = re.sub(r"[^a-z0-9-]", "_", language_code(language))
    return folder / f"sentences-{safe}.yaml"


def learned_paths(config: Config) -> list[Path]:
    """The learned sentence files to load with the intents (none while review is off and
    nothing was learned)."""
    folder = learned_dir(config.state_dir)
    return sorted(folder.glob("sentences-*.yaml")) if folder.is_dir() else []


def words(text: str) -> list[str]:
    """Lower-case words as the matcher compares them."""
    return _WORD.findall(text.casefold())


def normalize_sentence(text: str) -> str:
    """A corrected transcript as a literal hassil template (no template syntax)."""
    return " ".join(words(text))


def coerce(value: Any) -> Any:
    """A slot value from a form: numbers as numbers (ranges give ints), text stripped."""
    if isinstance(value, str):
        value = value.strip()
        if _NUMBER.fullmatch(value):
            return float(value) if "." in value else int(value)
    return value


def slots_agree(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """True when every wanted slot has that value in `found` (compared as text)."""
    return all(k in found and str(found[k]) == str(v) for k, v in wanted.items())


def sentence_proposal(recognizer: IntentRecognizer, text: str, intent: str,
                      slots: Mapping[str, Any], language: str) -> dict[str, Any] | None:
    """A new sentence for `intent` when `text` is not understood as it with `slots`;
    None when it already is (by a template) or nothing can be written."""
    sentence = normalize_sentence(text)
    if not sentence:
        return None
    target = recognizer.for_language(language)
    if intent in target.gated:
        # a learned sentence would skip the speaker gate of the intent's own blocks
        log.info("review: %s is restricted by speaker; its sentences are not learned", intent)
        return None
    result = target.recognize(sentence, {"language": language})
    if result.name == intent and result.matched_by == "template" and \
            slots_agree(result.slot_values(), slots):
        return None
    return {"sentence": sentence, "slots": dict(slots), "heard_as": result.name,
            "heard_slots": result.slot_values()}


def substitutions(heard: str, said: str) -> list[tuple[str, str]]:
    """Phrases heard in place of what was said (at most `MAX_ALIAS_WORDS` words each);
    replaced runs of equal length also give their word pairs."""
    a, b = words(heard), words(said)
    found: list[tuple[str, str]] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "replace":
            continue
        if i2 - i1 <= MAX_ALIAS_WORDS and j2 - j1 <= MAX_ALIAS_WORDS:
            found.append((" ".join(a[i1:i2]), " ".join(b[j1:j2])))
        if i2 - i1 == j2 - j1 > 1:
            found.extend((x, y) for x, y in zip(a[i1:i2], b[j1:j2], strict=True) if x != y)
    return list(dict.fromkeys(found))


def list_values(recognizer: IntentRecognizer, language: str) -> dict[str, list[tuple[str, Any]]]:
    """Each text list's (spoken text, value) pairs in `language`'s sentence set."""
    from hassil import TextChunk

    from voiced.intents.loading import walk

    out: dict[str, list[tuple[str, Any]]] = {}
    for name, slot_list in recognizer.for_language(language).intents.slot_lists.items():
        for value in getattr(slot_list, "values", None) or []:
            chunks = [e for e in walk(value.text_in) if isinstance(e, TextChunk)]
            spoken = " ".join(words(" ".join(c.original_text or c.text or "" for c in chunks)))
            if spoken:
                out.setdefault(name, []).append((spoken, value.value_out))
    return out


def alias_proposals(recognizer: IntentRecognizer, heard: str, said: str,
                    language: str) -> list[dict[str, Any]]:
    """Aliases a correction supports: a misheard phrase for a list value that was said."""
    values = list_values(recognizer, language)
    known = {text for pairs in values.values() for text, _ in pairs}
    out = []
    for wrong, right in substitutions(heard, said):
        if wrong in known:
            continue  # the heard words are a value themselves: an alias would steal them
        for name, pairs in values.items():
            for text, value in pairs:
                if text == right and isinstance(value, str | int | float):
                    out.append({"list": name, "heard": wrong, "value": text, "out": value})
    return out


# ---- the learned files ----------------------------------------------------------------------
def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    from voiced.yamlfile import read_yaml

    data = read_yaml(path, IntentError, "learned_invalid")[0] or {}
    if not isinstance(data, dict):
        raise IntentError("learned_invalid", f"{path}: expected a mapping")
    return data


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = HEADER + yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def add_sentence(folder: Path, language: str, intent: str, sentence: str,
                 slots: Mapping[str, Any]) -> Path:
    """Write `sentence` for `intent` (with its fixed slots) to the learned sentences."""
    path = sentences_file(folder, language)
    data = _read(path) or {"language": language_code(language), "intents": {}}
    intents = data.setdefault("intents", {}) or {}
    data["intents"] = intents
    blocks = intents.setdefault(intent, {"data": []}).setdefault("data", [])
    wanted = dict(slots)
    for block in blocks:
        if isinstance(block, dict) and (block.get("slots") or {}) == wanted \
                and not block.get("requires_context") and not block.get("excludes_context"):
            if sentence not in block.setdefault("sentences", []):
                block["sentences"].append(sentence)
            break
    else:
        blocks.append({"sentences": [sentence], **({"slots": wanted} if wanted else {})})
    _write(path, data)
    return path


def add_alias(folder: Path, language: str, list_name: str, heard: str, value: Any) -> Path:
    """Write an alias: `heard` means `value` of `list_name`."""
    path = folder / ALIASES_FILE
    data = _read(path)
    entries = data.setdefault(language_code(language), {}).setdefault(list_name, [])
    if not any(isinstance(e, dict) and e.get("in") == heard for e in entries):
        entries.append({"in": heard, "out": value})
    _write(path, data)
    return path


def alias_overrides(config: Config, paths: Sequence[Path],
                    earlier: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The learned aliases as intent-catalog overrides: each list as the files (and the
    `earlier` overrides) define it in the main language, plus its aliases."""
    from voiced.intents.loading import file_language, intent_files, merge, read_file

    try:
        data = _read(learned_dir(config.state_dir) / ALIASES_FILE)
    except (OSError, yaml.YAMLError) as exc:
        raise IntentError("learned_invalid", f"learned aliases: {exc}") from exc
    main = language_code(config.intents.language)
    entries = next((v for k, v in data.items() if language_code(str(k)) == main), None)
    if not isinstance(entries, dict) or not entries:
        return []
    merged: dict[str, Any] = {}
    elsewhere: set[str] = set()
    for path in intent_files(paths):
        document, _ = read_file(path)
        if file_language(document, main) == main:
            merge(merged, document)
        else:
            elsewhere.update(document.get("lists") or {})
    for earlier_document in earlier:
        merge(merged, earlier_document)
    lists: dict[str, Any] = {}
    for name, aliases in entries.items():
        spec = (merged.get("lists") or {}).get(name)
        if name in elsewhere or not isinstance(spec, dict) or \
                not isinstance(spec.get("values"), list) or not isinstance(aliases, list):
            log.warning("learned aliases for list %r are not used: the list is not a list of "
                        "values of the main language's files only", name)
            continue
        have = {str(v if isinstance(v, str) else v.get("in")).casefold()
                for v in spec["values"] if isinstance(v, str | dict)}
        extra = [a for a in aliases if isinstance(a, dict) and isinstance(a.get("in"), str)
                 and "out" in a and a["in"].casefold() not in have]
        lists[name] = {**spec, "values": [*spec["values"], *extra]}
    return [{"lists": lists}] if lists else []
