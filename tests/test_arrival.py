"""The pure parts of overload handling: the real-time meter and the shedding rule."""

from __future__ import annotations

from voiced.arrival import ArrivalMeter, shed_stale
from voiced.status import BROKER_DROPPED, Health


def _stream(meter: ArrivalMeter, seconds: float, every: float, rate: float,
            start: float = 0.0) -> list[bool | None]:
    """Messages of `every` seconds of audio arriving `every / rate` apart."""
    changes, t = [], start
    while t < start + seconds:
        changes.append(meter.arrived(every, t))
        t += every / rate
    return changes


def test_real_time_is_not_behind_and_slow_is() -> None:
    meter = ArrivalMeter()
    assert set(_stream(meter, 12, 0.02, 1.0)) == {None}
    assert not meter.behind and abs(meter.realtime - 1.0) < 0.01
    # a third of the frames go missing: 67 % of real time
    changes = _stream(meter, 12, 0.02, 2 / 3, start=12)
    assert changes.count(True) == 1 and meter.behind and meter.times_behind == 1
    assert 0.6 < meter.realtime < 0.72
    assert _stream(meter, 12, 0.02, 1.0, start=24).count(False) == 1
    assert not meter.behind


def test_pauses_are_not_loss() -> None:
    """A satellite that streams only after a wake word: bursts with long pauses."""
    meter = ArrivalMeter()
    for burst in range(6):
        _stream(meter, 3, 0.064, 1.0, start=burst * 10)
    assert not meter.behind and meter.times_behind == 0


def test_shedding_keeps_controls_and_the_newest_audio() -> None:
    items = ["a1", "a2", "C1", "a3", "a4", "a5", "C2", "a6"]
    kept, dropped = shed_stale(items, lambda i: i.startswith("a"), keep=2)
    assert kept == ["C1", "a5", "C2", "a6"] and dropped == 4
    assert shed_stale(items, lambda i: i.startswith("a"), keep=0) == (["C1", "C2"], 6)
    # audio after a session opens may be a command: only what comes before is stale
    kept, dropped = shed_stale(items, lambda i: i.startswith("a"), 1, lambda i: i == "C2")
    assert kept == ["C1", "a5", "C2", "a6"] and dropped == 4
    kept, dropped = shed_stale(items, lambda i: i.startswith("a"), 0, lambda i: i == "C1")
    assert kept == items[2:] and dropped == 2


def test_broker_drops_are_counted_from_start() -> None:
    health = Health()
    health.on_broker_message(BROKER_DROPPED, b"120")   # before voiced started: not ours
    health.on_broker_message(BROKER_DROPPED, b"120")
    assert health.broker_dropped == 0
    health.on_broker_message(BROKER_DROPPED, b"175")
    health.on_broker_message("$SYS/other", b"9999")
    health.on_broker_message(BROKER_DROPPED, b"not a number")
    assert health.broker_dropped == 55 and health.as_dict()["broker_dropped"] == 55


def test_the_audio_budget_takes_a_burst_then_ten_times_real_time() -> None:
    from voiced.arrival import AudioBudget

    budget = AudioBudget(burst_s=60, rate=10)
    # a buffer flushed after a gap: 60 s of audio at once is taken, the next second not
    assert all(budget.take(2.0, 0.0) for _ in range(30))
    assert not budget.take(1.0, 0.0)
    # then ten seconds of audio per wall second
    assert budget.take(5.0, 0.5) and not budget.take(0.5, 0.5)
    assert budget.take(10.0, 1.5) and not budget.take(0.1, 1.5)
    # a long quiet spell refills it to the burst, never beyond
    assert budget.take(60.0, 100.0) and not budget.take(0.1, 100.0)
