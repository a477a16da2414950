"""Compile hassil intents into a JSGF grammar for pocketsphinx.

Grammar mode constrains the embedded recognizer to the sentences the intents can
match, which is what makes a small CPU model accurate for commands. Everything here is
pure and synchronous: `compile_grammar` takes the loaded `hassil.Intents` and a word
set (the recognizer's dictionary) and returns the JSGF text.

What is compiled:

* sentence templates with alternatives ``(a | b)``, optionals ``[a]``, permutations
  ``(a; b)``, expansion rules ``<rule>`` and lists ``{list}`` (intent-local lists and
  rules override global ones, as in hassil);
* text lists become alternatives of their ``in`` texts, range lists become their
  numbers spelled out as words ("twenty five"), as hassil's matcher accepts them;
* skip words may be said before and after every sentence;
* pieces written without a space between them (``light[s]``) are expanded into whole
  words.

Words the dictionary lacks cannot be decoded: the alternatives that need them are
dropped (a template left with nothing to say is dropped entirely), each such word is
logged once and reported in `Grammar.missing_words`; compilation never fails for them.
Wildcard lists cannot be spoken in a closed grammar and are dropped the same way.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Container, Iterator, Mapping
from dataclasses import dataclass, field

from hassil import (
    Alternative,
    Expression,
    IntentData,
    Intents,
    ListReference,
    Permutation,
    RangeSlotList,
    RuleReference,
    Sentence,
    Sequence,
    SlotList,
    TextChunk,
    TextSlotList,
)
from hassil.numbers import get_rbnf_engine

from voiced.asr.base import Completion
from voiced.asr.jsgf import (
    EMPTY,
    Node,
    Ref,
    Word,
    alt,
    end_positions,
    prefix_match,
    render,
    seq,
    walk_words,
    words_of,
)

_LOGGER = logging.getLogger(__name__)

MAX_GLUE_STRINGS = 1000
"""Most strings a run of pieces written without spaces may expand to."""
MAX_PERMUTATION_ITEMS = 5
"""Permutations of more items than this are not expanded (5! = 120 orders)."""

_RULE_CHARS = re.compile(r"[^A-Za-z0-9_]")
SKIP_RULE = "skip"
"""The rule of the skip words said around every sentence."""


@dataclass(frozen=True, slots=True)
class Grammar:
    """A compiled JSGF grammar and what went into it."""

    jsgf: str
    """The grammar text; its public rule is `name`."""
    name: str
    """Grammar and public rule name."""
    words: frozenset[str]
    """Lower-case words the grammar can produce (all in the dictionary)."""
    missing_words: frozenset[str]
    """Words dropped because the dictionary lacks them."""
    sentences: int
    """Sentence templates compiled into the grammar."""
    dropped_sentences: tuple[str, ...] = ()
    """Templates with nothing left to say, as ``Intent: template``."""
    skip_words: frozenset[str] = frozenset()
    """Words of the intents' skip words ("please", "hey"): said around a command, they
    carry no meaning, and the recognizer's confidence leaves them out."""
    _sentences: tuple[Node, ...] = field(default=(), repr=False, compare=False)
    _rules: Mapping[str, Node | None] = field(default_factory=dict, repr=False, compare=False)

    def accepts(self, text: str) -> bool:
        """True when `text` is a whole sentence of the grammar.

        pocketsphinx returns the best partial path when no path reaches the end of the
        grammar ("Final result does not match the grammar"); this tells such a fragment
        from a complete sentence.
        """
        words = tuple(words_of(text))
        return bool(words) and any(
            len(words) in end_positions(node, words, 0, self._rules) for node in self._sentences
        )

    def completion(self, text: str) -> Completion:
        """Is `text` a whole sentence, and can a sentence go on after it?

        A whole sentence is `COMPLETE` when nothing that could follow holds a slot value:
        skip words ("please") and optional words ("what time is it [now]") do not change
        what the command does, so they are no reason to wait. It is `CONTINUABLE` when a
        longer sentence could add a value ("... ten minutes" → "... and five seconds").
        """
        words = tuple(words_of(text))
        if not words:
            return Completion.NONE
        quiet = frozenset({SKIP_RULE})
        slots = frozenset(name for name in self._rules if name.startswith("list_"))
        memo: dict[str, bool] = {}
        complete = more = slot = False
        for node in self._sentences:
            found = prefix_match(node, words, 0, self._rules, quiet, slots, memo)
            if len(words) in found.ends:
                complete = True
            if found.more:
                more = True
                slot = slot or found.slot
            if complete and slot:
                break
        if complete:
            return Completion.CONTINUABLE if slot else Completion.COMPLETE
        return Completion.PREFIX if more else Completion.NONE


class _Compiler:
    """One compilation: rule bodies, memoized, and the words it met."""

    def __init__(self, intents: Intents, known: Container[str] | None, language: str) -> None:
        self.intents = intents
        self.known = known
        self.language = language
        self.rules: dict[str, Node | None] = {}
        self.missing: set[str] = set()
        self._busy: set[str] = set()

    # -- scopes: intent-local lists and rules override global ones -------------------

    def _scope_tag(self, data: IntentData | None, intent: str, index: int) -> str:
        if data is None or not (data.slot_lists or data.expansion_rules):
            return ""
        return _RULE_CHARS.sub("_", f"{intent}_{index}_")

    def _lists(self, data: IntentData | None) -> Mapping[str, SlotList]:
        if data is None or not data.slot_lists:
            return self.intents.slot_lists
        return {**self.intents.slot_lists, **data.slot_lists}

    def _rules(self, data: IntentData | None) -> Mapping[str, Sentence]:
        if data is None or not data.expansion_rules:
            return self.intents.expansion_rules
        return {**self.intents.expansion_rules, **data.expansion_rules}

    # -- expressions → nodes ----------------------------------------------------------

    def word(self, word: str) -> Node | None:
        if self.known is not None and word not in self.known:
            if word not in self.missing:
                self.missing.add(word)
                _LOGGER.warning(
                    "Word %r is not in the recognizer's dictionary; "
                    "dropping the sentence alternatives that need it",
                    word,
                )
            return None
        return Word(word)

    def text(self, text: str) -> Node | None:
        return seq(self.word(w) for w in words_of(text))

    def expr(self, expr: Expression, scope: tuple[IntentData | None, str]) -> Node | None:
        if isinstance(expr, TextChunk):
            return self.text(expr.text)
        if isinstance(expr, Alternative):
            return alt((self.expr(i, scope) for i in expr.items), expr.is_optional)
        if isinstance(expr, Permutation):
            return self._permutation(expr, scope)
        if isinstance(expr, Sequence):
            return self._sequence(expr, scope)
        if isinstance(expr, ListReference):
            return self._list_ref(expr.list_name, scope)
        if isinstance(expr, RuleReference):
            return self._rule_ref(expr.rule_name, scope)
        _LOGGER.warning("Unsupported template expression %r; dropping it", expr)
        return None

    def _permutation(
        self, expr: Permutation, scope: tuple[IntentData | None, str]
    ) -> Node | None:
        if len(expr.items) > MAX_PERMUTATION_ITEMS:
            _LOGGER.warning("Permutation of %d items is too large; dropping it", len(expr.items))
            return None
        nodes = [self.expr(i, scope) for i in expr.items]
        return alt(seq(order) for order in itertools.permutations(nodes))

    def _sequence(self, expr: Sequence, scope: tuple[IntentData | None, str]) -> Node | None:
        # Pieces written without a space between them form one word ("light[s]"), so
        # the sequence is cut into runs at whitespace; a run of several pieces is
        # expanded into its strings and re-split into words.
        runs: list[list[Expression | str]] = [[]]
        for item in expr.items:
            if isinstance(item, TextChunk):
                for i, part in enumerate(re.split(r"(\s+)", item.text)):
                    if i % 2:
                        runs.append([])
                    elif part:
                        runs[-1].append(part)
            else:
                runs[-1].append(item)
        nodes: list[Node | None] = []
        for run in runs:
            if len(run) == 1:
                piece = run[0]
                if isinstance(piece, str):
                    nodes.append(self.text(piece))
                else:
                    nodes.append(self.expr(piece, scope))
            elif run:
                nodes.append(self._glued(run, scope))
        return seq(nodes)

    def _glued(
        self, run: list[Expression | str], scope: tuple[IntentData | None, str]
    ) -> Node | None:
        choices: list[list[str]] = []
        total = 1
        for piece in run:
            strings = [piece] if isinstance(piece, str) else self.strings(piece, scope)
            if strings is None:
                return None
            total *= max(1, len(strings))
            if total > MAX_GLUE_STRINGS:
                _LOGGER.warning("Template piece expands to over %d words; dropping it", total)
                return None
            choices.append(strings)
        return alt(self.text("".join(parts)) for parts in itertools.product(*choices))

    def strings(
        self, expr: Expression, scope: tuple[IntentData | None, str], depth: int = 0
    ) -> list[str] | None:
        """Every string `expr` can say (None if it contains a wildcard)."""
        if depth > 24:
            return None
        if isinstance(expr, TextChunk):
            return [expr.text]
        if isinstance(expr, RuleReference):
            body = self._rules(scope[0]).get(expr.rule_name)
            return None if body is None else self.strings(body.expression, scope, depth + 1)
        if isinstance(expr, ListReference):
            slot_list = self._lists(scope[0]).get(expr.list_name)
            if isinstance(slot_list, RangeSlotList):
                return list(self.number_phrases(slot_list))
            if not isinstance(slot_list, TextSlotList):
                return None
            items: list[Expression] = [v.text_in for v in slot_list.values]
        elif isinstance(expr, Alternative | Sequence | Permutation):
            items = list(expr.items)
        else:
            return None
        parts = [self.strings(i, scope, depth + 1) for i in items]
        if any(p is None for p in parts):
            return None
        lists = [p for p in parts if p is not None]
        if isinstance(expr, Sequence):
            return ["".join(combo) for combo in itertools.product(*lists)]
        if isinstance(expr, Permutation):
            return [
                " ".join(combo)
                for order in itertools.permutations(lists)
                for combo in itertools.product(*order)
            ]
        return [s for p in lists for s in p]

    def number_phrases(self, slot_list: RangeSlotList) -> Iterator[str]:
        """The spoken forms of a range list's numbers, as hassil's matcher accepts them."""
        if not slot_list.words:
            return
        engine = get_rbnf_engine(slot_list.words_language or self.language)
        for number in slot_list.get_numbers():
            yield from dict.fromkeys(engine.format_number(number).text_by_ruleset.values())

    # -- named rules ------------------------------------------------------------------

    def _named(self, name: str, build: Callable[[], Node | None]) -> Node | None:
        if name not in self.rules:
            if name in self._busy:
                _LOGGER.warning("Rule <%s> refers to itself; dropping the reference", name)
                return None
            self._busy.add(name)
            self.rules[name] = build()
            self._busy.discard(name)
        body = self.rules[name]
        if body is None or body == EMPTY:
            return body
        return Ref(name)

    def _list_ref(self, name: str, scope: tuple[IntentData | None, str]) -> Node | None:
        local = scope[0] is not None and name in scope[0].slot_lists
        rule_name = _RULE_CHARS.sub("_", f"list_{scope[1] if local else ''}{name}")
        return self._named(rule_name, lambda: self._list_body(name, scope))

    def _list_body(self, name: str, scope: tuple[IntentData | None, str]) -> Node | None:
        slot_list = self._lists(scope[0]).get(name)
        if isinstance(slot_list, TextSlotList):
            return alt(self.expr(v.text_in, scope) for v in slot_list.values)
        if isinstance(slot_list, RangeSlotList):
            return alt(self.text(phrase) for phrase in self.number_phrases(slot_list))
        what = "a wildcard" if slot_list is not None else "missing"
        _LOGGER.warning("List {%s} is %s and cannot be spoken in a grammar", name, what)
        return None

    def _rule_ref(self, name: str, scope: tuple[IntentData | None, str]) -> Node | None:
        def body() -> Node | None:
            rule = self._rules(scope[0]).get(name)
            if rule is None:
                _LOGGER.warning("Expansion rule <%s> is missing", name)
                return None
            return self.expr(rule.expression, scope)

        # a global rule is scoped too when local lists may change what it says
        data = scope[0]
        local = data is not None and (name in data.expansion_rules or bool(data.slot_lists))
        return self._named(_RULE_CHARS.sub("_", f"rule_{scope[1] if local else ''}{name}"), body)

    def skip(self) -> Node | None:
        words = [w for w in self.intents.skip_words if w.strip()]
        if not words:
            return None
        return self._named(SKIP_RULE, lambda: alt(self.text(w) for w in words))


def compile_grammar(
    intents: Intents,
    known_words: Container[str] | None = None,
    *,
    language: str | None = None,
    name: str = "voiced",
) -> Grammar:
    """Compile every sentence template of `intents` into one JSGF grammar.

    `known_words` is the recognizer's dictionary (None accepts every word); words
    outside it are dropped as described in the module docstring. Number words come
    from `language` (default: the intents' language).
    """
    compiler = _Compiler(intents, known_words, language or intents.language)
    skip = compiler.skip()
    sentences: list[tuple[str, Node]] = []
    bare: list[Node] = []
    """Each sentence without the skip words around it (rendered: the skip words are
    said around all of them once, a quarter less search than around each one)."""
    dropped: list[str] = []
    for intent_name, intent in intents.intents.items():
        for index, data in enumerate(intent.data):
            scope = (data, compiler._scope_tag(data, intent_name, index))
            for sentence in data.sentences:
                node = compiler.expr(sentence.expression, scope)
                label = f"{intent_name}: {sentence.text}"
                if node is None or node == EMPTY:
                    _LOGGER.warning("Sentence template %r has nothing left to say; dropped", label)
                    dropped.append(label)
                    continue
                bare.append(node)
                if skip is not None:
                    node = seq([alt([skip], True), node, alt([skip], True)])
                assert node is not None
                sentences.append((label, node))

    lines = ["#JSGF V1.0;", "", f"grammar {name};", ""]
    if sentences:
        alternatives = " | ".join(f"<sentence{i}>" for i in range(len(sentences)))
        if skip is not None:
            alternatives = f"[ {render(skip)} ] ( {alternatives} ) [ {render(skip)} ]"
        lines.append(f"public <{name}> = {alternatives};")
    else:
        _LOGGER.warning("No sentence can be spoken; the grammar accepts nothing")
        lines.append(f"public <{name}> = <VOID>;")
    lines.append("")
    for i, ((label, _), node) in enumerate(zip(sentences, bare, strict=True)):
        lines.append(f"// {label.replace(chr(10), ' ')}")
        lines.append(f"<sentence{i}> = {render(node)};")
    for rule_name, body in compiler.rules.items():
        if body is not None and body != EMPTY:
            lines.append(f"<{rule_name}> = {render(body)};")

    seen: set[str] = set()
    words = {w for _, node in sentences for w in walk_words(node, compiler.rules, seen)}
    return Grammar(
        jsgf="\n".join(lines) + "\n",
        name=name,
        words=frozenset(words),
        missing_words=frozenset(compiler.missing),
        sentences=len(sentences),
        dropped_sentences=tuple(dropped),
        skip_words=frozenset(w for phrase in intents.skip_words for w in words_of(phrase)),
        _sentences=tuple(node for _, node in sentences),
        _rules=dict(compiler.rules),
    )


def sentence_words(intents: Intents, language: str | None = None) -> set[str]:
    """Every lower-case word the intents' sentences can contain, numbers spelled out.

    Covers templates, list values, range lists (as number words), expansion rules and
    skip words; wildcards contribute nothing.
    """
    return set(compile_grammar(intents, None, language=language).words)
