"""Figures of `voiced bench accuracy`: per split, voice family and condition; the text
tables and the PNG plot.

A command counts as understood only when the intent and every slot value match (and no
other command was heard with it); an everyday sentence is a false accept when any
utterance cut from it became a command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from voiced.bench.accuracy_worker import COMMAND_OUTCOMES
from voiced.bench.conditions import parse_condition
from voiced.bench.corpus import FAMILIES, HELD_OUT, SPLITS, TRAINING

GROUPS = ("clean", "reverb", "noise", "far-field", "level")
"""Kinds of condition: none, a room only, noise only, a room and noise, level/clipping."""
SPLIT_TITLES = {TRAINING: "training split", HELD_OUT: "held-out split"}
EXAMPLES = 12


def condition_group(name: str) -> str:
    """Which of GROUPS a condition belongs to."""
    c = parse_condition(name)
    if c.room is not None and c.noise is not None:
        return "far-field"
    if c.room is not None:
        return "reverb"
    if c.noise is not None:
        return "noise"
    return "level" if c.gain_db or c.clip_db is not None else "clean"


def cell(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and rates of some trials."""
    commands = everyday = understood = accepted = truncated = truncated_lost = 0
    failures = dict.fromkeys(COMMAND_OUTCOMES[1:], 0)
    for r in rows:
        if r["kind"] == "command":
            commands += 1
            truncated += bool(r.get("truncated"))
            truncated_lost += bool(r.get("truncated")) and r["outcome"] != "understood"
            if r["outcome"] == "understood":
                understood += 1
            else:
                failures[r["outcome"]] += 1
        else:
            everyday += 1
            accepted += r["outcome"] == "accepted"
    return {
        "commands": commands, "understood": understood,
        "accuracy": round(understood / commands, 4) if commands else None,
        "everyday": everyday, "accepted": accepted,
        "false_accept_rate": round(accepted / everyday, 4) if everyday else None,
        "failures": {k: v for k, v in failures.items() if v},
        "truncated": truncated,
        "truncated_rate": round(truncated / commands, 4) if commands else None,
        "truncated_not_understood": truncated_lost,
    }


def _split_report(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str]) -> dict[str, Any]:
    families = [f for f in FAMILIES if any(r["family"] == f for r in rows)]
    groups = [g for g in GROUPS if any(condition_group(c) == g for c in conditions)]
    return {
        "voices": sorted({r["voice"] for r in rows}),
        "overall": cell(rows),
        "by_family": {f: cell(r for r in rows if r["family"] == f) for f in families},
        "by_condition": {c: cell(r for r in rows if r["condition"] == c) for c in conditions},
        "by_group": {g: cell(r for r in rows if condition_group(r["condition"]) == g)
                     for g in groups},
        "by_family_condition": {
            f: {c: cell(r for r in rows if r["family"] == f and r["condition"] == c)
                for c in conditions} for f in families},
    }


def _examples(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A few failures of the training split (never of the held-out split: looking at
    those would be tuning to them)."""
    def brief(r: Mapping[str, Any]) -> dict[str, Any]:
        return {"voice": r["voice"], "condition": r["condition"], "said": r["text"],
                "heard": " | ".join(h["text"] for h in r["heard"]),
                "became": [h["intent"] for h in r["heard"] if h["intent"]],
                "outcome": r["outcome"]}

    train = [r for r in rows if r["split"] == TRAINING]
    return {
        "false_accepts": [brief(r) for r in train if r["outcome"] == "accepted"][:EXAMPLES],
        "commands_missed": [brief(r) for r in train if r["kind"] == "command"
                            and r["outcome"] != "understood"][:EXAMPLES],
    }


def summarize(rows: Sequence[Mapping[str, Any]], conditions: Sequence[str],
              meta: Mapping[str, Any]) -> dict[str, Any]:
    """The report: `meta` (what ran) and the figures of each split."""
    ordered = sorted(rows, key=lambda r: (r["split"], r["voice"], r["condition"], r["text"]))
    return {
        **meta,
        "splits": {s: _split_report([r for r in ordered if r["split"] == s], conditions)
                   for s in SPLITS},
        "examples": _examples(ordered),
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(report: Mapping[str, Any], metric: str, title: str) -> list[str]:
    families = list(report["by_family"])
    width = max((len(c) for c in report["by_condition"]), default=10) + 2
    count = "commands" if metric == "accuracy" else "everyday"
    head = f"{title:<{width}}" + "".join(f"{f:>16}" for f in families) + f"{'all':>9}{'n':>7}"
    lines = [head]

    def row(name: str, by_family: Mapping[str, Any], total: Mapping[str, Any]) -> str:
        return (f"{name:<{width}}"
                + "".join(f"{_pct(by_family[f][metric]):>16}" for f in families)
                + f"{_pct(total[metric]):>9}{total[count]:>7}")

    for c, total in report["by_condition"].items():
        lines.append(row(c, {f: report["by_family_condition"][f][c] for f in families}, total))
    lines.append(row("all conditions", report["by_family"], report["overall"]))
    return lines


def format_text(report: Mapping[str, Any]) -> str:
    """The report as text tables."""
    m = report
    lines = [
        f"voiced bench accuracy: {m['trials']} trials ({m['voices']} voices, "
        f"{len(m['conditions'])} conditions), seed {m['seed']}, "
        f"{m['held_out_fraction']:.0%} of people and sentences held out"
        + ("; paused set (commands said with 150-600 ms pauses inside)"
           if m.get("paused") else ""),
        f"recognizer: {m['recognizer']}",
        f"context: {m['context']}; corpus pools: commands {m['pools']['commands']}, "
        f"everyday {m['pools']['everyday']}",
        f"{m['elapsed_s']:.0f} s with {m['jobs']} jobs on {m['machine']}",
    ]
    for split in SPLITS:
        r = report["splits"][split]
        o = r["overall"]
        lines += ["", f"== {SPLIT_TITLES[split]}: {len(r['voices'])} voices, "
                      f"{o['commands']} commands, {o['everyday']} everyday sentences =="]
        if not o["commands"] and not o["everyday"]:
            continue
        lines += _table(r, "accuracy", "commands understood %")
        lines.append("")
        lines += _table(r, "false_accept_rate", "everyday -> command %")
        groups = "; ".join(f"{g} {_pct(c['accuracy'])}% / {_pct(c['false_accept_rate'])}%"
                           for g, c in r["by_group"].items())
        lines += ["", f"by kind of condition (understood / false accepts): {groups}",
                  "commands missed: " + (", ".join(f"{k} {v}" for k, v in
                                                  o["failures"].items()) or "none"),
                  f"commands cut short by the endpoint (an utterance ended before the last "
                  f"word): {o['truncated']} ({_pct(o['truncated_rate'])}%), "
                  f"{o['truncated_not_understood']} of them not understood"]
    ex = report["examples"]
    if ex["false_accepts"] or ex["commands_missed"]:
        lines += ["", "examples (training split only):"]
        for e in ex["false_accepts"] + ex["commands_missed"]:
            lines.append(f"  {e['outcome']:<14} {e['voice']}, {e['condition']}: "
                         f"{e['said']!r} heard {e['heard']!r} {e['became'] or ''}")
    return "\n".join(lines)


def plot(report: Mapping[str, Any], path: Path) -> None:
    """Accuracy and false accepts by condition, both splits, as a PNG."""
    from voiced.bench.pngplot import Panel, bar_chart

    conditions = list(report["conditions"])
    splits = report["splits"]

    def values(metric: str) -> list[list[float | None]]:
        out: list[list[float | None]] = []
        for s in SPLITS:
            cells = [splits[s]["by_condition"][c][metric] for c in conditions]
            out.append([None if v is None else 100 * v for v in cells])
        return out

    accepted = values("false_accept_rate")
    worst = max((v for row in accepted for v in row if v is not None), default=0.0)
    top = next(t for t in (25.0, 50.0, 100.0) if worst <= t)
    bar_chart(path, f"voiced bench accuracy: {report['trials']} trials, seed {report['seed']}",
              conditions, [SPLIT_TITLES[s] for s in SPLITS],
              [Panel("commands understood (intent and every slot) %", values("accuracy")),
               Panel("everyday sentences accepted as commands %", accepted, top)])
