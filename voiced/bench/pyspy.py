"""Where a voiced process spends its CPU: py-spy's raw stacks grouped by ingest stage.

`voiced bench ingest --py-spy EXE` records voiced with py-spy (`record --format raw`,
idle threads left out) while only noise streams, then `summarize` assigns every sample to
the first stage found walking its stack from the leaf towards the root, so a sample in
`Properties.__init__` called from paho's PUBLISH decoding counts for "paho: decode
PUBLISH". `python -m voiced.bench.pyspy FILE` prints the summary of a recorded file, with
the functions that use the most CPU themselves.

py-spy is not one of voiced's dependencies: install it anywhere (a scratch venv) and pass
its path.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

STAGES: tuple[tuple[str, str], ...] = (
    # (stage, regular expression matched against "function (file)"): the leaf-most frame
    # that matches one of these decides the sample's stage
    ("webrtcvad", r"^(Vad|WebrtcVad)\.is_speech "),
    ("segmenter (endpointing)", r"^Segmenter\."),
    ("re-framing (FrameBuffer)", r"^FrameBuffer\."),
    ("format conversion (StreamConverter, resampling)",
     r"^(StreamConverter\.|StreamResampler\.|to_float |to_int16 )"),
    ("WAV parsing (parse_wav)", r"^(parse_wav|_parse_fmt|check_format) "),
    ("enqueue to the site worker (offer)", r"^SiteWorker\.offer "),
    ("ingest routing (topic parsing, route)",
     r"^(route|parse_topic|Daemon\._on_message|Daemon\._worker) "),
    ("utterance pipeline, ASR feeding, events",
     r"\(voiced/(pipeline|feeds|runs|events|asr/|intents/|transport/outputs)"),
    ("site worker: rest of _audio", r"^SiteWorker\._audio "),
    ("site worker loop (queue get, asyncio.timeout, idle checks)", r"^SiteWorker\."),
    ("status publishing (voiced/status)", r"^(Daemon\.stats|Daemon\._publish_stats) "),
    ("MQTT publish (outgoing)", r"^(MqttLink\._send|MqttLink\.publish) "),
    ("voiced receive loop (MqttLink._receive)", r"^MqttLink\._receive "),
    ("aiomqtt: message iterator (a task + asyncio.wait per message)",
     r"^MessagesIterator\.__anext__ "),
    ("aiomqtt: Message object + queue put",
     r"^(Message\.|Topic\.|Client\._on_message \(aiomqtt)"),
    ("paho: topic matching + callback dispatch",
     r"^(Client\._handle_on_message|MQTTMatcher\.iter_match) "),
    ("paho: decode PUBLISH (MQTTMessage, MQTT 5 Properties)",
     r"^(Client\._handle_publish|decode_publish|MQTTMessage\.|Properties\.) "),
    ("paho: socket read + packet framing",
     r"^(Client\._packet_read|Client\._sock_recv|Client\.loop_read|Client\._packet_handle) "),
    ("event loop: epoll wait", r"^EpollSelector\.select "),
)
FALLBACKS: tuple[tuple[str, str], ...] = (
    # used only when no frame of the stack matches a stage above
    ("aiomqtt: other", r"\(aiomqtt/"),
    ("paho: other", r"\(paho/"),
    ("event loop: scheduling (callbacks, timers, task steps)", r"\(asyncio/"),
)
_COMPILED = [[(name, re.compile(pattern)) for name, pattern in table]
             for table in (STAGES, FALLBACKS)]
_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True, slots=True)
class Profile:
    """A summarized py-spy recording."""

    samples: int
    """Non-idle samples (py-spy's rate times the seconds voiced was busy)."""
    stages: list[tuple[str, float]]
    """(stage, percent of samples), largest first."""
    functions: list[tuple[str, float]]
    """(function (file), percent of samples spent in it itself), largest first."""


def _frame(raw: str) -> str:
    """`Name (path/file.py:123)` → `Name (path/file.py)`, with site-packages paths cut."""
    return _LINE.sub(")", raw.replace("site-packages/", ""))


def stage_of(frames: list[str]) -> str:
    """The stage of one sample: the leaf-most frame that names one."""
    for table in _COMPILED:
        for frame in reversed(frames):
            for name, pattern in table:
                if pattern.search(frame):
                    return name
    return "other"


def summarize(path: Path, top: int = 25) -> Profile:
    """Group a py-spy `--format raw` file (collapsed stacks) by stage."""
    stages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        stages[stage_of(frames)] += n
        functions[frames[-1]] += n

    def pct(counter: Counter[str], limit: int | None) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(limit)]

    if total == 0:
        return Profile(0, [], [])
    return Profile(total, pct(stages, None), pct(functions, top))


def main(argv: list[str]) -> int:
    """Print the summary of the recorded files named in `argv`."""
    for name in argv:
        profile = summarize(Path(name))
        print(f"{name}: {profile.samples} samples")
        for stage, share in profile.stages:
            print(f"  {share:5.1f}%  {stage}")
        print("  functions by own time:")
        for func, share in profile.functions:
            print(f"  {share:5.1f}%  {func}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
