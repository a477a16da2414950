"""Completion of free text against the intents, for backends without a grammar of their
own (Whisper's partial transcripts; docs/endpoint.md)."""

from __future__ import annotations

import logging

from hassil import Intents

from voiced.asr.base import Completion
from voiced.asr.grammar import compile_grammar

_LOGGER = logging.getLogger(__name__)
_GRAMMAR_LOG = logging.getLogger("voiced.asr.grammar")


class TextJudge:
    """Completion of free text, for backends without a grammar of their own (Whisper).

    The intents are compiled into a grammar with no dictionary (every word is known), so a
    transcript in number words gets the same judgement as in pocketsphinx's grammar mode.
    Text the grammar cannot spell (digits, "50%", a wildcard's value) that hassil matches
    as a whole is `CONTINUABLE`: a command, but whether it can go on is unknown.
    """

    def __init__(self, intents: Intents) -> None:
        self._intents = intents
        level = _GRAMMAR_LOG.level
        _GRAMMAR_LOG.setLevel(logging.ERROR)  # the backend's own load reports dropped words
        try:
            self._grammar = compile_grammar(intents)
        finally:
            _GRAMMAR_LOG.setLevel(level)

    def __call__(self, text: str) -> Completion:
        """Where `text` stands (see `Grammar.completion`)."""
        found = self._grammar.completion(text)
        if found != Completion.NONE or not text.strip():
            return found
        from hassil import recognize

        try:
            matched = recognize(text, self._intents) is not None
        except Exception:  # a matcher failure on odd text only means "cannot tell"
            _LOGGER.debug("hassil failed on %r", text, exc_info=True)
            matched = False
        return Completion.CONTINUABLE if matched else Completion.NONE
