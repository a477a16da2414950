"""JSGF grammar nodes: building, rendering as JSGF text, and matching word sequences.

The node tree is what `voiced.asr.grammar` compiles hassil templates into. `None` stands
for "cannot be said" (a word missing from the dictionary), `EMPTY` for "says nothing".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

_NON_WORD = re.compile(r"[^\w'\s]+")


@dataclass(frozen=True, slots=True)
class Word:
    """One dictionary word."""

    text: str


@dataclass(frozen=True, slots=True)
class Seq:
    """Items one after another (empty: says nothing)."""

    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    """One of the items; `optional` also allows nothing."""

    items: tuple[Node, ...]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Ref:
    """A named rule."""

    rule: str


Node = Word | Seq | Alt | Ref
EMPTY = Seq(())
"""Says nothing (epsilon); None means "cannot be said"."""


def seq(items: Iterable[Node | None]) -> Node | None:
    """A flattened sequence; None when any item cannot be said."""
    flat: list[Node] = []
    for item in list(items):  # every item is built, so every missing word is reported
        if item is None:
            return None
        if isinstance(item, Seq):
            flat.extend(item.items)
        else:
            flat.append(item)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(items: Iterable[Node | None], optional: bool = False) -> Node | None:
    """Alternatives without duplicates or unsayable items; None when none is left."""
    kept: dict[Node, None] = {}  # in order, each once: a range of 10^5 numbers is linear
    for item in items:
        if item is None:
            continue
        if item == EMPTY:
            optional = True
            continue
        if isinstance(item, Alt):
            optional = optional or item.optional
            parts: Iterable[Node] = item.items
        else:
            parts = (item,)
        kept.update(dict.fromkeys(parts))
    if not kept:
        return EMPTY if optional else None
    if len(kept) == 1 and not optional:
        return next(iter(kept))
    return Alt(tuple(kept), optional)


def words_of(text: str) -> list[str]:
    """Split template or list text into lower-case dictionary-style words.

    Hyphens and underscores separate words ("twenty-one" is "twenty one"), other
    punctuation is dropped, apostrophes inside words stay ("what's").
    """
    text = text.replace("’", "'").replace("-", " ").replace("_", " ").lower()
    words = (w.strip("'") for w in _NON_WORD.sub(" ", text).split())
    return [w for w in words if w]


def render(node: Node) -> str:
    """JSGF text of a node."""
    if isinstance(node, Word):
        return node.text
    if isinstance(node, Ref):
        return f"<{node.rule}>"
    if isinstance(node, Seq):
        return " ".join(render(i) for i in node.items)
    body = " | ".join(render(i) for i in node.items)
    return f"[ {body} ]" if node.optional else f"( {body} )"


def walk_words(
    node: Node | None, rules: Mapping[str, Node | None], seen: set[str]
) -> Iterator[str]:
    """Every word `node` can say, following rules once each (`seen`)."""
    if isinstance(node, Word):
        yield node.text
    elif isinstance(node, Seq | Alt):
        for item in node.items:
            yield from walk_words(item, rules, seen)
    elif isinstance(node, Ref) and node.rule not in seen:
        seen.add(node.rule)
        yield from walk_words(rules.get(node.rule), rules, seen)


def end_positions(
    node: Node | None, words: tuple[str, ...], pos: int, rules: Mapping[str, Node | None]
) -> set[int]:
    """Positions where `node` can stop when it starts matching `words` at `pos`."""
    if isinstance(node, Word):
        return {pos + 1} if pos < len(words) and words[pos] == node.text else set()
    if isinstance(node, Ref):
        return end_positions(rules.get(node.rule), words, pos, rules)
    if isinstance(node, Seq):
        current = {pos}
        for item in node.items:
            current = {end for start in current for end in end_positions(item, words, start, rules)}
            if not current:
                break
        return current
    if isinstance(node, Alt):
        ends = {pos} if node.optional else set()
        for item in node.items:
            ends |= end_positions(item, words, pos, rules)
        return ends
    return set()


def says_slot(node: Node | None, rules: Mapping[str, Node | None], slots: frozenset[str],
              memo: dict[str, bool]) -> bool:
    """Can `node` say a slot value (one of the rules named in `slots`)?"""
    if isinstance(node, Ref):
        if node.rule in slots:
            return True
        if node.rule not in memo:
            memo[node.rule] = False  # a rule referring to itself adds nothing
            memo[node.rule] = says_slot(rules.get(node.rule), rules, slots, memo)
        return memo[node.rule]
    if isinstance(node, Seq | Alt):
        return any(says_slot(item, rules, slots, memo) for item in node.items)
    return False


@dataclass(slots=True)
class PrefixMatch:
    """What `prefix_match` found."""

    ends: set[int]
    """Positions where the node can stop (as `end_positions`)."""
    more: bool = False
    """The node can say every remaining word and then say more."""
    slot: bool = False
    """... and what it says then can hold a slot value (a number, a name)."""


def prefix_match(
    node: Node | None, words: tuple[str, ...], pos: int, rules: Mapping[str, Node | None],
    quiet: frozenset[str] = frozenset(), slots: frozenset[str] = frozenset(),
    memo: dict[str, bool] | None = None,
) -> PrefixMatch:
    """Match `words[pos:]` against the start of `node`.

    Besides where `node` can stop, tells whether `node` can say every remaining word and
    then say more (the words are a prefix of something longer it says), and whether that
    more can hold a slot value: a rule named in `slots`. A rule named in `quiet` (skip
    words) matches words as usual but never counts as saying more on its own.
    """
    memo = {} if memo is None else memo
    if isinstance(node, Word):
        if pos >= len(words):
            return PrefixMatch(set(), True)
        return PrefixMatch({pos + 1} if words[pos] == node.text else set())
    if isinstance(node, Ref):
        if pos >= len(words) and node.rule in quiet:
            return PrefixMatch(set())
        found = prefix_match(rules.get(node.rule), words, pos, rules, quiet, slots, memo)
        if node.rule in slots and found.more:
            found.slot = True  # inside a value: "seventy" → "seventy five"
        return found
    if isinstance(node, Seq):
        result = PrefixMatch({pos})
        current = {pos}
        for index, item in enumerate(node.items):
            following: set[int] = set()
            for start in current:
                found = prefix_match(item, words, start, rules, quiet, slots, memo)
                following |= found.ends
                if found.more:
                    result.more = True
                    result.slot = result.slot or found.slot or any(
                        says_slot(rest, rules, slots, memo) for rest in node.items[index + 1:])
            current = following
            if not current:
                break
        result.ends = current
        return result
    if isinstance(node, Alt):
        result = PrefixMatch({pos} if node.optional else set())
        for item in node.items:
            found = prefix_match(item, words, pos, rules, quiet, slots, memo)
            result.ends |= found.ends
            result.more = result.more or found.more
            result.slot = result.slot or found.slot
        return result
    return PrefixMatch(set())
