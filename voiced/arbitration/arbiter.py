"""The arbiter: rounds and contests of every room group (see `voiced.arbitration`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from voiced.arbitration.decisions import (
    Action,
    Anchor,
    Announce,
    ArbitrationSettings,
    Decision,
    Fate,
    Lose,
    Measure,
    Policy,
    Reason,
    Release,
    Scored,
    Verdict,
    Win,
    combined_score,
)
from voiced.audio.levels import Evidence

ANCHOR_MS = 800.0
"""A candidate that had been hearing "speech" for longer than this when a contest opened
(a television the VAD takes for speech) is scored from then on, like the newcomer: the
same command reaches every satellite of a group within a few hundred ms (network,
buffering, a VAD that starts later in noise)."""


@dataclass(slots=True)
class _Candidate:
    site: str
    session_id: str
    started_at: float
    state: Verdict
    active: bool = True
    """Its utterance is in progress."""
    ready: bool = False
    """It has `score_ms` of speech, or its utterance ended."""
    spoke: bool = False
    """Its utterance ended with speech (there is audio to run or keep)."""
    ended_at: float = 0.0
    released: bool = False
    score: float | None = None
    evidence: Evidence | None = None


@dataclass(slots=True)
class _Round:
    group: str
    opened_at: float
    candidates: dict[str, _Candidate] = field(default_factory=dict)
    winner: str | None = None
    contest_until: float | None = None
    """Set while a contest is open: decide by then."""
    taken_at: float | None = None
    """When the winner's utterance went to run."""
    owned: bool = False
    """Opened by a conversation's follow-up: nobody else can win it."""
    last: Decision | None = None

    def pool(self) -> list[_Candidate]:
        """Candidates that can still win."""
        return [c for c in self.candidates.values()
                if c.state != Verdict.LOSE and (c.active or c.spoke)]


class Arbiter:
    """Rounds and contests of every group; see the module docstring."""

    def __init__(self, settings: ArbitrationSettings, groups: Mapping[str, str]) -> None:
        self.settings = settings
        self.groups = dict(groups)
        """site → group; a site in no group is never arbitrated."""
        self._rounds: dict[str, _Round] = {}
        self._lost: dict[str, Decision] = {}
        """Sites whose utterance in progress lost outside a live round."""
        self._owners: dict[str, tuple[str, float]] = {}
        """group → (site in a conversation, until when it owns the group)."""

    # ---- what the sites report ------------------------------------------------------
    def start(self, site: str, session_id: str, now: float,
              measure: Measure) -> tuple[Verdict, list[Action]]:
        """`site` started an utterance; its verdict (WAIT and GO may change later)."""
        group = self.groups.get(site)
        self._lost.pop(site, None)
        if group is None:
            return Verdict.GO, []
        actions = self._gc(group, now)
        rnd = self._rounds.get(group)
        owner = self._owner(group, now)
        if owner == site:
            del self._owners[group]
            if rnd is not None:
                actions += self._close(rnd, now, site, Reason.CONVERSATION)
            rnd = self._rounds[group] = _Round(group, now, winner=site, owned=True)
            rnd.candidates[site] = _Candidate(site, session_id, now, Verdict.GO)
            return Verdict.GO, actions
        if owner is not None:
            return Verdict.LOSE, actions + self._refuse(rnd, group, site, session_id, now,
                                                        Reason.CONVERSATION, owner)
        known = rnd.candidates.get(site) if rnd is not None else None
        if (rnd is not None and known is not None and rnd.contest_until is not None
                and known.spoke and known.state != Verdict.LOSE):
            # its previous utterance still waits for this contest: decide it first
            actions += self._decide(rnd, now, measure, Reason.DEADLINE)
        if rnd is not None and rnd.taken_at is not None and rnd.winner == site:
            actions += self._close(rnd, now, None, Reason.LATE)
            rnd = None
        if rnd is None:
            rnd = self._rounds[group] = _Round(group, now)
            rnd.candidates[site] = _Candidate(site, session_id, now, Verdict.GO)
            return Verdict.GO, actions
        known = rnd.candidates.get(site)
        if rnd.owned or rnd.taken_at is not None or (known and known.state == Verdict.LOSE):
            reason = Reason.CONVERSATION if rnd.owned else Reason.LATE
            return Verdict.LOSE, actions + self._refuse(rnd, group, site, session_id, now,
                                                        reason, rnd.winner)
        if rnd.contest_until is None:
            # the contest opens: a candidate that has been hearing "speech" for over
            # ANCHOR_MS (a television) is scored from now, like the newcomer; the others
            # keep their onsets, and later newcomers move nobody's (scoring a candidate
            # mid-word against a newcomer's onset would favour the newcomer)
            for cand in rnd.pool():
                if cand.active and now - cand.started_at > ANCHOR_MS / 1000:
                    cand.ready = False
                    actions.append(Anchor(cand.site))
            rnd.contest_until = now + self.settings.window_ms / 1000
        rnd.candidates[site] = _Candidate(site, session_id, now, Verdict.WAIT)
        if self.settings.policy == Policy.FIRST:
            actions += self._decide(rnd, now, measure, Reason.FIRST)
        return rnd.candidates[site].state, actions

    def ready(self, site: str, now: float, measure: Measure) -> list[Action]:
        """`site`'s utterance has `score_ms` of speech."""
        rnd, cand = self._find(site)
        if rnd is None or cand is None or not cand.active:
            return []
        cand.ready = True
        return self._maybe_decide(rnd, now, measure)

    def ended(self, site: str, now: float, spoke: bool,
              measure: Measure) -> tuple[Fate, list[Action]]:
        """`site`'s utterance ended: with speech (`spoke`), or discarded/abandoned."""
        group = self.groups.get(site)
        nothing = Fate.NONE
        lost = self._lost.pop(site, None)
        if group is None:  # (a loser that left its group on a reload stays quiet)
            return (Fate.RELEASE if spoke and lost else Fate.SUBMIT if spoke else nothing), []
        rnd, cand = self._find(site)
        if rnd is None or cand is None or not cand.active:
            if lost is not None:
                return (Fate.RELEASE if spoke else nothing), []
            return (Fate.SUBMIT if spoke else nothing), []
        cand.active, cand.ready, cand.spoke, cand.ended_at = False, True, spoke, now
        if cand.state == Verdict.LOSE:
            if not spoke:
                return nothing, []
            if rnd.taken_at is not None:
                cand.released = True
                return Fate.RELEASE, []
            return Fate.KEEP, []
        if not spoke:
            if rnd.contest_until is not None:
                return nothing, self._maybe_decide(rnd, now, measure)
            if rnd.winner == site:
                return nothing, self._swap(rnd, site, now)
            return nothing, []
        if rnd.contest_until is not None:
            return Fate.PARK, self._maybe_decide(rnd, now, measure)
        return Fate.SUBMIT, self._take(rnd, site, now)

    def converse(self, site: str, now: float, for_s: float) -> None:
        """`site` asked a follow-up question: it owns its group's next utterance for
        `for_s` seconds (its session's wait for speech)."""
        group = self.groups.get(site)
        if group is not None:
            self._owners[group] = (site, now + for_s)

    def regroup(self, settings: ArbitrationSettings, groups: Mapping[str, str], now: float,
                measure: Measure) -> list[Action]:
        """New settings and groups (a config reload). A group whose members changed (or
        that is gone) has its open contest decided now and its round closed: its winner
        goes on, its losers stay quiet (a loser still speaking is ended quietly, wherever
        it belongs now), its kept losers are released. Other groups' rounds go on, under
        the new settings from their next contest."""
        def members(mapping: Mapping[str, str]) -> dict[str, frozenset[str]]:
            out: dict[str, set[str]] = {}
            for site, group in mapping.items():
                out.setdefault(group, set()).add(site)
            return {g: frozenset(s) for g, s in out.items()}

        old, new = members(self.groups), members(groups)
        changed = {g for g in old if old[g] != new.get(g)}
        actions: list[Action] = []
        for group in sorted(changed):
            rnd = self._rounds.get(group)
            if rnd is None:
                continue
            if rnd.contest_until is not None:
                actions += self._decide(rnd, now, measure, Reason.DEADLINE)
            if group in self._rounds:
                actions += self._close(rnd, now, rnd.winner, Reason.LATE)
        for group in changed & set(self._owners):
            del self._owners[group]
        self.settings = settings
        self.groups = dict(groups)
        return actions

    def forget(self, site: str, now: float, measure: Measure) -> list[Action]:
        """`site` is gone (stopped, expired): it leaves every round."""
        actions = self.ended(site, now, False, measure)[1] if self._find(site)[1] else []
        self._lost.pop(site, None)
        for group, (owner, _) in list(self._owners.items()):
            if owner == site:
                del self._owners[group]
        return actions

    # ---- time ----------------------------------------------------------------------
    def due(self, now: float, measure: Measure) -> list[Action]:
        """Contests whose window closed are decided; losers kept `keep_ms` are released."""
        actions: list[Action] = []
        keep_s = self.settings.keep_ms / 1000
        for group, rnd in list(self._rounds.items()):
            if rnd.contest_until is not None and now >= rnd.contest_until:
                actions += self._decide(rnd, now, measure, Reason.DEADLINE)
            for cand in rnd.candidates.values():
                if (cand.state == Verdict.LOSE and cand.spoke and not cand.released
                        and now >= cand.ended_at + keep_s):
                    cand.released = True
                    actions.append(Release(cand.site))
            actions += self._gc(group, now)
        return actions

    def next_due(self) -> float | None:
        """The earliest time `due` has something to do (None: nothing pending)."""
        keep_s = self.settings.keep_ms / 1000
        times = [rnd.contest_until for rnd in self._rounds.values()
                 if rnd.contest_until is not None]
        times += [c.ended_at + keep_s for rnd in self._rounds.values()
                  for c in rnd.candidates.values()
                  if c.state == Verdict.LOSE and c.spoke and not c.released]
        return min(times) if times else None

    def flush(self, now: float, measure: Measure) -> list[Action]:
        """Decide every open contest now and release every kept loser (shutdown)."""
        actions: list[Action] = []
        for rnd in list(self._rounds.values()):
            if rnd.contest_until is not None:
                actions += self._decide(rnd, now, measure, Reason.DEADLINE)
            for cand in rnd.candidates.values():
                if cand.state == Verdict.LOSE and cand.spoke and not cand.released:
                    cand.released = True
                    actions.append(Release(cand.site))
        return actions

    @property
    def open_rounds(self) -> int:
        """Rounds not yet over (for status and tests)."""
        return len(self._rounds)

    # ---- decisions -------------------------------------------------------------------
    def _maybe_decide(self, rnd: _Round, now: float, measure: Measure) -> list[Action]:
        if rnd.contest_until is None:
            return []
        if all(c.ready for c in rnd.pool()):
            return self._decide(rnd, now, measure, Reason.SCORED)
        return []

    def _score(self, cand: _Candidate, rnd: _Round, with_wake: bool) -> float | None:
        if self.settings.policy == Policy.FIRST:
            return -(cand.started_at - rnd.opened_at) * 1000
        ev = cand.evidence
        if ev is None:
            return None
        if self.settings.policy == Policy.LOUDEST:
            return ev.level_dbfs
        return combined_score(ev, with_wake)

    def _decide(self, rnd: _Round, now: float, measure: Measure,
                reason: Reason) -> list[Action]:
        rnd.contest_until = None
        pool = rnd.pool()
        if not pool:
            rnd.winner = None
            return []
        for cand in pool:
            cand.evidence = measure(cand.site)
        with_wake = all(c.evidence is not None and c.evidence.wake_score is not None
                        for c in pool)
        for cand in pool:
            cand.score = self._score(cand, rnd, with_wake)
        best = max(pool, key=lambda c: (-math.inf if c.score is None else c.score,
                                        -c.started_at, c.site))
        rnd.winner = best.site
        losers = [c for c in pool if c is not best]
        for cand in losers:
            cand.state = Verdict.LOSE
        best.state = Verdict.GO
        decision = self._record(rnd, now, reason)
        actions: list[Action] = [Announce(decision)]
        actions += [Lose(c.site, decision) for c in losers]
        actions.append(Win(best.site, decision))
        if not best.active:  # its utterance ended while the contest was open
            actions += self._take(rnd, best.site, now)
        return actions

    def _swap(self, rnd: _Round, old: str, now: float) -> list[Action]:
        """The winner found no speech: the best kept (or still speaking) loser answers."""
        rnd.candidates[old].state = Verdict.LOSE
        rnd.winner = None
        options = [c for c in rnd.candidates.values()
                   if c.site != old and c.state == Verdict.LOSE
                   and (c.active or (c.spoke and not c.released))]
        if rnd.owned or not options:
            return []
        best = max(options, key=lambda c: (-math.inf if c.score is None else c.score,
                                           -c.started_at, c.site))
        best.state = Verdict.GO
        rnd.winner = best.site
        decision = self._record(rnd, now, Reason.SWAP)
        actions: list[Action] = [Announce(decision), Win(best.site, decision)]
        if not best.active:
            actions += self._take(rnd, best.site, now)
        return actions

    def _take(self, rnd: _Round, site: str, now: float) -> list[Action]:
        """The winner's utterance runs: no swap any more, kept losers are released."""
        rnd.winner, rnd.taken_at = site, now
        actions: list[Action] = []
        for cand in rnd.candidates.values():
            if cand.state == Verdict.LOSE and cand.spoke and not cand.released:
                cand.released = True
                actions.append(Release(cand.site))
        return actions

    def _refuse(self, rnd: _Round | None, group: str, site: str, session_id: str,
                now: float, reason: Reason, winner: str | None) -> list[Action]:
        """`site` loses at its start (a conversation, a command already taken)."""
        cand = _Candidate(site, session_id, now, Verdict.LOSE)
        actions: list[Action] = []
        old = rnd.candidates.get(site) if rnd is not None else None
        if old is not None and old.spoke and not old.released:
            actions.append(Release(site))  # its newer utterance is the one kept now
        if rnd is not None:
            rnd.candidates[site] = cand
            decision = self._record(rnd, now, reason)
        else:
            opened = _Round(group, now, winner=winner)
            opened.candidates[site] = cand
            decision = self._record(opened, now, reason)
            self._lost[site] = decision
        return [*actions, Announce(decision), Lose(site, decision)]

    def _close(self, rnd: _Round, now: float, winner: str | None,
               reason: Reason) -> list[Action]:
        """End a round early (a new one starts): its kept losers are released, and any
        candidate still speaking loses."""
        del self._rounds[rnd.group]
        actions: list[Action] = []
        speaking = [c for c in rnd.candidates.values() if c.active and c.site != winner]
        undecided = [c for c in speaking if c.state != Verdict.LOSE]
        for cand in undecided:
            cand.state = Verdict.LOSE
        rnd.winner = winner
        decision = self._record(rnd, now, reason) if undecided else rnd.last
        if undecided and decision is not None:
            actions.append(Announce(decision))
            actions += [Lose(c.site, decision) for c in undecided]
        for cand in speaking:
            if decision is not None:
                self._lost[cand.site] = decision
        for cand in rnd.candidates.values():
            if cand.state == Verdict.LOSE and cand.spoke and not cand.released:
                cand.released = True
                actions.append(Release(cand.site))
        return actions

    def _gc(self, group: str, now: float) -> list[Action]:
        """Drop the group's round once it is over."""
        rnd = self._rounds.get(group)
        if rnd is None or rnd.contest_until is not None:
            return []
        if rnd.taken_at is not None:
            over = now >= rnd.taken_at + self.settings.window_ms / 1000
        else:
            over = not any(c.active or (c.spoke and not c.released)
                           for c in rnd.candidates.values())
        return self._close(rnd, now, rnd.winner, Reason.LATE) if over else []

    def _record(self, rnd: _Round, now: float, reason: Reason) -> Decision:
        scored = tuple(
            Scored(c.site, c.session_id, (c.started_at - rnd.opened_at) * 1000,
                   c.score if c.state != Verdict.WAIT else None, c.evidence,
                   c.site == rnd.winner)
            for c in sorted(rnd.candidates.values(), key=lambda c: c.started_at))
        rnd.last = Decision(rnd.group, self.settings.policy, reason, rnd.winner, scored,
                            rnd.opened_at, now)
        return rnd.last

    def _find(self, site: str) -> tuple[_Round | None, _Candidate | None]:
        group = self.groups.get(site)
        rnd = self._rounds.get(group) if group is not None else None
        return rnd, (rnd.candidates.get(site) if rnd is not None else None)

    def _owner(self, group: str, now: float) -> str | None:
        held = self._owners.get(group)
        if held is None:
            return None
        if now > held[1]:
            del self._owners[group]
            return None
        return held[0]
