"""pocketsphinx in worker processes: same transcripts as in-process; a reload changes what
every worker hears (or, when it fails, nothing); a worker killed for real mid-utterance
fails that utterance cleanly, is replaced, and the next utterance works."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from voiced.asr.base import AsrIntents
from voiced.asr.pocketsphinx import PocketsphinxTranscriber
from voiced.asr.service import asr_intents
from voiced.asr.worker_handle import Worker
from voiced.asr.workers import PooledTranscriber
from voiced.audio.wav import read_wav_file
from voiced.config import AsrConfig
from voiced.errors import AsrError
from voiced.intents.recognizer import IntentRecognizer
from voiced.models import Transcript

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CHUNK = 3200
LOCK = "lock the front door"
WEATHER = "the weather was lovely yesterday afternoon"


@pytest.fixture(scope="module")
def intents() -> IntentRecognizer:
    return IntentRecognizer.load([REPO / "config" / "intents"])


@pytest.fixture
def pool(intents: IntentRecognizer) -> Iterator[PooledTranscriber]:
    pool = PooledTranscriber(AsrConfig(), asr_intents(intents), processes=2)
    pool.load()
    try:
        yield pool
    finally:
        pool.close()


def wav(name: str) -> bytes:
    return read_wav_file(FIXTURES / name)


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    """Wait (bounded) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.002)


def on_every_worker(pool: PooledTranscriber, pcm: bytes) -> list[Transcript]:
    """Decode `pcm` once on each worker (streams open together land on distinct ones)."""
    streams = [pool.start_stream() for _ in pool._workers]
    assert {id(s._worker) for s in streams} == {id(w) for w in pool._workers}  # type: ignore[attr-defined]
    for stream in streams:
        for i in range(0, len(pcm), CHUNK):
            stream.feed(pcm[i:i + CHUNK])
    return [s.finish() for s in streams]


def heard(pool: PooledTranscriber, name: str) -> list[str]:
    """What each worker makes of a fixture (text, or "" when not confident)."""
    return [t.text if t.confidence >= 0.5 else "" for t in on_every_worker(pool, wav(name))]


def new_intents(tmp_path: Path, sentences: list[str]) -> AsrIntents:
    path = tmp_path / "new.yaml"
    path.write_text(yaml.safe_dump({"language": "en", "intents": {
        "Chatter": {"data": [{"sentences": sentences}]}}}))
    return asr_intents(IntentRecognizer.load([path]))


def test_pool_matches_in_process(intents: IntentRecognizer, pool: PooledTranscriber) -> None:
    entries = yaml.safe_load((FIXTURES / "commands.yaml").read_text())["commands"][:6]
    local = PocketsphinxTranscriber(AsrConfig(), asr_intents(intents))
    local.load()
    for entry in entries:
        pcm = wav(entry["file"])
        # each side warms its cepstral mean the same way: whole, then streamed
        want = local.transcribe(pcm)
        stream = pool.start_stream()
        for i in range(0, len(pcm), CHUNK):
            stream.feed(pcm[i:i + CHUNK])
        got = stream.finish()
        assert got.text == want.text, entry["file"]
        assert intents.recognize(got.text, {"speaker": "alice"}).name == entry["intent"]
    abandoned = pool.start_stream()
    abandoned.feed(bytes(CHUNK))
    abandoned.close()
    assert all(w.active == 0 for w in pool._workers)


def test_reload_changes_what_every_worker_hears(pool: PooledTranscriber,
                                                tmp_path: Path) -> None:
    assert heard(pool, "commands/lock_front.wav") == [LOCK, LOCK]
    assert WEATHER not in heard(pool, "out_of_grammar/weather.wav")

    pool.reload(new_intents(tmp_path, [WEATHER, "lock the garage door"]))
    # a sentence only in the new intents is heard; one only in the old ones no longer is
    assert heard(pool, "out_of_grammar/weather.wav") == [WEATHER, WEATHER]
    assert LOCK not in heard(pool, "commands/lock_front.wav")
    assert pool.restarts == 0


def test_a_grammar_that_cannot_be_built_keeps_the_old_one(pool: PooledTranscriber,
                                                          tmp_path: Path) -> None:
    with pytest.raises(AsrError) as info:
        pool.reload(new_intents(tmp_path, ["zorblax quuxify"]))  # no word in the dictionary
    assert info.value.code == "asr_reload_failed"
    assert "grammar_empty" in info.value.message
    assert heard(pool, "commands/lock_front.wav") == [LOCK, LOCK]


def test_a_worker_killed_during_reload_keeps_the_old_grammar(pool: PooledTranscriber,
                                                             tmp_path: Path) -> None:
    """The first worker has built the new grammar when the second is SIGKILLed while
    building it: the reload fails, the first drops what it built, the second comes back
    with the old grammar."""
    bigger = new_intents(tmp_path, [WEATHER, "lock the garage door"])
    first, second = pool._workers
    failure: list[BaseException] = []

    def reload() -> None:
        try:
            pool.reload(bigger)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=reload)
    thread.start()
    wait_for(lambda: second.current_op == "prepare", 120)
    os.kill(second.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
    thread.join(60)
    assert not thread.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], AsrError)
    assert failure[0].code == "asr_reload_failed" and "died" in failure[0].message
    assert (first.restarts, second.restarts) == (0, 1)
    assert heard(pool, "commands/lock_front.wav") == [LOCK, LOCK]
    assert WEATHER not in heard(pool, "out_of_grammar/weather.wav")


def test_a_killed_worker_fails_its_utterances_and_is_replaced(pool: PooledTranscriber) -> None:
    victim: Worker = pool._workers[0]
    pid = victim.process.pid
    assert pid is not None
    waiting = pool.start_stream()   # an utterance on the victim, between two feeds
    busy = pool.start_stream()      # the other worker
    assert waiting._worker is not busy._worker  # type: ignore[attr-defined]
    if waiting._worker is not victim:  # type: ignore[attr-defined]
        waiting, busy = busy, waiting
    waiting.feed(wav("commands/lock_front.wav")[:CHUNK * 4])
    mid = pool.start_stream()       # lands on the victim too (now the least busy again)
    assert mid._worker is victim  # type: ignore[attr-defined]
    long_audio = b"".join(wav(f"commands/{n}.wav") for n in ("lock_front", "music") * 8)

    errors: list[BaseException] = []

    def feed() -> None:
        try:
            mid.feed(long_audio)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=feed)
    thread.start()
    wait_for(lambda: victim.current_op == "feed", 30)
    os.kill(pid, signal.SIGKILL)   # mid-utterance, while it decodes
    thread.join(30)
    assert not thread.is_alive()   # failed, did not hang
    assert len(errors) == 1 and isinstance(errors[0], AsrError)
    assert errors[0].code == "asr_worker_died"
    with pytest.raises(AsrError, match="asr_worker_died"):
        mid.finish()
    # the other utterance on the dead process fails too, rather than going on in the
    # new process from the middle of its audio
    with pytest.raises(AsrError, match="asr_worker_died"):
        waiting.feed(bytes(CHUNK))
    waiting.close()
    busy.close()
    assert victim.restarts == 1 and victim.process.pid != pid
    assert all(w.active == 0 for w in pool._workers)

    # a worker that dies while idle is replaced on its next request
    idle = pool._workers[1]
    os.kill(idle.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
    idle.process.join(10)
    assert heard(pool, "commands/lock_front.wav") == [LOCK, LOCK]
    assert pool.restarts == 2
    assert pool.transcribe(wav("commands/lock_front.wav")).text == LOCK


def test_a_hung_worker_is_replaced(pool: PooledTranscriber,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that stops answering (SIGSTOP: alive, but hung) fails the request after
    the call timeout instead of blocking it forever, and is replaced."""
    import voiced.asr.worker_handle as workers

    monkeypatch.setattr(workers, "CALL_TIMEOUT_S", 1.0)
    stuck = pool._workers[0]
    pid = stuck.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        stream = pool.start_stream()
        assert stream._worker is stuck  # type: ignore[attr-defined]
        with pytest.raises(AsrError, match="asr_worker_died"):
            stream.feed(bytes(CHUNK))
        stream.close()
    finally:
        if stuck.process.pid == pid:
            os.kill(pid, signal.SIGCONT)
    assert stuck.restarts == 1 and stuck.process.pid != pid
    assert heard(pool, "commands/lock_front.wav") == [LOCK, LOCK]


def test_a_sites_cepstral_mean_goes_with_it_from_worker_to_worker(
        pool: PooledTranscriber, intents: IntentRecognizer) -> None:
    """Site a's utterances land on both workers, between other sites' utterances; its
    estimate and its transcripts are those of site a decoded alone in-process."""
    site_a = [wav("commands/lock_front.wav"), wav("commands/timer_10m.wav"),
              wav("commands/on_kitchen.wav")]
    other = wav("out_of_grammar/dog.wav")
    reference = PocketsphinxTranscriber(AsrConfig(), asr_intents(intents))
    reference.load()
    expected = []
    for pcm in site_a:
        stream = reference.start_stream_for("a")
        stream.feed(pcm)
        expected.append(stream.finish())
    got, workers = [], set()
    for n, pcm in enumerate(site_a):
        # every other time site b keeps the first worker busy, so a changes worker
        busy = pool.start_stream_for("b") if n % 2 == 0 else None
        if busy is not None:
            busy.feed(other)
        stream = pool.start_stream_for("a")
        workers.add(id(stream._worker))  # type: ignore[attr-defined]
        for i in range(0, len(pcm), CHUNK):
            stream.feed(pcm[i:i + CHUNK])
        got.append(stream.finish())
        if busy is not None:
            busy.finish()
    assert len(workers) == 2
    assert [(t.text, t.confidence) for t in got] == [(t.text, t.confidence) for t in expected]
    assert pool.sites["a"] == reference.sites["a"]
    assert pool.sites["b"] != pool.sites["a"]


def test_a_hurried_stream_is_fed_before_streams_still_speaking(
        intents: IntentRecognizer) -> None:
    """At its endpoint check a stream is hurried: its feeds go before those of utterances
    still being spoken, the one already waiting included."""
    pool = PooledTranscriber(AsrConfig(), asr_intents(intents), processes=1)
    pool.load()
    try:
        worker = pool._workers[0]
        speaking, ending = pool.start_stream(), pool.start_stream()
        speaking.feed(bytes(CHUNK))
        ending.feed(bytes(CHUNK))
        with worker._cond:
            worker._busy = True  # the process is busy with a third site's audio
        served: list[str] = []
        audio = wav("commands/lock_front.wav") + bytes(6400)

        def feed(stream: object, name: str) -> None:
            stream.feed(audio)  # type: ignore[attr-defined]
            served.append(name)

        first = threading.Thread(target=feed, args=(speaking, "speaking"))
        first.start()
        wait_for(lambda: worker.waiting == 1, 10)
        second = threading.Thread(target=feed, args=(ending, "ending"))
        second.start()
        wait_for(lambda: worker.waiting == 2, 10)
        ending.hurry()  # its feed waits already: it goes first all the same
        with worker._cond:
            worker._busy = False
            worker._cond.notify_all()
        first.join(30)
        second.join(30)
        assert served == ["ending", "speaking"]
        assert str(ending.completion()) == "complete"  # "lock the front door"
        assert str(speaking.completion()) == "complete"
        speaking.close()
        ending.close()
    finally:
        pool.close()


def test_a_short_command_is_judged_on_its_words_when_hurried(pool: PooledTranscriber) -> None:
    """The noise floor holds the first second of an utterance; at the endpoint check a
    hurried stream decodes what was held, so a command shorter than that is judged on its
    words (a whole command), not on none (which waits as long as the start of one)."""
    speech = np.frombuffer(wav("commands/day.wav"), dtype="<i2")  # "what day is it"
    loud = np.flatnonzero(np.abs(speech) > 1000)
    command = speech[max(0, loud[0] - 1200):loud[-1] + 1600].tobytes()
    assert len(command) < 32000  # the floor's window is 1 s: all of it is held
    stream = pool.start_stream()
    stream.feed(command)
    # all of it held back: no words yet, the start of any command
    assert str(stream.completion()) == "prefix"
    stream.hurry()
    assert not stream.completion_known
    assert str(stream.completion()) == "complete"
    assert stream.completion_known
    stream.close()


def test_stopped_workers_refuse_requests_instead_of_waiting(intents: IntentRecognizer,
                                                            tmp_path: Path) -> None:
    """voiced stopping while a reload or an utterance is still going (the intent-file
    watcher's reload runs on a thread the shutdown cannot cancel): requests that reach a
    stopped worker fail at once with `asr_closed`. They used to wait for a process that
    was gone, and the shutdown waited for them forever."""
    pool = PooledTranscriber(AsrConfig(), asr_intents(intents), processes=1)
    pool.load()
    worker = pool._workers[0]
    stream = pool.start_stream()
    stream.feed(wav("commands/lock_front.wav")[:CHUNK])
    pool.close()
    results: dict[str, BaseException | None] = {}

    def attempt(name: str, request: Callable[[], object]) -> None:
        try:
            request()
            results[name] = None
        except BaseException as exc:  # recorded for the assertions
            results[name] = exc

    threads = [threading.Thread(target=attempt, args=args, daemon=True) for args in (
        ("commit", lambda: worker.call("commit")),  # the reload's loop holds the worker
        ("feed", lambda: stream.feed(wav("commands/lock_front.wav")[CHUNK:2 * CHUNK])),
        ("finish", stream.finish),
    )]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
        assert not thread.is_alive(), "a request to a stopped worker is still waiting"
    for name in ("commit", "feed", "finish"):
        failure = results[name]
        assert isinstance(failure, AsrError) and failure.code == "asr_closed", (name, failure)
    # the pool itself says so too, instead of a bare ValueError or a silent no-op
    with pytest.raises(AsrError) as info:
        pool.transcribe(wav("commands/lock_front.wav"))
    assert info.value.code == "asr_closed"
    with pytest.raises(AsrError) as info:
        pool.reload(new_intents(tmp_path, ["hello there"]))
    assert info.value.code == "asr_reload_failed" and "not running" in info.value.message


def test_a_request_in_flight_at_stop_fails_without_a_new_process(
        intents: IntentRecognizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """voiced stopping while a worker is hung mid-request: `stop()` kills the process
    after its grace; the request fails with `asr_closed` and no replacement process is
    started after shutdown (its error path used to spawn one)."""
    import voiced.asr.worker_handle as workers

    monkeypatch.setattr(workers, "STOP_GRACE_S", 0.5)
    pool = PooledTranscriber(AsrConfig(), asr_intents(intents), processes=1)
    pool.load()
    worker = pool._workers[0]
    pid = worker.process.pid
    assert pid is not None
    stream = pool.start_stream()
    os.kill(pid, signal.SIGSTOP)  # hung: the feed below waits for its answer
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            stream.feed(wav("commands/lock_front.wav")[:CHUNK])
        except BaseException as exc:  # recorded for the assertions
            failure.append(exc)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while worker.current_op != "feed":  # the request is in flight
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.01)
    try:
        pool.close()
    finally:
        if worker.process.pid == pid and worker.process.is_alive():
            os.kill(pid, signal.SIGCONT)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], AsrError)
    assert failure[0].code == "asr_closed", failure[0]
    assert worker.restarts == 0 and worker.process.pid == pid
    assert not worker.process.is_alive()
