"""The models of several upstream servers: each server's `GET {base}/models`, fetched concurrently,
cached per server, and doubling as the health probe.

- Each server's list is fetched on its own (one task per server, shared by concurrent callers),
  under its own timeout (`fetch_timeout`): a slow or dead server never delays the others.
- Stale-while-revalidate: a server whose list is known is never waited for; when its list is
  older than `ttl`, it is refreshed in the background and the last good list serves meanwhile.
  Only a server's very first fetch is waited for, at most `first_wait` seconds (so that the first
  `/api/tags` after start is not empty); `start()` begins those fetches as the proxy starts.
- A failed fetch keeps the server's last good list (`addon.upstreams.listings.next_list`). A server that
  cannot be reached (refused, timed out, 5xx) is marked down in `Health`, which logs it once; one
  that answers without a usable list (401, 404, not JSON) is healthy, and that is logged once per
  change of the error.
- A server marked down (by a fetch, or passively by a failed request through `report`) is probed
  by fetching its list again after `probe_delays` (1, 2, 5, then every 10 s), by one background
  task alive while any server is down; its first good answer brings it back up.

- The request path calls `route` (several servers: it also starts due refreshes and probes, at
  most once a second) and, right after the start, `wait_first` while `warming`; it reports each
  answer's status and each failure (`report`), which `Health` turns into up and down.
- One server alone (no `[servers.NAME]` tables) is handled as before several servers existed: its
  list is fetched only when a lookup needs it (waited for up to `fetch_timeout`), a failed fetch is
  retried after `failed_retry` at the next lookup, nothing marks it down, and the log speaks of
  "the upstream's models".

Time: `clock` (default `time.monotonic`) decides freshness and the probe schedule; tests inject a
fake one and drive the schedule with `tick()` / `settle()`. Only the bounded waits (`fetch_timeout`,
`first_wait`) use the event loop's real time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from addon.catalog.catalog import Catalog
from addon.catalog.models import LATEST, ModelInfo, full_name, infer
from addon.upstreams.fetch import FETCH_TIMEOUT, Entries, HttpFetcher, ListUnavailable
from addon.upstreams.health import Health, Passive
from addon.upstreams.listings import MergedListing, ServerList, merge_listings, next_list
from addon.upstreams.servers import RouteRefusal, Server, ServerTable

logger = logging.getLogger("ollama_proxy")

FIRST_WAIT = 2.0  # seconds a lookup waits for a server's very first list
FAILED_RETRY = 10.0  # seconds before a reachable server's unusable list is fetched again (or ttl, if shorter)
PROBE_DELAYS = (1.0, 2.0, 5.0, 10.0)  # seconds between probes of a down server (the last one repeats)
INFERENCE_CACHE = 4096  # models whose inferred description is kept (`Directory._inferred`)
CONFIRM_INTERVAL = 1.0  # seconds: at most one probe a second of a suspect server (`confirm`)

Fetch = Callable[[Server], Awaitable[Entries]]


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a client's model name goes: the upstream id, the server, and how it was chosen."""

    name: str  # the client's name
    model_id: str  # the upstream id sent to the server
    server: Server
    rule: str  # catalog, listed, pattern or default (addon.upstreams.servers.RULES)
    entry: ModelInfo | None  # the catalog entry, if the name has one
    think_style: str  # the catalog entry's, else the server's (which defaults to the option)


class ServersDirectory:
    """The catalog plus every server's cached model list; routing of client names; the health probe."""

    def __init__(
        self,
        table: ServerTable,
        catalog: Catalog,
        *,
        ttl: float = 300.0,
        list_upstream: bool = True,
        fetch: Fetch | None = None,
        clock: Callable[[], float] | None = None,
        fetch_timeout: float = FETCH_TIMEOUT,
        first_wait: float = FIRST_WAIT,
        failed_retry: float = FAILED_RETRY,
        probe_delays: tuple[float, ...] = PROBE_DELAYS,
        probe_interval: float = 0.5,
        log: logging.Logger | None = logger,
    ) -> None:
        self.table = table
        self.health: Health = table.health
        self.catalog = catalog
        self.ttl = max(ttl, 0.0)
        self.list_upstream = list_upstream
        self.fetch: Fetch = fetch or HttpFetcher(fetch_timeout)
        self.clock = clock or table.health.clock
        self.fetch_timeout = fetch_timeout
        # One server alone (no [servers.NAME] tables) works as before the several-server routing:
        # its list is fetched only when a lookup needs it, and waited for up to fetch_timeout;
        # nothing marks it down or probes it (see `ServerTable.pick`: it is never refused).
        self.several = len(table) > 1
        self.first_wait = first_wait if self.several else max(first_wait, fetch_timeout)
        self.failed_retry = failed_retry
        self.probe_delays = probe_delays or (FAILED_RETRY,)
        self.probe_interval = probe_interval
        self.log = log
        self.loaded_at = time.time()  # modified_at of models without a created time
        names = table.names
        self._lists: dict[str, ServerList] = {n: ServerList() for n in names}
        # model id → (the list entries it was inferred from, or None; what `infer` made of them)
        self._inference: dict[str, tuple[Mapping[str, Mapping[str, Any]] | None, ModelInfo]] = {}
        self._fresh_until: dict[str, float] = dict.fromkeys(names, float("-inf"))
        self._next_probe: dict[str, float] = {}
        self._failed_probes: dict[str, int] = {}
        self._confirm_after: dict[str, float] = {}  # server → when it may be probed again (`confirm`)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._first_deadline: dict[str, float] = {}  # loop time until which a first fetch is waited for
        self._noted: dict[str, str | None] = dict.fromkeys(names)  # the list error last logged, per server
        self._listed_by: dict[str, frozenset[str]] = {}
        self._ids: dict[str, str] = {}  # upstream id or its name:tag form → the id (first server wins)
        self._prober: asyncio.Task[None] | None = None
        self._tick_at = float("-inf")  # clock time before which `route` starts no fetch
        self._warmed = not self.several  # every server's first fetch has ended: nothing to wait for

    def retable(self, table: ServerTable) -> None:
        """The same servers with other inherited options (think_style, upstream_timeout, ...): the
        lists stay. Called when an option changed that does not feed the lists."""
        if table.names != self.table.names or table.health is not self.health:
            raise ValueError("retable takes the same servers and the same health")
        self.table = table

    # -- what is known (synchronous) ----------------------------------------------------------------

    def lists(self) -> dict[str, ServerList]:
        return dict(self._lists)

    def listed_by(self) -> dict[str, frozenset[str]]:
        return self._listed_by

    def upstream_id(self, name: str) -> str:
        """A client's name → the upstream id: catalog alias; an id some server lists (exact, or the
        same name:tag form; first server in configuration order); else the name without `:latest`."""
        if (entry := self.catalog.get(name)) is not None:
            return entry.upstream
        if name in self._ids:
            return self._ids[name]
        if (known := self._ids.get(full_name(name))) is not None:
            return known
        return name[: -len(LATEST)] if name.endswith(LATEST) else name

    def info(self, name: str) -> ModelInfo:
        """What is known of a model now, without fetching: its catalog entry, else the defaults
        inferred from its upstream id (and from the first server's list entry for it, if any)."""
        if (entry := self.catalog.get(name)) is not None:
            return entry
        model_id = self.upstream_id(name)
        for server in self.table.names:
            entries = self._lists[server].entries
            if entries is not None and model_id in entries:
                return self._inferred(model_id, entries)
        return self._inferred(model_id, None)

    def _inferred(self, model_id: str, entries: Mapping[str, Mapping[str, Any]] | None) -> ModelInfo:
        """`infer` once per model and list (each request asks; a new list replaces `entries`). Bounded, as
        clients choose the names: a full cache starts again."""
        cached = self._inference.get(model_id)
        if cached is not None and cached[0] is entries:
            return cached[1]
        found = infer(model_id, dict(entries[model_id]) if entries is not None else None)
        if len(self._inference) >= INFERENCE_CACHE:
            self._inference.clear()
        self._inference[model_id] = (entries, found)
        return found

    def resolve_now(self, name: str) -> Resolution | RouteRefusal:
        """Route a client's model name with what is known now (never waits, never fetches)."""
        entry = self.catalog.get(name)
        model_id = entry.upstream if entry is not None else self.upstream_id(name)
        pin = entry.server if entry is not None else None
        rule, routed = self.table.pick(model_id, pin, self._listed_by, asked=name)
        if isinstance(routed, RouteRefusal):
            return self._with_next_probe(routed)
        think = entry.think_style if entry is not None and entry.think_style else routed.think_style
        return Resolution(name, model_id, routed, rule, entry, think)

    def _with_next_probe(self, refusal: RouteRefusal) -> RouteRefusal:
        """Retry-After: until the sooner next probe of the refused servers (they may be back by then)."""
        probes = [self._next_probe[n] for n in refusal.servers if n in self._next_probe]
        if not probes:
            return refusal
        wait = max(1, math.ceil(min(probes) - self.clock()))
        return replace(refusal, retry_after=min(wait, refusal.retry_after or wait))

    def status(self) -> str:
        return self.health.status_line(self.table.names)

    def route(self, name: str) -> Resolution | RouteRefusal:
        """`resolve_now` for the request path: with several servers, it also starts (at most once a
        second, in the background) the refreshes and probes that are due, so that the lists the
        routing reads stay current without anyone asking for /api/tags."""
        if self.several:
            now = self.clock()
            if now >= self._tick_at:
                self._tick_at = now + 1.0
                self.tick()
        return self.resolve_now(name)

    @property
    def warming(self) -> bool:
        """Whether a server's very first list is under way (several servers only): the request path
        then waits for it (at most `first_wait`) before routing, as `resolve` does."""
        if self._warmed:
            return False
        if all(lst.entries is not None or lst.error is not None for lst in self._lists.values()):
            self._warmed = True
            return False
        return any(not task.done() for task in self._tasks.values())

    async def wait_first(self) -> None:
        """Wait (at most `first_wait`) for servers whose first list is under way."""
        await self._first_lists()

    # -- lookups (asynchronous: may wait for first lists, never for known ones) ---------------------

    async def resolve(self, name: str) -> Resolution | RouteRefusal:
        """Like `resolve_now`, after waiting (at most `first_wait`) for servers whose first list is
        under way, unless the catalog decides alone. Starts due refreshes in the background."""
        self.tick()
        entry = self.catalog.get(name)
        if entry is None or entry.server is None:
            await self._first_lists()
        return self.resolve_now(name)

    async def listing(self) -> MergedListing:
        """Catalog first, then each server's last good list; never waits for a known list."""
        if self.several or self.list_upstream:  # one server whose models are not listed: nothing to fetch
            self.tick()
            await self._first_lists()
        return merge_listings(
            self.catalog.models.values(),
            [(n, self._lists[n]) for n in self.table.names],
            show_servers=self.list_upstream,
        )

    async def find(self, name: str) -> tuple[ModelInfo | None, str | None]:
        """(the model, None) if it exists; (None, None) if not; (defaults, why) if a server's list is unknown."""
        if (entry := self.catalog.get(name)) is not None:
            return entry, None
        self.tick()
        await self._first_lists()
        model_id = self.upstream_id(name)
        for server in self.table.names:
            entries = self._lists[server].entries
            if entries is not None and model_id in entries:
                return infer(model_id, dict(entries[model_id])), None
        unknown = [n for n in self.table.names if self._lists[n].entries is None]
        if unknown:
            why = "; ".join(f"server {n}: {self._lists[n].error or 'its model list is not known yet'}" for n in unknown)
            return infer(model_id), why
        return None, None

    def available(self, listing: MergedListing) -> list[ModelInfo]:
        """The listed models a request could go to now (for /api/ps): those of down servers are left out."""
        return [m for m in listing.models if not isinstance(self.resolve_now(m.name), RouteRefusal)]

    # -- passive health (from the request path) ------------------------------------------------------

    def report(self, server: str, verdict: tuple[Passive, str]) -> None:
        """What a request to `server` said about it (`health.passive_verdict`): up, down, suspect
        (confirmed by a probe), or nothing. One server alone has no health to keep: ignored."""
        if not self.several:
            return
        passive, reason = verdict
        if passive is Passive.OK:
            self.report_ok(server)
        elif passive is Passive.DOWN:
            self.report_failure(server, reason)
        elif passive is Passive.BROKEN or (passive is Passive.SUSPECT and self.health.suspect(server)):
            self.confirm(server)

    def confirm(self, server: str) -> None:
        """Ask a suspect server itself (its list, fetched now; at most once every CONFIRM_INTERVAL):
        a failed fetch marks it down, an answer keeps it up."""
        now = self.clock()
        if self.health.is_down(server) or now < self._confirm_after.get(server, -math.inf):
            return
        self._confirm_after[server] = now + CONFIRM_INTERVAL
        self._fresh_until[server] = now
        self.tick()

    def report_failure(self, server: str, reason: str) -> None:
        if self.health.mark_failed(server, reason):
            self._failed_probes[server] = 0
            self._next_probe[server] = self.clock() + self.probe_delays[0]
            self._ensure_prober()
            self._changed()

    def report_ok(self, server: str) -> None:
        if self.health.mark_ok(server):
            self._changed()

    def _changed(self) -> None:
        """After a server went down or came back: the health of them all, in one log line."""
        if self.log is not None and len(self.table) > 1:
            self.log.info(self.status())

    # -- fetching ------------------------------------------------------------------------------------

    def due(self) -> list[str]:
        """Servers whose list should be fetched now: a probe of a down server, or a stale list."""
        now = self.clock()
        out = []
        for name in self.table.names:
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            if self.health.is_down(name):
                if now >= self._next_probe.get(name, float("-inf")):
                    out.append(name)
            elif now >= self._fresh_until[name]:
                out.append(name)
        return out

    def tick(self) -> list[asyncio.Task[None]]:
        """Start the fetches that are due (in the background); the tasks started."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the event loop (unit tests of the synchronous parts)
            return []
        started = []
        for name in self.due():
            if self._lists[name].entries is None and self._lists[name].error is None:
                self._first_deadline.setdefault(name, loop.time() + self.first_wait)
            task = self._tasks[name] = loop.create_task(self._load(name), name=f"models of {name}")
            started.append(task)
        return started

    def start(self) -> None:
        """Begin every server's first fetch (call from the `running` hook). One server alone is
        fetched when a lookup first needs it, as before."""
        if self.several:
            self.tick()

    async def settle(self) -> None:
        """Wait for every fetch under way (tests)."""
        running = [t for t in self._tasks.values() if not t.done()]
        if running:
            await asyncio.gather(*running)

    async def probe(self, name: str) -> None:
        """Fetch one server's list now and wait for it (the probe, on demand)."""
        task = self._tasks.get(name)
        if task is None or task.done():
            task = self._tasks[name] = asyncio.get_running_loop().create_task(self._load(name))
        await asyncio.shield(task)

    async def close(self) -> None:
        for task in [*self._tasks.values(), *([self._prober] if self._prober else [])]:
            task.cancel()
        close = getattr(self.fetch, "aclose", None)
        if close is not None:
            await close()

    async def _first_lists(self) -> None:
        """Wait for servers whose very first fetch is under way, each until its first_wait deadline."""
        loop = asyncio.get_running_loop()
        pending = [
            (task, self._first_deadline.get(name, 0.0))
            for name, task in self._tasks.items()
            if not task.done() and self._lists[name].entries is None and self._lists[name].error is None
        ]
        if not pending:
            return
        deadline = max(d for _, d in pending)
        remaining = deadline - loop.time()
        if remaining > 0:
            await asyncio.wait([t for t, _ in pending], timeout=remaining)

    async def _load(self, name: str) -> None:
        server = self.table[name]
        try:
            if (prepare := getattr(self.fetch, "prepare", None)) is not None:
                await prepare()  # one-time set-up, not counted against any server's timeout
            async with asyncio.timeout(self.fetch_timeout):
                entries = await self.fetch(server)
        except asyncio.CancelledError:
            raise
        except ListUnavailable as e:
            now = self.clock()
            self.report_ok(name)
            self._failed_probes.pop(name, None)
            self._set_list(name, next_list(self._lists[name], e, now))
            self._fresh_until[name] = now + min(self.failed_retry, self.ttl)
            self._note(name, str(e))
        except Exception as e:  # noqa: BLE001 - unreachable, timed out, 5xx, or a fetcher bug: the server is down
            reason = (
                f"no answer to GET /models within {self.fetch_timeout:g} s"
                if isinstance(e, TimeoutError) and not str(e)
                else (str(e) or type(e).__name__)
            )
            now = self.clock()
            self._set_list(name, next_list(self._lists[name], RuntimeError(reason), now))
            if not self.several:  # one server: tried again on a lookup after failed_retry, as before
                self._fresh_until[name] = now + min(self.failed_retry, self.ttl)
                self._note(name, reason)
                return
            if self.health.mark_failed(name, reason):
                self._changed()
            count = self._failed_probes[name] = self._failed_probes.get(name, -1) + 1
            self._next_probe[name] = self.clock() + self.probe_delays[min(count, len(self.probe_delays) - 1)]
            self._ensure_prober()
        else:
            now = self.clock()
            self.report_ok(name)
            self._failed_probes.pop(name, None)
            self._set_list(name, next_list(self._lists[name], entries, now))
            self._fresh_until[name] = now + self.ttl
            self._note(name, None)

    def _set_list(self, name: str, new: ServerList) -> None:
        changed = new.entries is not self._lists[name].entries
        self._lists[name] = new
        if not changed:
            return
        self._listed_by = {n: lst.ids for n, lst in self._lists.items() if lst.entries is not None}
        ids: dict[str, str] = {}
        for n in self.table.names:
            for model_id in self._lists[n].entries or ():
                ids.setdefault(model_id, model_id)
        for model_id in list(ids.values()):
            ids.setdefault(full_name(model_id), model_id)
        self._ids = ids

    def _note(self, name: str, error: str | None) -> None:
        """Log a reachable server's list problem once per change (health changes are Health's to log)."""
        if self._noted.get(name) == error:
            return
        self._noted[name] = error
        if self.log is None:
            return
        kept = self._lists[name].entries
        if not self.several:  # one server: the messages of a proxy with one upstream
            if error is None:
                self.log.info("the upstream's model list is available again")
            else:
                self.log.warning(
                    "cannot list the upstream's models: %s%s", error, " (keeping the last list)" if kept else ""
                )
            return
        if error is None:
            self.log.info("server %s: its model list is available again", name)
        else:
            tail = f" (keeping its last list of {len(kept)} models)" if kept else ""
            self.log.warning("server %s: cannot list its models: %s%s", name, error, tail)

    def _ensure_prober(self) -> None:
        if self._prober is not None and not self._prober.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._prober = loop.create_task(self._probe_loop(), name="server probes")

    async def _probe_loop(self) -> None:
        """Alive while any server is down: starts its probes when they are due."""
        while any(self.health.is_down(n) for n in self.table.names):
            await asyncio.sleep(self.probe_interval)
            self.tick()
