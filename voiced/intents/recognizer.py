"""Intent recognition with hassil, from Home Assistant-format YAML files.

Files load and merge the way Home Assistant merges custom sentences: intents' `data`
blocks accumulate, `lists` and `expansion_rules` entries are replaced by later files,
`skip_words` accumulate. Errors name the file and line. When no template matches, a fuzzy
fallback (`voiced.intents.fuzzy`) tries the sentence respelled (contractions, split or
joined words) and one edit away (a word that sounds alike, dropped or missing), within a
time budget (`fuzzy_budget_ms`; a search out of time gives up, logged and counted:
`fuzzy_gave_up`). A guess never reaches a speaker-restricted intent and never makes up a
slot value (`_invented_slot`).

Each language has its own set of files (a file's `language:` key): `recognize` uses the set
of the language the speech was heard in (`context["language"]`), else the main one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from hassil import Intents, RangeSlotList, recognize_all, recognize_best
from hassil.expression import Expression, Group, ListReference, RuleReference, TextChunk
from hassil.intents import Intent
from hassil.recognize import RecognizeResult
from hassil.sample import sample_intents

from voiced.errors import IntentError
from voiced.intents.fuzzy import (
    Correction,
    FuzzyMatcher,
    bigrams,
    number_words,
    search_corrections,
    words,
)
from voiced.intents.loading import (
    Reference,
    check_references,
    file_language,
    intent_files,
    merge,
    read_file,
    walk,
)
from voiced.intents.phonetic import Lexicon
from voiced.intents.template_index import TemplateIndex, warm_up
from voiced.languages import language_code, pick_language
from voiced.models import IntentResult, Slot

log = logging.getLogger(__name__)

INSERTABLE_LIMIT = 25
"""The most common template words tried as insertions by the fuzzy fallback."""
BIGRAM_SAMPLES = 50
"""Sample sentences per intent used to learn which words follow which."""
FUZZY_BUDGET_MS = 150.0
"""Default time one fuzzy search may take (`intents.fuzzy_budget_ms`)."""

Extra = Callable[[str], Sequence[Mapping[str, Any]]]
"""Documents that go before a language's files (e.g. the official sentences)."""


def _without_speaker_rules(intents: Intents) -> Intents:
    """A copy of `intents` whose data blocks do not care who speaks (other context rules,
    such as an area the site must have, stay)."""
    def drop(rules: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rules.items() if k != "speaker"}

    return replace(intents, intents={
        name: Intent(name, [replace(d, requires_context=drop(d.requires_context),
                                    excludes_context=drop(d.excludes_context))
                            for d in body.data])
        for name, body in intents.intents.items()})


class IntentRecognizer:
    """Loaded intents and the matcher."""

    def __init__(self, intents: Intents, language: str, files: Sequence[Path] = (),
                 fuzzy: bool = True, fuzzy_min_confidence: float = 0.6,
                 fuzzy_budget_ms: float = FUZZY_BUDGET_MS) -> None:
        self.intents = intents
        self.language = language
        self.files = tuple(files)
        self.document: dict[str, Any] | None = None
        """The merged YAML document the intents came from (rebuilds them elsewhere)."""
        self.translations: dict[str, IntentRecognizer] = {}
        """The sets for other languages (files with another `language:`), by code."""
        # the same sentences without their context requirements: tells "not allowed"
        # from "not understood"
        self._ungated = _without_speaker_rules(intents)
        self.gated = frozenset(
            name for name, body in intents.intents.items()
            if any("speaker" in d.requires_context for d in body.data))
        """Intents restricted by speaker: never reached by fuzzy correction."""
        self._fuzzy: FuzzyMatcher | None = None
        self.fuzzy_budget_s = fuzzy_budget_ms / 1000
        self.fuzzy_gave_up = 0
        """Fuzzy searches that ran out of time (or candidates) before they were done."""
        self._count_lock = threading.Lock()
        if fuzzy:
            samples = self._sample_texts()
            self._fuzzy = FuzzyMatcher(
                self.vocabulary() | {w for text in samples for w in words(text)},
                self._common_words(), fuzzy_min_confidence, number_words(language),
                bigrams(samples), self._value_words() - self._template_words(),
                language=language, lexicon=Lexicon.for_language(language))
            self._index = TemplateIndex(intents)
            # the check that blocks a guess landing on a speaker-restricted intent needs
            # only those intents
            self._gated_index = TemplateIndex(replace(self._ungated, intents={
                n: i for n, i in self._ungated.intents.items() if n in self.gated}))
            warm_up(self._ungated)  # the first recognition would pay for it otherwise

    @classmethod
    def load(cls, paths: Sequence[Path], language: str = "en",
             extra: Sequence[Mapping[str, Any]] | Extra = (), fuzzy: bool = True,
             fuzzy_min_confidence: float = 0.6,
             overrides: Sequence[Mapping[str, Any]] = (),
             fuzzy_budget_ms: float = FUZZY_BUDGET_MS) -> IntentRecognizer:
        """Load and merge intent files, one set per language.

        A file's `language:` key says which set it joins (no key: `language`, the main
        set); each other language becomes a recognizer in `translations`. `extra`
        documents (e.g. the official sentences) go first, so files can extend them: a
        sequence for the main language, or a function of the language for every set.
        `overrides` (e.g. lists from voiced.yaml) go last, into every set."""
        language = language_code(language)
        files = intent_files(paths)
        grouped: dict[str, list[tuple[Path, dict[str, Any], list[Reference]]]] = {language: []}
        for path in files:
            document, found = read_file(path)
            grouped.setdefault(file_language(document, language), []).append(
                (path, document, found))

        def build(lang: str) -> IntentRecognizer:
            entries = grouped[lang]
            merged: dict[str, Any] = {"intents": {}}
            for document in (extra(lang) if callable(extra) else
                             extra if lang == language else ()):
                merge(merged, document)
            references: list[Reference] = []
            for _, document, found in entries:
                merge(merged, document)
                references.extend(found)
            for document in overrides:
                merge(merged, document)
            merged["language"] = lang
            check_references(merged, references)
            try:
                intents = Intents.from_dict(merged)
            except Exception as exc:
                raise IntentError("intents_invalid",
                                  f"merged intents ({lang}) are invalid: {exc}") from exc
            if not intents.intents:
                where = ", ".join(str(p) for p in paths) or "(no paths)"
                others = sorted(set(grouped) - {lang})
                found_in = f"; the files define languages: {', '.join(others)}" if others else ""
                raise IntentError("intents_invalid",
                                  f"{where}: no intents defined for language {lang!r}{found_in}")
            recognizer = cls(intents, lang, [path for path, _, _ in entries], fuzzy,
                             fuzzy_min_confidence, fuzzy_budget_ms)
            recognizer.document = merged
            return recognizer

        main = build(language)
        main.translations = {lang: build(lang) for lang in sorted(grouped) if lang != language}
        return main

    def for_language(self, language: str | None) -> IntentRecognizer:
        """The sentences for `language`: its own set when the files define one (matched
        exactly, then by the part before `-`: Whisper says `pt` for a `pt-BR` set), else
        the main set."""
        chosen = pick_language(language, self.language, self.translations)
        return self if chosen == self.language else self.translations[chosen]

    def languages(self) -> list[IntentRecognizer]:
        """The main set, then one per other language."""
        return [self, *self.translations.values()]

    # ---- matching ------------------------------------------------------------------
    def _match(self, text: str, context: Mapping[str, Any], intent_filter: Sequence[str],
               intents: Intents | None = None) -> RecognizeResult | None:
        ctx = {k: v for k, v in context.items() if v is not None}
        intents = intents or self.intents
        if not intent_filter:
            return recognize_best(text, intents, intent_context=ctx, language=self.language)
        for result in recognize_all(text, intents, intent_context=ctx, language=self.language):
            if result.intent.name in intent_filter:
                return result
        return None

    def _match_ignoring_speaker(self, text: str, context: Mapping[str, Any],
                                intents: Intents | None = None) -> RecognizeResult | None:
        ctx = {k: v for k, v in context.items() if v is not None and k != "speaker"}
        return recognize_best(text, intents or self._ungated, intent_context=ctx,
                              language=self.language)

    def recognize(self, text: str, context: Mapping[str, Any] | None = None,
                  intent_filter: Sequence[str] = ()) -> IntentResult:
        """Match `text` with the sentences of `context["language"]` (the main set when
        the files have none for it); the context gates `requires_context` intents."""
        context = context or {}
        target = self.for_language(context.get("language"))
        if target is not self:
            return target.recognize(text, context, intent_filter)
        result = self._match(text, context, intent_filter)
        if result is not None:
            return self._to_result(text, result, 1.0, "template")
        blocked = self._match_ignoring_speaker(text, context)
        if blocked is not None and (not intent_filter or blocked.intent.name in intent_filter):
            return IntentResult(text, None, refused_intent=blocked.intent.name)
        if self._fuzzy is not None:
            return self._recognize_fuzzy(text, context, intent_filter)
        return IntentResult(text, None)

    def _recognize_fuzzy(self, text: str, context: Mapping[str, Any],
                         intent_filter: Sequence[str]) -> IntentResult:
        """The fuzzy fallback, within the time budget."""
        assert self._fuzzy is not None
        found: dict[str, RecognizeResult] = {}

        def accept(correction: Correction) -> bool:
            candidate = correction.text
            # hassil sees only the templates that could take the candidate's words and
            # length (TemplateIndex): the same wildcard-free best match, much sooner
            narrowed = self._index.narrowed(candidate)
            match = (self._match(candidate, context, intent_filter, narrowed)
                     if narrowed is not None else None)
            if match is not None and any(e.is_wildcard for e in match.entities_list):
                return False  # a wildcard takes any words: no evidence for a guess
            if match is None:
                # a guess that lands on a restricted command blocks every other guess
                gated = self._gated_index.narrowed(candidate)
                if gated is None:
                    return False
                match = self._match_ignoring_speaker(candidate, context, gated)
                if match is None:
                    return False
            else:
                why = self._invented_slot(correction, match)
                if why is not None:
                    log.debug("fuzzy: %r → %r rejected: %s", text, candidate, why)
                    return False
            found[candidate] = match
            return True

        search = search_corrections(self._fuzzy, text, accept, self.fuzzy_budget_s)
        if search.gave_up:
            with self._count_lock:
                self.fuzzy_gave_up += 1
            log.info("fuzzy: gave up on %r after %d candidates in %.0f ms (budget %.0f ms)%s",
                     text, search.tried, search.elapsed_s * 1000, self.fuzzy_budget_s * 1000,
                     "; kept the best found" if search.correction else "")
        correction = search.correction
        if correction is not None and found[correction.text].intent.name in self.gated:
            # a speaker-restricted command must be heard exactly, never guessed
            log.info("fuzzy: %r looks like %s, which needs an exact match", text,
                     found[correction.text].intent.name)
            return IntentResult(text, None)
        if correction is not None:
            log.debug("fuzzy: %r → %r (%s)", text, correction.text, correction.edit)
            return self._to_result(correction.text, found[correction.text],
                                   correction.confidence, "fuzzy")
        return IntentResult(text, None)

    def _invented_slot(self, correction: Correction, match: RecognizeResult) -> str | None:
        """Why `match` of a corrected sentence has a slot value that was not heard (None:
        every value is as heard, respelled, or close to it): a guess never makes one up."""
        assert self._fuzzy is not None
        fixed = match.intent_data.slots if match.intent_data is not None else {}
        for entity in match.entities_list:
            span = entity.text_span
            if span is None or not entity.text:
                if entity.name in fixed:
                    continue
                # filled from the context (the site's area): a dropped content word may
                # have been the value actually said ("turn on the attic lights")
                dropped = self._fuzzy.drops_content(correction)
                if dropped is not None:
                    return f"{entity.name} comes from the context and {dropped!r} was dropped"
                continue
            numeric = isinstance(entity.value, int | float) and not isinstance(entity.value,
                                                                              bool)
            why = self._fuzzy.slot_change(correction, span, numeric)
            if why is not None:
                return f"{entity.name}: {why}"
        return None

    def _to_result(self, text: str, result: RecognizeResult, confidence: float,
                   matched_by: str) -> IntentResult:
        lists = self._list_names(result)
        slots = []
        lowered = text.lower()
        for entity in result.entities_list:
            raw = entity.text.strip() if entity.text else ""
            span = getattr(entity, "text_span", None)
            if span is not None and text[span[0]:span[1]].strip():
                start, end = span
                # hassil's span can include surrounding spaces
                while start < end and text[start] == " ":
                    start += 1
                while end > start and text[end - 1] == " ":
                    end -= 1
            elif raw:
                start = lowered.find(raw.lower())
                start, end = (start, start + len(raw)) if start >= 0 else (0, 0)
            else:
                start = end = 0
            raw_value = text[start:end] if end > start else raw
            list_name = lists.get(entity.name, entity.name)
            value = entity.value
            if (isinstance(value, float) and value.is_integer() and isinstance(
                    {**self.intents.slot_lists, **result.intent_data.slot_lists}.get(list_name),
                    RangeSlotList)):
                value = int(value)  # "5 minutes" typed as digits: 5, like "five minutes"
            slots.append(Slot(entity.name, value, raw_value, list_name, start, end))
        return IntentResult(text, result.intent.name, tuple(slots), confidence, matched_by)

    def _list_names(self, result: RecognizeResult) -> dict[str, str]:
        """slot name → list name, for the matched template (``{list:slot}`` differ)."""
        if result.intent_sentence is None:
            return {}
        rules = {**self.intents.expansion_rules, **result.intent_data.expansion_rules}
        expression = result.intent_sentence.expression
        if not isinstance(expression, Group):
            return {}
        return {ref.slot_name: ref.list_name for ref in expression.list_references(rules)}

    # ---- introspection --------------------------------------------------------------
    def intent_names(self) -> list[str]:
        """Every intent name, in every language."""
        return sorted({name for r in self.languages() for name in r.intents.intents})

    def _expressions(self, intent: str | None = None) -> Iterator[Expression]:
        for name, body in self.intents.intents.items():
            if intent is not None and name != intent:
                continue
            for data in body.data:
                for sentence in data.sentences:
                    yield from walk(sentence.expression)
                for rule in data.expansion_rules.values():
                    yield from walk(rule.expression)

    def slot_names(self, intent: str) -> set[str]:
        """Every slot an intent's sentences (or fixed slots) can fill, in any language."""
        names: set[str] = set().union(
            *(r.slot_names(intent) for r in self.translations.values()))
        body = self.intents.intents.get(intent)
        if body is None:
            return names
        rules_seen: set[str] = set()
        pending = list(self._expressions(intent))
        while pending:
            exp = pending.pop()
            if isinstance(exp, ListReference):
                names.add(exp.slot_name)
            elif isinstance(exp, RuleReference) and exp.rule_name not in rules_seen:
                rules_seen.add(exp.rule_name)
                rule = self.intents.expansion_rules.get(exp.rule_name)
                if rule is not None:
                    pending.extend(walk(rule.expression))
        for data in body.data:
            names.update(data.slots)
            names.update(k for k, v in data.requires_context.items()
                         if isinstance(v, dict) and v.get("slot"))
        return names

    def vocabulary(self) -> set[str]:
        """Lower-case words of all templates, list values and expansion rules."""
        vocab = self._template_words() | self._value_words()
        for rule in self.intents.expansion_rules.values():
            vocab.update(w for exp in walk(rule.expression) if isinstance(exp, TextChunk)
                         for w in words(exp.original_text or exp.text or ""))
        vocab.update(w for s in self.intents.skip_words for w in words(s))
        return {w for w in vocab if re.fullmatch(r"[\w']+", w)}

    def _sample_texts(self) -> list[str]:
        """Sample sentences and list values: the words and word pairs people say."""
        texts = [s for _, s in sample_intents(self.intents, max_sentences_per_intent=BIGRAM_SAMPLES,
                                              language=self.language)]
        texts.extend(self._value_texts())
        return texts

    def _template_words(self) -> set[str]:
        return {w for exp in self._expressions() if isinstance(exp, TextChunk)
                for w in words(exp.original_text or exp.text or "")}

    def _value_texts(self) -> Iterator[str]:
        """What people say for each value of the slot lists."""
        for slot_list in self.intents.slot_lists.values():
            for value in getattr(slot_list, "values", []) or []:
                text_in = getattr(value, "text_in", None)
                if text_in is not None:
                    yield " ".join(exp.original_text or exp.text or "" for exp in walk(text_in)
                                   if isinstance(exp, TextChunk))

    def _value_words(self) -> set[str]:
        return {w for text in self._value_texts() for w in words(text)}

    def _common_words(self) -> list[str]:
        counts: dict[str, int] = {}
        for exp in self._expressions():
            if isinstance(exp, TextChunk):
                for w in words(exp.original_text or exp.text or ""):
                    counts[w] = counts.get(w, 0) + 1
        return sorted(counts, key=lambda w: -counts[w])[:INSERTABLE_LIMIT]

    def sample(self, n: int | None = None) -> list[str]:
        """Example sentences (at most `n`)."""
        out: list[str] = []
        for _, sentence in sample_intents(self.intents, max_sentences_per_intent=None,
                                          language=self.language):
            out.append(sentence)
            if n is not None and len(out) >= n:
                break
        return out
