"""Who used what: every finished flow counted in the metrics and charged to its client key.

`Accounting` is an addon of the script next to `OllamaProxy` (addon/proxy.py), which calls its
`ended` once for every flow it finishes (after the flow's comment, marker and log line are
written); its own `responseheaders` hook notes a stream's start. It owns the `metrics_listen`
option and its listener (`addon.status_listener`: /metrics and /ready), and reads the proxy's
settings and servers' health only when scraped or checked. With `metrics_listen` off the metrics
are still counted (a few microseconds per flow) and per-key token limits still charged.

Under `make run WORKERS=N` every worker is a process with its own counters: each listens on
a port of its own (scripts/workers.py gives worker i the port of metrics_listen + i) and
Prometheus scrapes each, summing over them (docs/metrics.md). prometheus_client's multiprocess
mode was not chosen: it cannot serve the per-process gauges read at scrape time (server health,
streams in progress) without folding them, and it needs a shared directory cleaned at each start.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.exceptions import OptionsError

from addon.exchange import FAILED_MARKER, META, Exchange, Relay
from addon.metrics import Metrics
from addon.status_listener import StatusListener, parse_listen
from addon.upstreams.directory import ServersDirectory
from addon.upstreams.fetch import ListUnavailable
from addon.upstreams.servers import Server

SINGLE_CHECK_INTERVAL = 1.0  # seconds between /ready's own checks of a proxy's one server
SINGLE_CHECK_TIMEOUT = 5.0

if TYPE_CHECKING:
    from addon.proxy import OllamaProxy

METRICS_OPTIONS: list[tuple[str, type, Any, str]] = [
    (
        "metrics_listen",
        str,
        "",
        "host:port of a listener of its own serving Prometheus metrics at GET /metrics and readiness "
        "(200 or 503, the upstream servers' health) at GET /ready, e.g. 127.0.0.1:9464. Empty: off.",
    ),
]


class Accounting:
    """Counts finished flows in the metrics, charges their tokens to their key, serves /metrics and /ready."""

    def __init__(self, proxy: OllamaProxy) -> None:
        self.proxy = proxy
        proxy.on_end = self.ended
        self.metrics = Metrics(self.server_states, self.key_count)
        self.listener: StatusListener | None = None
        self.listening = ""  # the metrics_listen value the listener was bound for
        self.streams: dict[str, tuple[str, str]] = {}  # flow id → (route, server) of a stream being relayed
        self.is_running = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.single_checked = float("-inf")  # when /ready last asked the one server itself
        self.single_check: asyncio.Task[None] | None = None
        self.single_down: str | None = None  # the one server's name while its last check failed

    # -- the listener --------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        for name, typespec, default, help_text in METRICS_OPTIONS:
            loader.add_option(name, typespec, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if "metrics_listen" not in updated or ctx.options.metrics_listen.strip() == self.listening:
            return
        spec = ctx.options.metrics_listen.strip()
        where = parse_listen(spec)
        if where is not None and "listen_port" in ctx.options:
            ollama = (ctx.options.listen_host or "", ctx.options.listen_port)
            if where[1] == ollama[1] and (where[0] == ollama[0] or "" in (where[0], ollama[0])):
                raise OptionsError("metrics_listen must not be the Ollama port (listen_port)")
        listener = None
        if where is not None:
            listener = StatusListener(self.metrics.registry, self.readiness)
            listener.bind(*where)  # OptionsError when the address is taken: the proxy does not start
        old, self.listener, self.listening = self.listener, listener, spec
        self.later(self.replace(old, listener))

    def later(self, work: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # configured outside the event loop (unit tests): started in `running`
            work.close()
            return
        task = loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def replace(self, old: StatusListener | None, new: StatusListener | None) -> None:
        if old is not None:
            await old.close()
        if new is not None and self.is_running:
            await new.start()

    async def running(self) -> None:
        self.is_running = True
        if self.listener is not None:
            await self.listener.start()

    async def done(self) -> None:
        self.is_running = False
        if self.listener is not None:
            await self.listener.close()

    # -- what the listener reads ------------------------------------------------------------------

    def server_states(self) -> list[tuple[str, str, int]]:
        settings = self.proxy.settings
        if settings is None:
            return []
        health = self.proxy.health
        return [(s.name, (state := health.state(s.name)).status, state.outstanding) for s in settings.servers]

    def key_count(self) -> int:
        settings = self.proxy.settings
        return len(settings.keys) if settings is not None else 0

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: configured, running, and some upstream server takes requests (up, or due for a retry).
        One server alone keeps no health in the proxy (it is never refused), so /ready asks it itself:
        its `GET /models`, at most once a `SINGLE_CHECK_INTERVAL`, the last answer decides."""
        states = self.server_states()
        servers = {name: status for name, status, _ in states}
        settings = self.proxy.settings
        if self.is_running and settings is not None and len(settings.servers) == 1:
            server = settings.servers.servers[0]
            self.check_single(settings.models, server)
            if self.single_down == server.name:
                servers[server.name] = "down"
        ready = self.is_running and any(status != "down" for status in servers.values())
        return ready, {"servers": servers}

    def check_single(self, models: ServersDirectory, server: Server) -> None:
        """Start a check of the one server, unless one ran within the interval or is under way."""
        now = time.monotonic()
        if now - self.single_checked < SINGLE_CHECK_INTERVAL or (
            self.single_check is not None and not self.single_check.done()
        ):
            return
        self.single_checked = now

        async def check() -> None:
            try:
                await asyncio.wait_for(models.fetch(server), SINGLE_CHECK_TIMEOUT)
            except ListUnavailable:  # it answered, without a list: reachable
                self.single_down = None
            except Exception:  # noqa: BLE001 - unreachable, timed out, 5xx: not ready
                self.single_down = server.name
            else:
                self.single_down = None

        self.single_check = asyncio.get_running_loop().create_task(check(), name="readiness check")

    # -- flows -----------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self.proxy.exchanges.get(flow.id)
        if exchange is not None and exchange.relay is not None and flow.id not in self.streams:
            where = (exchange.route, exchange.server or "")
            self.streams[flow.id] = where
            self.metrics.stream_started(*where)

    def ended(self, flow: http.HTTPFlow, exchange: Exchange) -> None:
        """A flow the proxy finished: its metrics, and its tokens charged to its key."""
        if (stream := self.streams.pop(flow.id, None)) is not None:
            self.metrics.stream_ended(*stream)
        if exchange.failure is not None and flow.error is not None and exchange.relay is None:
            status: int | None = exchange.failure[0]
        else:
            status = flow.response.status_code if flow.response is not None else None
        relay = exchange.relay
        first = relay.first_piece - flow.request.timestamp_start if isinstance(relay, Relay) and relay.called else None
        record = flow.metadata.get(META) or exchange.record()
        failed = flow.marked == FAILED_MARKER
        self.metrics.finished(record, status, failed, time.time() - flow.request.timestamp_start, first)
        if exchange.key is not None and (usage := exchange.usage) is not None:
            exchange.key.charge(max(usage.prompt_tokens, 0) + max(usage.completion_tokens, 0))
