"""Site ids and the site registry: which satellites voiced is serving right now.

A site id arrives from the LAN (a topic segment of `hermes/audioServer/<site>/audioFrame`
or `voiced/audio/<site>/...`, or a Hermes payload's `siteId`) and later goes back out in
topic names (`voiced/events/<site>`, `hermes/audioServer/<site>/playBytes/...`) and in
JSON. So it is checked where it enters (`check_site_id`): 1 to `SITE_ID_MAX` characters
from `ID_CHARS`, which are safe in any MQTT topic (no `/ # +`, no control characters, no
surrogates) and in a log line. Session ids follow the same rule with their own length.

`SiteRegistry` owns one `SiteWorker` per site; its task (`site-<id>`) runs under the
daemon's supervisor. A site exists only once a valid message for it arrived (ingest
validates first), their number is capped (`sites.max`), and a site that has had no
message for `sites.idle_expiry_s` and has nothing open is stopped, so a stream of
one-off site names costs nothing lasting. Limits are listed in docs/ingest.md.

A site can also be *claimed* (`claim`): a browser tab streaming over `/api/stream` owns
its site for as long as its websocket is open; MQTT messages for a claimed site are
refused (`site_in_use`) so two sources never mix in one VAD. Observers (`observers`)
hear every site that starts and stops (the live event stream shows them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import string
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from voiced.errors import TransportError

if TYPE_CHECKING:
    from voiced.config import SiteMode, SitesConfig
    from voiced.sessions import SiteWorker
    from voiced.status import Health
    from voiced.transport.native import PcmFormat

log = logging.getLogger(__name__)

IDLE_CHECK_S = 0.25
"""How often a site with an open session or speech in progress checks its timeouts."""
FORMATS_KEPT = 4096
"""Native satellites' stated PCM formats remembered (the newest; a few bytes each)."""
SITE_ID_MAX = 64
"""Longest site id (characters)."""
SESSION_ID_MAX = 128
"""Longest session id (characters); UUIDs are 36."""
ID_CHARS = frozenset(string.ascii_letters + string.digits + "_-.:@")
"""Characters allowed in site and session ids: ASCII letters, digits and `_-.:@`."""
ID_CHARS_TEXT = "A-Z a-z 0-9 _ - . : @ (not dots alone)"
_ID_PATTERN = re.compile(r"(?!\.+\Z)[A-Za-z0-9_\-.:@]+", re.ASCII)
"""ID_CHARS, and not dots alone: "." and ".." would be path segments in a handler's URL."""
REPR_MAX = 40
"""Characters of an offending value quoted in an error message."""


def safe_repr(value: object, limit: int = REPR_MAX) -> str:
    """An ASCII-only, escaped, truncated repr of a value from the network, for messages
    and logs (a lone surrogate, a control character or 70,000 characters stay harmless)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!a}... ({len(value)} characters)"
    if isinstance(value, list | dict):
        return f"<a JSON {'array' if isinstance(value, list) else 'object'} of {len(value)}>"
    text = ascii(value)
    return text if len(text) <= limit + 2 else f"{text[:limit]}..."


def safe_text(text: str, limit: int = 120) -> str:
    """`text` itself when it is short printable ASCII (a normal topic), else `safe_repr`."""
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text
    return safe_repr(text, limit)


def is_valid_id(value: object, max_len: int) -> bool:
    """True for a str of 1 to `max_len` characters, all in `ID_CHARS`, not dots alone."""
    # a regex, not a loop over characters: this runs for every audio message
    return (isinstance(value, str) and 0 < len(value) <= max_len
            and _ID_PATTERN.fullmatch(value) is not None)


def check_site_id(value: object, where: str) -> str:
    """`value` when it is a valid site id, else TransportError("site_id_invalid").

    `where` (a topic) is quoted safely; the offending value only as `safe_repr`.
    """
    if is_valid_id(value, SITE_ID_MAX):
        assert isinstance(value, str)
        return value
    what = (f"siteId {safe_repr(value)}" if isinstance(value, str)
            else f"siteId of type {type(value).__name__}")
    raise TransportError(
        "site_id_invalid",
        f"{safe_text(where)}: {what} is not a valid site id; expected 1 to {SITE_ID_MAX} "
        f"of the characters {ID_CHARS_TEXT}",
    )


class SiteRefused(TransportError):
    """A valid site id that cannot get a worker (not allowed, or too many sites).

    `report` is False when the same refusal was reported less than the error interval
    ago (the caller then stays quiet: a flood of new site ids must not flood the log).
    """

    def __init__(self, code: str, message: str, report: bool) -> None:
        super().__init__(code, message)
        self.report = report


SiteObserver = Callable[[str, bool], None]
"""`observer(site, live)`: called when a site starts (True) and when it stops (False)."""


class TaskOwner(Protocol):
    """Who runs the site tasks (`voiced.supervise.Supervisor`)."""

    tasks: dict[str, asyncio.Task[Any]]

    def start(self, name: str, factory: Callable[[], Coroutine[Any, Any, Any]], *,
              restart: bool = False, critical: bool = False) -> asyncio.Task[Any]:
        """Run `factory()` as the watched task `name`."""
        ...


def task_name(site: str) -> str:
    """The name of a site's worker task."""
    return f"site-{site}"


def _quiet(worker: SiteWorker) -> bool:
    """True when stopping `worker` loses nothing: no queued input, no open session, no
    speech in progress."""
    return worker.idle


class SiteRegistry:
    """The live sites: get-or-create with a cap, touch on message, idle expiry.

    `workers` is the registry's own dict (the daemon exposes it as `Daemon.sites`); each
    worker runs as the task `site-<id>` of `owner`, which restarts it if it crashes.
    Expiry runs from a loop timer the registry arms while it has sites (no polling task);
    `expire_idle()` is that check.
    """

    def __init__(self, config: SitesConfig, factory: Callable[[str], SiteWorker],
                 owner: TaskOwner, *, error_interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._factory = factory
        self._owner = owner
        self._error_interval_s = error_interval_s
        self._clock = clock
        self.workers: dict[str, SiteWorker] = {}
        self._seen: dict[str, float] = {}
        self._retiring: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_report: dict[str, float] = {}
        self._unreported: dict[str, int] = {}
        self._closed = False
        self.claimed: set[str] = set()
        """Sites owned by one stream (a browser tab); MQTT cannot reach them."""
        self.observers: list[SiteObserver] = []
        self.expired = 0
        """Sites stopped because they were idle."""
        self.refused = 0
        """Site creations refused (not allowed, or the cap was reached)."""
        self.pcm_formats: OrderedDict[str, PcmFormat] = OrderedDict()
        """The raw PCM format each native satellite stated (`voiced/audio/<site>/format`),
        kept when its idle site is forgotten: it states it once per stream, and its audio
        read in the default format would be heard wrong. The newest FORMATS_KEPT."""

    def pcm_format(self, site: str) -> PcmFormat | None:
        """The format `site`'s raw PCM is in; None: it never said (16 kHz 16-bit mono)."""
        return self.pcm_formats.get(site)

    def set_pcm_format(self, site: str, fmt: PcmFormat) -> None:
        """Remember `site`'s stated format (the oldest one beyond FORMATS_KEPT goes)."""
        self.pcm_formats.pop(site, None)
        self.pcm_formats[site] = fmt
        while len(self.pcm_formats) > FORMATS_KEPT:
            self.pcm_formats.popitem(last=False)

    def session_site(self, session_id: str) -> str | None:
        """The site where session `session_id` is open (listening, or its utterance in
        progress), if any."""
        for site, worker in self.workers.items():
            if session_id in worker.open_sessions:
                return site
        return None

    def get(self, site: str, *, touch: bool = True) -> SiteWorker | None:
        """The live worker of `site` (marked as just seen unless `touch` is False), or
        None (also for a site claimed by a stream: it is not reachable through the
        registry)."""
        if site in self.claimed:
            return None
        worker = self.workers.get(site)
        if worker is not None and touch:
            self._seen[site] = self._clock()
        return worker

    def get_or_create(self, site: str) -> SiteWorker:
        """The worker of `site`, created (with its task) if needed.

        Call only for a valid message. Raises TransportError("site_id_invalid") for a bad
        id and SiteRefused ("site_not_allowed", "sites_full", "stopping", "site_in_use").
        """
        worker = self.get(site)
        if worker is not None:
            return worker
        if site in self.claimed:
            raise self._refuse("site_in_use", f"site {site!r} is streamed by a browser "
                               "(/api/stream); its MQTT messages are ignored")
        return self._create(site)

    def claim(self, site: str, mode: SiteMode | None = None) -> SiteWorker:
        """A new worker for `site` (in `mode`, default the configured one) that only the
        caller feeds, until `release`.

        The same checks as `get_or_create`; SiteRefused("site_in_use") when the site is
        live already (an MQTT satellite, another stream). The refusal always reports.
        """
        if site in self.claimed or site in self.workers:
            self.refused += 1
            raise SiteRefused("site_in_use", f"site {site!r} is in use already (by a "
                              "satellite or another stream); choose another site id", True)
        self.claimed.add(site)
        try:
            return self._create(site, mode)
        except BaseException:
            self.claimed.discard(site)
            raise

    async def release(self, site: str, timeout: float = 5.0, *, stop: bool = True) -> None:
        """End a claim. With `stop` the site is stopped cleanly (`stop_site`: what it
        holds is still processed); without (voiced is stopping) the daemon's shutdown
        drains it with the others."""
        if site not in self.claimed:
            return
        self.claimed.discard(site)
        if stop and not self._closed:
            # retired before anything else runs: the site id is free at once (a new
            # stream gets a fresh worker while this one finishes)
            await self.stop_site(site, timeout)

    def _create(self, site: str, mode: SiteMode | None = None) -> SiteWorker:
        check_site_id(site, "site")
        cfg = self._config
        if self._closed:
            raise self._refuse("stopping", f"site {site!r}: voiced is stopping")
        if not cfg.allowed(site):
            raise self._refuse("site_not_allowed",
                               f"site {site!r} is not in sites.allow; its audio is ignored")
        if len(self.workers) >= cfg.max:
            raise self._refuse(
                "sites_full",
                f"site {site!r} refused: voiced already serves {cfg.max} sites (sites.max); "
                f"a site with no message for {cfg.idle_expiry_s:g} s is forgotten")
        worker = self._factory(site)
        if mode is not None:
            worker.mode = mode
        self.workers[site] = worker
        self._owner.start(task_name(site), worker.run, restart=True)
        self._seen[site] = self._clock()
        log.info("site %s connected (%s)", site, worker.mode)
        if self._timer is None:
            self._arm(cfg.idle_expiry_s)
        self._notify(site, True)
        return worker

    def _notify(self, site: str, live: bool) -> None:
        for observer in list(self.observers):
            try:
                observer(site, live)
            except Exception:
                log.exception("site observer failed for %s", site)

    def _refuse(self, code: str, message: str) -> SiteRefused:
        self.refused += 1
        now = self._clock()
        last = self._last_report.get(code)
        if last is not None and now - last < self._error_interval_s:
            self._unreported[code] = self._unreported.get(code, 0) + 1
            return SiteRefused(code, message, report=False)
        self._last_report[code] = now
        missed = self._unreported.pop(code, 0)
        if missed:
            message += f" ({missed} more refused since the last report)"
        return SiteRefused(code, message, report=True)

    def status(self) -> dict[str, int | float]:
        """For voiced/status: the cap, the live sites, messages refused, sites expired."""
        return {"max": self._config.max, "live": len(self.workers), "refused": self.refused,
                "expired": self.expired, "idle_expiry_s": self._config.idle_expiry_s}

    @property
    def behind(self) -> int:
        """Sites whose audio arrived slower than real time in their last window."""
        return sum(1 for worker in self.workers.values() if worker.arrival.behind)

    async def run_ticks(self, health: Health) -> None:
        """Timeouts (wake sessions, satellites gone quiet mid-command) for the sites that
        have something open, every IDLE_CHECK_S: one timer for all, not one per frame;
        every 5 s, how many sites' audio arrives slower than real time (`health`)."""
        rounds = 0
        late_before = False
        while True:
            due = time.monotonic() + IDLE_CHECK_S
            await asyncio.sleep(IDLE_CHECK_S)
            late = time.monotonic() - due > IDLE_CHECK_S
            if late and not late_before:
                # voiced itself stalled (the loop was late): the satellites' audio of that
                # time is still unread, so a check now would end their utterances as
                # "audio stopped"; the next round checks, behind that audio
                late_before = True
                continue
            late_before = late
            self.tick()
            rounds += 1
            if rounds % 20 == 0:
                health.sites_behind(self.behind, len(self.workers))

    def tick(self) -> int:
        """Let every site that can time out check its timeouts; returns how many."""
        ticked = 0
        for worker in self.workers.values():
            if worker.needs_tick:
                worker.tick()
                ticked += 1
        return ticked

    # ---- expiry ------------------------------------------------------------------------
    def expire_idle(self) -> list[str]:
        """Stop every site with no message for `idle_expiry_s` and nothing open; returns
        their names. A site whose task is gone (its owner gave up on it) is forgotten
        too: its next message starts a fresh worker."""
        now = self._clock()
        expiry = self._config.idle_expiry_s
        expired = []
        for site, worker in list(self.workers.items()):
            task = self._owner.tasks.get(task_name(site))
            gone = task is None or task.done()
            if site in self.claimed and not gone:
                continue  # its stream owns it: it ends with the stream
            if gone or (now - self._seen.get(site, now) >= expiry and _quiet(worker)):
                self._retire(site, worker)
                expired.append(site)
        if expired:
            self.expired += len(expired)
            log.info("%d idle sites forgotten (%s)", len(expired),
                     ", ".join(expired[:10]) + (", ..." if len(expired) > 10 else ""))
        return expired

    def _retire(self, site: str, worker: SiteWorker) -> asyncio.Task[Any] | None:
        """Forget `site` and let its worker finish what it holds, then return."""
        self.workers.pop(site, None)
        self._seen.pop(site, None)
        self._notify(site, False)
        # taken from the owner first, so its ending is not a failure to restart
        task = self._owner.tasks.pop(task_name(site), None)
        worker.request_shutdown()
        if task is None or task.done():
            return None
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    def _arm(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        self.expire_idle()
        if self._seen:
            # the next site due, but never sooner than a quarter of the expiry: busy sites
            # past their time are looked at again then, not in a tight loop
            expiry = self._config.idle_expiry_s
            due = min(self._seen.values()) + expiry - self._clock()
            self._arm(max(due, expiry / 4))

    async def stop_site(self, site: str, timeout: float = 5.0) -> bool:
        """Stop one site cleanly: what is queued is processed and an utterance in progress
        is ended; after `timeout` the task is cancelled. False when there was no such site."""
        worker = self.workers.get(site)
        if worker is None:
            return False
        task = self._retire(site, worker)
        if task is not None:
            _, late = await asyncio.wait({task}, timeout=timeout)
            for pending in late:
                pending.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return True

    async def close(self) -> None:
        """No more sites and no more expiry; waits for the sites being retired. The live
        workers are left to the daemon's own shutdown (it drains them)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
