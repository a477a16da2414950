"""`voiced bench intents`: intent recognition speed, fuzzy recovery and false accepts.

Loads the official Home Assistant English sentences (package home-assistant-intents) with
a generated home of 50 areas and 500 entities, then measures:

- latency (p50, p95) of recognizing exact sentences sampled from the templates;
- the fuzzy fallback's recovery rate: sentences with one corrupted word (dropped,
  inserted, or misheard) that plain template matching misses, recovered to the same
  intent and slots;
- the false-accept rate on everyday questions and chatter (`chatter.txt`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import time
from importlib import resources
from typing import Any

ROOMS = ["kitchen", "living room", "bedroom", "bathroom", "office", "garage", "hallway",
         "dining room", "basement", "attic"]
MODIFIERS = ["", "north ", "south ", "guest ", "upper "]
DEVICES = [("ceiling light", "light"), ("lamp", "light"), ("fan", "fan"), ("heater", "switch"),
           ("blinds", "cover"), ("speaker", "media_player"), ("door lock", "lock"),
           ("window", "cover"), ("strip light", "light"), ("television", "media_player")]
FILLERS = ["the", "uh", "to", "and", "a", "now", "on", "in"]


def generated_home(n_areas: int = 50, n_entities: int = 500) -> tuple[list[str], list[dict]]:
    """A home of `n_areas` areas and `n_entities` named devices."""
    areas = [m + r for m in MODIFIERS for r in ROOMS][:n_areas]
    entities = [{"name": f"{a} {d}", "id": f"{dom}.{a.replace(' ', '_')}_{d.replace(' ', '_')}",
                 "domain": dom, "area": a} for a in areas for d, dom in DEVICES][:n_entities]
    return areas, entities


def register(sub: Any) -> None:
    """Add `voiced bench intents`."""
    p: argparse.ArgumentParser = sub.add_parser("intents", help="intent matching benchmark")
    p.add_argument("--sentences", type=int, default=300, help="exact sentences to time")
    p.add_argument("--language", default="en")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.add_argument("--noisy", action="store_true",
                   help="noisy text instead: contractions, split/joined words, words that "
                        "sound alike (voiced/bench/noisy.py), tuning and held-out halves")
    p.add_argument("--per-kind", type=int, default=40,
                   help="--noisy: sentences per kind of noise and half")
    p.set_defaults(func=run)


LONG_NON_MATCH = ("can you tell me whether the new bakery on the corner of main street is "
                  "open on sunday")
"""18 words that match no template: the fuzzy search's worst case."""


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": round(_pct(values, 50), 2), "p95": round(_pct(values, 95), 2),
            "max": round(max(values), 2)} if values else {}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


def corrupt(sentence: str, vocabulary: list[str], rng: random.Random) -> tuple[str, str]:
    """One word dropped, inserted or misheard; returns (sentence, kind)."""
    heard = sentence.split()
    kind = rng.choice(["drop", "insert", "mishear"])
    i = rng.randrange(len(heard))
    if kind == "drop" and len(heard) > 3:
        del heard[i]
    elif kind == "insert":
        heard.insert(rng.randrange(len(heard) + 1), rng.choice(FILLERS))
    else:
        kind = "mishear"
        word = heard[i]
        similar = [w for w in difflib.get_close_matches(word, vocabulary, n=4, cutoff=0.6)
                   if w != word]
        if similar and rng.random() < 0.5:
            heard[i] = rng.choice(similar)
        elif len(word) > 3:
            j = rng.randrange(len(word))
            heard[i] = word[:j] + word[j + 1:]  # a dropped sound
        else:
            heard[i] = word + word[-1]
    return " ".join(heard), kind


def run(args: argparse.Namespace) -> int:
    """Entry of `voiced bench intents`."""
    if args.noisy:
        from voiced.bench.noisy import bench_noisy, print_report

        noisy = bench_noisy(args.language, args.seed, args.per_kind)
        if args.json:
            print(json.dumps(noisy, indent=2))
        else:
            print_report(noisy)
        return 0
    result = bench(args.sentences, args.language, args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"official HA sentences ({args.language}): {result['intents']} intents, "
              f"{result['areas']} areas, {result['entities']} entities "
              f"(loaded in {result['load_s']} s)")
        lat = result["exact_latency_ms"]
        print(f"exact sentences: {result['exact_sentences']}, latency p50 {lat['p50']} ms, "
              f"p95 {lat['p95']} ms")
        fz = result["fuzzy"]
        print(f"one-word errors missed by templates: {fz['missed_by_templates']}, recovered "
              f"{fz['recovered']} ({fz['recovery_rate']:.1%}); by kind: {fz['by_kind']}")
        fl = result["fuzzy_latency_ms"]
        print(f"fuzzy path latency (budget {fl['budget_ms']} ms, gave up {fl['gave_up']}): "
              f"one-word errors {fl['recovered_or_not']}, chatter {fl['chatter']}, "
              f"18-word non-match {fl['long_non_match']}")
        print(f"out-of-domain: {result['chatter']} sentences, false accepts "
              f"{result['false_accepts']} ({result['false_accept_rate']:.1%}) "
              f"{result['false_accepted']}")
    return 0


def bench(n_sentences: int, language: str, seed: int) -> dict[str, Any]:
    """Run the benchmark; returns the figures."""
    from hassil.sample import sample_intents

    from voiced.intents.recognizer import IntentRecognizer
    from voiced.intents.sources import official_intents

    rng = random.Random(seed)
    areas, entities = generated_home()
    started = time.monotonic()
    doc = official_intents(language, areas, entities, zones=["home", "work", "school"])
    recognizer = IntentRecognizer.load([], language, extra=[doc])
    plain = IntentRecognizer(recognizer.intents, language, fuzzy=False)
    load_s = time.monotonic() - started

    pool = [s for _, s in sample_intents(recognizer.intents, max_sentences_per_intent=400,
                                         language=language)]
    rng.shuffle(pool)
    exact: list[tuple[str, Any]] = []
    for sentence in pool:
        sentence = " ".join(sentence.split())
        result = plain.recognize(sentence, {})
        if result.recognized:
            exact.append((sentence, result))
        if len(exact) >= n_sentences:
            break
    for sentence, _ in exact[:20]:  # warm-up
        recognizer.recognize(sentence, {})
    latencies = []
    for sentence, _ in exact:
        t = time.perf_counter()
        recognizer.recognize(sentence, {})
        latencies.append((time.perf_counter() - t) * 1000)

    vocabulary = sorted(recognizer.vocabulary())
    missed = recovered = 0
    by_kind: dict[str, list[int]] = {}
    fuzzy_ms: list[float] = []
    for sentence, want in exact:
        bad, kind = corrupt(sentence, vocabulary, rng)
        if plain.recognize(bad, {}).recognized:
            continue
        missed += 1
        t = time.perf_counter()
        got = recognizer.recognize(bad, {})
        fuzzy_ms.append((time.perf_counter() - t) * 1000)
        ok = got.name == want.name and got.slot_values() == want.slot_values()
        recovered += ok
        stats = by_kind.setdefault(kind, [0, 0])
        stats[0] += ok
        stats[1] += 1

    chatter = (resources.files("voiced.bench") / "chatter.txt").read_text().splitlines()
    chatter = [c.strip() for c in chatter if c.strip()]
    accepted, chatter_ms = [], []
    for sentence in chatter:  # no template matches: the whole fuzzy search runs
        t = time.perf_counter()
        if recognizer.recognize(sentence, {}).recognized:
            accepted.append(sentence)
        chatter_ms.append((time.perf_counter() - t) * 1000)
    long_ms = []
    for _ in range(5):
        t = time.perf_counter()
        recognizer.recognize(LONG_NON_MATCH, {})
        long_ms.append((time.perf_counter() - t) * 1000)
    return {
        "intents": len(recognizer.intent_names()),
        "areas": len(areas),
        "entities": len(entities),
        "load_s": round(load_s, 2),
        "exact_sentences": len(exact),
        "exact_latency_ms": {"p50": round(_pct(latencies, 50), 2),
                             "p95": round(_pct(latencies, 95), 2)},
        "fuzzy": {"missed_by_templates": missed, "recovered": recovered,
                  "recovery_rate": recovered / missed if missed else 1.0,
                  "by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())}},
        "fuzzy_latency_ms": {
            "recovered_or_not": _spread(fuzzy_ms), "chatter": _spread(chatter_ms),
            "long_non_match": _spread(long_ms), "budget_ms": recognizer.fuzzy_budget_s * 1000,
            "gave_up": recognizer.fuzzy_gave_up},
        "chatter": len(chatter),
        "false_accepts": len(accepted),
        "false_accept_rate": len(accepted) / len(chatter),
        "false_accepted": accepted,
    }


