"""What runs inside a pocketsphinx worker process (voiced.asr.workers): one transcriber,
many streams, requests from the parent answered in order over a pipe."""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrIntents, AsrStream

if TYPE_CHECKING:
    from voiced.asr.pocketsphinx import PocketsphinxTranscriber
    from voiced.config import AsrConfig

Portable = tuple[str, dict[str, Any], dict[str, frozenset[str]]] | None
"""`AsrIntents` as it travels to a worker process: (language, document, vocabulary), the
hassil intents left behind (the worker rebuilds them from the document). None: no
intents, or none loaded from files."""


def to_portable(intents: AsrIntents | None) -> Portable:
    """`intents` as they travel to a worker process."""
    if intents is None or intents.document is None:
        return None
    return intents.language, intents.document, intents.vocabulary


def _transcriber(config: AsrConfig, portable: Portable) -> PocketsphinxTranscriber:
    """A loaded transcriber for the intents sent over (None: no intents)."""
    from voiced.asr.pocketsphinx import PocketsphinxTranscriber

    intents = None
    if portable is not None:
        from hassil import Intents

        language, document, vocabulary = portable
        intents = AsrIntents(language, Intents.from_dict(dict(document)), document, vocabulary)
    transcriber = PocketsphinxTranscriber(config, intents)
    transcriber.load()
    return transcriber


def _open(transcriber: PocketsphinxTranscriber, site: str | None,
          cmn: str | None) -> AsrStream:
    """A stream for `site` starting from the parent's estimate `cmn` (None: this
    process's own)."""
    if site is None:
        return transcriber.start_stream()
    if cmn is not None:
        transcriber.set_site_cmn(site, cmn)
    return transcriber.start_stream_for(site)


def serve(conn: Connection, config: AsrConfig, portable: Portable) -> None:
    """A worker: one transcriber, many streams, requests answered in order."""
    try:
        transcriber = _transcriber(config, portable)
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((True, os.getpid()))
    streams: dict[int, AsrStream] = {}
    staged: PocketsphinxTranscriber | None = None
    try:
        while True:
            try:
                op, key, arg = conn.recv()
            except (EOFError, OSError):
                return
            try:
                result: Any = None
                if op == "feed":
                    site, cmn, pcm, hurried = arg
                    stream = streams.get(key)
                    if stream is None:
                        stream = streams[key] = _open(transcriber, site, cmn)
                    if hurried:
                        stream.hurry()
                    stream.feed(pcm)
                    # the judgement goes back with every feed: at the silence it is known
                    result = stream.partial(), stream.completion()
                elif op == "finish":
                    site, cmn = arg
                    stream = streams.pop(key, None) or _open(transcriber, site, cmn)
                    result = stream.finish(), None if site is None else transcriber.site_cmn(site)
                elif op == "cancel":
                    stream = streams.pop(key, None)
                    if stream is not None:
                        stream.finish()
                elif op == "transcribe":
                    result = transcriber.transcribe(arg)
                elif op == "prepare":
                    staged = None
                    staged = _transcriber(config, arg)
                elif op == "commit" and staged is not None:
                    # streams already running finish on the old decoders; with nothing staged
                    # this process was started with the committed grammar already
                    staged.cmn, staged.sites = transcriber.cmn, transcriber.sites
                    transcriber, staged = staged, None
                elif op == "abort":
                    staged = None
                elif op == "stop":
                    conn.send((True, None))
                    return
                conn.send((True, result))
            except Exception as exc:
                conn.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        for held in (transcriber, staged):
            if held is not None:
                held.close()
