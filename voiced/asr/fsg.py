"""The intents' grammar as a minimal word automaton, for pocketsphinx's FSG search.

pocketsphinx turns a JSGF grammar into a finite-state grammar by copying every rule at
every place it is used: the 33 example sentences become 1 635 states, 4 818 word arcs and
4 003 null arcs (three copies of the numbers 0-100, one of every area for each sentence
that names one). The search pays for every arc its beam keeps alive, and decoding 20
satellites at once is what saturates a small server.

`minimal_fsg` takes the automaton pocketsphinx's own JSGF compiler makes (`jsgf_fsg`,
with its weights) and turns it into the deterministic one with the fewest states that
says the same sentences with the same weights: weighted subset construction in the
(max, +) semiring of log probabilities, the semiring of a Viterbi search, then partition
refinement. Sentences that share a start share its states, sentences that end alike share
their endings ("... to {brightness} percent" exists once), and every sentence's best path
weighs what it weighs in the JSGF automaton, so the search scores a hypothesis as before
(and `asr.min_confidence` keeps its meaning). The example intents become 76 states and
405 word arcs; decoding takes about a third of the time. Filler words (silence, noise)
and alternative pronunciations are left out: the search adds them to every state itself.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MAX_STATES = 50_000
"""A grammar whose automaton would be bigger than this is decoded with pocketsphinx's
JSGF automaton as it is (None from `minimal_fsg`)."""

Arc = tuple[int, int, float] | tuple[int, int, float, str]
"""(from, to, probability, word), or (from, to, probability) for a null arc."""


@dataclass(frozen=True, slots=True)
class Fsg:
    """A word automaton: states 0..states-1, `start`, one `final` state; `arcs` as
    pocketsphinx's `Decoder.create_fsg` takes them."""

    states: int
    start: int
    final: int
    arcs: tuple[Arc, ...]

    @property
    def word_arcs(self) -> int:
        return sum(1 for arc in self.arcs if len(arc) == 4)


def jsgf_fsg(jsgf: str, rule: str) -> Fsg:
    """The automaton pocketsphinx's JSGF compiler makes of `rule` of `jsgf` (its public
    rule's name), with its weights; filler words and alternative pronunciations are the
    search's to add, not here. The weights are written for the decoder's language weight
    (`lw`, pocketsphinx's default: voiced's decoders keep it), as its own JSGF search
    would have them."""
    import pocketsphinx

    lw = float(pocketsphinx.Config()["lw"])

    with tempfile.TemporaryDirectory(prefix="voiced-fsg-") as folder:
        path = Path(folder) / "grammar.gram"
        path.write_text(jsgf, encoding="utf-8")
        grammar = pocketsphinx.Jsgf(str(path))
        compiled = grammar.build_fsg(grammar.get_rule(f"{grammar.get_name()}.{rule}"),
                                     pocketsphinx.LogMath(), lw)
        out = Path(folder) / "grammar.fsg"
        compiled.writefile(str(out))
        text = out.read_text(encoding="utf-8")
    states = start = final = 0
    arcs: list[Arc] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "NUM_STATES":
            states = int(fields[1])
        elif fields[0] == "START_STATE":
            start = int(fields[1])
        elif fields[0] == "FINAL_STATE":
            final = int(fields[1])
        elif fields[0] == "TRANSITION":
            a, b, prob = int(fields[1]), int(fields[2]), float(fields[3])
            if len(fields) > 4:
                arcs.append((a, b, prob, fields[4]))
            else:
                arcs.append((a, b, prob))
    return Fsg(states=states, start=start, final=final, arcs=tuple(arcs))


class _Nfa:
    """Word arcs and null arcs, weights as log probabilities."""

    def __init__(self, fsg: Fsg) -> None:
        self.eps: list[list[tuple[int, float]]] = [[] for _ in range(fsg.states)]
        self.words: list[list[tuple[str, int, float]]] = [[] for _ in range(fsg.states)]
        for arc in fsg.arcs:
            if arc[2] <= 0:
                continue  # never taken
            if len(arc) == 4:
                self.words[arc[0]].append((arc[3], arc[1], math.log(arc[2])))
            else:
                self.eps[arc[0]].append((arc[1], math.log(arc[2])))

    def closure(self, weights: dict[int, float]) -> dict[int, float]:
        """Every state reached by null arcs, with the best log weight of getting there."""
        best = dict(weights)
        stack = list(best)
        while stack:
            state = stack.pop()
            for nxt, weight in self.eps[state]:
                w = best[state] + weight
                if w > best.get(nxt, -math.inf) + _EPSILON:
                    best[nxt] = w
                    stack.append(nxt)
        return best


_EPSILON = 1e-9
_DIGITS = 6
"""Weights are compared rounded to this many decimals."""


def _key(weights: dict[int, float]) -> frozenset[tuple[int, float]]:
    return frozenset((s, round(w, _DIGITS)) for s, w in weights.items())


def minimal_fsg(source: Fsg, max_states: int | None = None) -> Fsg | None:
    """The minimal deterministic automaton saying exactly what `source` says, each
    sentence's best path weighing what it weighs there; None when it would have more
    than `max_states` (`MAX_STATES`) states or nothing can be said.

    Weighted determinization in the (max, +) semiring: each state of the result is a
    set of source states with the weight still owed to each (relative to the best); an
    arc carries the best weight of its word. Automata without loops (every hassil
    grammar's) always determinize.
    """
    max_states = MAX_STATES if max_states is None else max_states
    nfa = _Nfa(source)
    start, accept = source.start, source.final

    # weighted subset construction
    first = nfa.closure({start: 0.0})
    top = max(first.values())
    first = {s: w - top for s, w in first.items()}
    index: dict[frozenset[tuple[int, float]], int] = {_key(first): 0}
    order = [first]
    delta: list[dict[str, tuple[int, float]]] = []
    for subset in order:
        moves: dict[str, dict[int, float]] = {}
        for state, owed in subset.items():
            for word, nxt, weight in nfa.words[state]:
                targets = moves.setdefault(word, {})
                if owed + weight > targets.get(nxt, -math.inf):
                    targets[nxt] = owed + weight
        row: dict[str, tuple[int, float]] = {}
        for word in sorted(moves):
            reached = nfa.closure(moves[word])
            best = max(reached.values())
            reached = {s: w - best for s, w in reached.items()}
            key = _key(reached)
            if key not in index:
                if len(order) >= max_states:
                    return None
                index[key] = len(order)
                order.append(reached)
            row[word] = (index[key], best)
        delta.append(row)
    stops: list[float | None] = [subset.get(accept) for subset in order]
    if all(stop is None for stop in stops):
        return None

    # partition refinement (Moore): states that stop alike and go alike (word, weight,
    # block) on every word are one state
    def stop_key(stop: float | None) -> float | None:
        return None if stop is None else round(stop, _DIGITS)

    block_of: dict[float | None, int] = {}
    block = [block_of.setdefault(stop_key(stop), len(block_of)) for stop in stops]
    while True:
        signatures: dict[tuple[object, ...], int] = {}
        new = []
        for state, moves_of in enumerate(delta):
            signature = (block[state], tuple((w, round(x, _DIGITS), block[t])
                                             for w, (t, x) in moves_of.items()))
            new.append(signatures.setdefault(signature, len(signatures)))
        if len(signatures) == len(set(block)):
            break
        block = new

    # renumber from the start state, breadth first (a stable, readable numbering)
    number = {block[0]: 0}
    queue = [0]
    out: dict[int, list[tuple[str, int, float]]] = {}
    stop_of: dict[int, float | None] = {}
    for state in queue:  # one state of each block: each block is queued once
        b = block[state]
        out[b] = []
        stop_of[b] = stops[state]
        for word, (target, x) in delta[state].items():
            tb = block[target]
            if tb not in number:
                number[tb] = len(number)
                queue.append(target)
            out[b].append((word, number[tb], x))
    final = len(number)
    arcs: list[tuple[int, int, float] | tuple[int, int, float, str]] = []
    for b, said in sorted(out.items(), key=lambda item: number[item[0]]):
        here = number[b]
        for word, target, x in said:
            arcs.append((here, target, math.exp(x), word))
        stop = stop_of[b]
        if stop is not None:
            arcs.append((here, final, math.exp(stop)))
    return Fsg(states=final + 1, start=0, final=final, arcs=tuple(arcs))


def accepts(fsg: Fsg, words: Sequence[str]) -> bool:
    """Whether `fsg` says exactly `words` (for tests and checks)."""
    return weight(fsg, words) is not None


def weight(fsg: Fsg, words: Sequence[str]) -> float | None:
    """The log probability of the best path saying `words` (None: `fsg` does not say
    them); any automaton, deterministic or not."""
    nfa = _Nfa(fsg)
    current = nfa.closure({fsg.start: 0.0})
    for word in words:
        moved: dict[int, float] = {}
        for state, w in current.items():
            for said, nxt, x in nfa.words[state]:
                if said == word and w + x > moved.get(nxt, -math.inf):
                    moved[nxt] = w + x
        if not moved:
            return None
        current = nfa.closure(moved)
    return current.get(fsg.final)
