"""pocketsphinx in worker processes.

pocketsphinx's Python binding keeps the GIL while it decodes, so decoders on threads of
the daemon's process share one core with each other and with the event loop. With many
satellites speaking at once that core runs out. `PooledTranscriber` runs the decoders in
a few worker processes instead (one per core by default); each utterance's stream stays
on one worker, and the calls are plain request/reply messages over a pipe.

A worker that dies (the OOM killer, a crash) or stops answering is replaced at once by a
new process with the current grammar. The utterances it was decoding fail with
`AsrError("asr_worker_died")` (their audio lived in the dead process); the next ones work.

Each site's cepstral mean estimate lives here, in the parent: a stream of a site takes it
to whichever worker decodes it (with its first audio) and brings the adapted one back
with the transcript, so a site adapts over all its utterances and never to another
site's audio (voiced.asr.pocketsphinx).

A reload is two-phase: every worker first builds the new grammar next to the one it uses
(`prepare`), and only when all have it do they switch (`commit`). If any build fails or a
worker dies on the way, the others drop what they built and `reload` raises
`AsrError("asr_reload_failed")`: every worker keeps the old grammar.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

from voiced.asr.base import AsrIntents, AsrStream, Completion, Transcriber
from voiced.asr.worker_handle import Worker
from voiced.asr.worker_process import to_portable
from voiced.errors import AsrError
from voiced.models import Transcript

if TYPE_CHECKING:
    from voiced.config import AsrConfig

log = logging.getLogger(__name__)

class _RemoteStream(AsrStream):
    def __init__(self, owner: PooledTranscriber, worker: Worker, key: int,
                 site: str | None = None) -> None:
        self._owner, self._worker, self._key = owner, worker, key
        self._site = site
        self._cmn = owner.sites.get(site) if site is not None else None
        """The site's estimate, sent with the first audio (then None)."""
        self._generation: int | None = None
        self._partial: str | None = None
        self._completion: Completion | None = None
        self._hurried = False
        self._judged_hurried = False
        """Whether the last feed went hurried: its judgement covers all the audio."""
        self._open = True

    @property
    def completion_known(self) -> bool:
        """The last feed brought back the judgement of everything (no round trip)."""
        return self._judged_hurried or self._generation is None

    def _call(self, op: str, arg: Any = None) -> Any:
        # the first answer pins the stream to the process that holds its audio; once that
        # process is gone, so is the stream
        try:
            value, self._generation = self._worker.call(op, self._key, arg, self._generation,
                                                        self._is_hurried)
        except AsrError as exc:
            if exc.code == "asr_worker_died":
                self._generation = -1
            raise
        return value

    def feed(self, pcm: bytes) -> None:
        hurried = self._hurried
        self._partial, self._completion = self._call("feed", (self._site, self._cmn, pcm,
                                                              hurried))
        self._cmn = None
        self._judged_hurried = hurried

    def partial(self) -> str | None:
        return self._partial

    def completion(self) -> Completion | None:
        """The judgement the last feed brought back (None: nothing fed yet); after
        `hurry`, an empty feed first when the last one was not hurried (the worker then
        decodes what its floor held)."""
        if self._hurried and not self._judged_hurried and self._generation is not None:
            self.feed(b"")
        return self._completion

    def _is_hurried(self) -> bool:
        return self._hurried

    def hurry(self) -> None:
        """Its feeds go first from now on, the one waiting already included."""
        self._hurried = True
        self._worker.wake()

    def finish(self) -> Transcript:
        try:
            result: Transcript
            result, cmn = self._call("finish", (self._site, self._cmn))
            if self._site is not None and cmn:
                self._owner.adapted(self._site, cmn)
            return result
        finally:
            self._done()

    def close(self) -> None:
        if not self._open:
            return
        try:
            self._call("cancel")
        except AsrError as exc:
            if exc.code != "asr_worker_died":
                raise  # a dead worker took the stream with it: nothing left to cancel
        finally:
            self._done()

    def _done(self) -> None:
        if self._open:
            self._open = False
            self._owner._release(self._worker)


class PooledTranscriber(Transcriber):
    """The pocketsphinx transcriber spread over worker processes."""

    name = "pocketsphinx"

    def __init__(self, config: AsrConfig, intents: AsrIntents | None,
                 processes: int) -> None:
        self.config = config
        self._intents = intents
        self._processes = max(1, processes)
        self._workers: list[Worker] = []
        self._keys = itertools.count(1)
        self._lock = threading.Lock()
        self.sites: dict[str, str] = {}
        """Each site's cepstral mean, least recently heard first (at most MAX_SITES)."""
        self._reload_lock = threading.Lock()

    @property
    def supports_streaming(self) -> bool:
        """Audio is decoded while the person speaks."""
        return True

    @property
    def restarts(self) -> int:
        """Worker processes replaced since start-up (died, hung)."""
        return sum(w.restarts for w in self._workers)

    def load(self) -> None:
        """Start the workers and wait until each has loaded its decoder."""
        portable = to_portable(self._intents)
        self._workers = [Worker(i, self.config, portable) for i in range(self._processes)]
        for worker in self._workers:
            worker.ready()
        log.info("pocketsphinx running in %d worker processes", len(self._workers))

    def _pick(self) -> Worker:
        with self._lock:
            if not self._workers:
                raise AsrError("asr_closed", "speech recognition is not running (closed, or "
                                             "not loaded yet)")
            worker = min(self._workers, key=lambda w: w.active)
            worker.active += 1
            return worker

    def _release(self, worker: Worker) -> None:
        with self._lock:
            worker.active -= 1

    def start_stream(self) -> AsrStream:
        """A stream pinned to the least busy worker."""
        return _RemoteStream(self, self._pick(), next(self._keys))

    def start_stream_for(self, site: str) -> AsrStream:
        """A stream of `site`'s audio, pinned to the least busy worker."""
        return _RemoteStream(self, self._pick(), next(self._keys), site)

    def adapted(self, site: str, cmn: str) -> None:
        """Keep `site`'s new cepstral mean estimate."""
        from voiced.asr.pocketsphinx import MAX_SITES

        with self._lock:
            self.sites.pop(site, None)
            self.sites[site] = cmn
            while len(self.sites) > MAX_SITES:
                del self.sites[next(iter(self.sites))]

    def transcribe(self, pcm: bytes) -> Transcript:
        """Decode a whole utterance on a worker."""
        worker = self._pick()
        try:
            result: Transcript = worker.call("transcribe", 0, pcm)[0]
            return result
        finally:
            self._release(worker)

    def reload(self, intents: AsrIntents) -> None:
        """Switch every worker to the grammar of `intents`, or none of them.

        Raises AsrError `asr_reload_failed` (every worker keeps the old grammar) when a
        worker cannot build the new one or dies while building it.
        """
        staged = to_portable(intents)
        with self._reload_lock:
            if not self._workers:
                raise AsrError("asr_reload_failed", "speech recognition is not running "
                                                    "(closed, or not loaded yet)")
            prepared: list[Worker] = []
            try:
                for worker in self._workers:
                    worker.call("prepare", 0, staged)
                    prepared.append(worker)
            except AsrError as exc:
                for worker in prepared:
                    try:
                        worker.call("abort")
                    except AsrError:
                        pass  # a dead worker comes back with the old grammar anyway
                raise AsrError("asr_reload_failed",
                               f"the new grammar was not loaded, the old one stays: "
                               f"{exc.message}") from exc
            for worker in self._workers:
                # from here on the new grammar is the pool's: a worker replaced now (or
                # later) starts with it
                worker.intents = staged
                try:
                    worker.call("commit")
                except AsrError as exc:
                    log.warning("%s: %s (it restarts with the new grammar)", worker.name,
                                exc.message)
            self._intents = intents

    def close(self) -> None:
        """Stop the workers."""
        for worker in self._workers:
            worker.stop()
        self._workers = []
