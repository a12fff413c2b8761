"""Pooled upstream connections: HAProxy beside mitmproxy keeps the TLS connections to each upstream warm.

mitmproxy never reuses an upstream connection across client connections: every new client
connection (curl, a script, a pooled client whose idle connection expired) pays a fresh TCP + TLS
handshake to the upstream, two round trips. With `upstream_pool` on, this module starts HAProxy
(Debian's `haproxy`) as a sidecar of the proxy process: one loopback listener per upstream origin
(scheme, host, port), speaking plain HTTP/1.1 to mitmproxy and TLS to the upstream, with
`http-reuse always` so that any request, from any client connection, takes a warm upstream
connection when one is idle. Streams pass through as they come (HAProxy does not buffer them).

The sidecar honours mitmproxy's own upstream TLS options, so it trusts exactly what mitmproxy
would: `ssl_insecure`, `ssl_verify_upstream_trusted_ca` / `..._confdir` (else certifi's bundle,
mitmproxy's default), `client_certs` (a file, or `<dir>/<host>.pem`), `tls_version_server_min`
/ `_max` and `ciphers_server`; it verifies the certificate and host name by default, and sends the
upstream host as SNI. Its configuration holds no key (the Authorization header passes through);
it logs only failed requests, without headers or URLs. It listens on 127.0.0.1 only, is bounded
(`maxconn` from the open-file limit, `upstream_pool_max_idle` idle connections per upstream,
closed after `upstream_pool_idle` seconds), starts with the proxy and stops with it (also when
the proxy is killed: the kernel sends HAProxy SIGTERM when its parent dies).

Other local processes can connect to its loopback port (mitmproxy connects over TCP only, so a
unix socket with 0600 permissions is not possible): every request must carry the sidecar's own
random token (`x-ollama-pool`, made at each start, put only on the wire by
`guard.secrets.put_on_wire`, registered as a secret, removed by HAProxy before the request goes on),
else HAProxy answers 403 without contacting the upstream, so no other process can relay through it
or borrow the proxy's client certificate (`client_certs`). A request head must arrive within
`timeout http-request` (10 s). A request is sent again only when it provably never reached the
upstream (a failed connect); a warm connection that the upstream closed as it was reused fails
that request with 502 rather than risk sending a POST twice (as nginx does for non-idempotent
requests). What stays (docs/security.md): a local process can still hold connection slots, each
for at most 10 s.

The hook point: the flows keep the real upstream URL (what mitmweb and saved flows show).
`PoolConnector`, the very last addon of mitmproxy's chain (there only while the pool serves an
origin: with `upstream_pool=off` it costs the flows nothing), moves a request bound for a pooled
origin to the pool's listener just before mitmproxy opens the connection (after every view has
seen it), by setting `scheme`/`host`/`port` on the request data without touching its Host
header; `PoolRestore`, the first addon of the script, puts the real URL back when the answer's
headers (or an error) arrive, before anything else sees the flow. Nothing else in the addon knows
about the pool but the proxy, which tells it every upstream server's base URL (`servers`):
`pooled_origins` decides which origins are pooled, and each gets a listener of its own.

The package: this module (the addon, its options, the connector), `config.py` (origins, TLS options,
HAProxy's configuration), `sidecar.py` (the HAProxy process).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mitmproxy import ctx, exceptions, http
from mitmproxy.flow import Flow

from addon.guard import secrets
from addon.pool.config import TOKEN_HEADER, Origin, TLSSettings, haproxy_config, origin_of, pooled_origins
from addon.pool.sidecar import Sidecar, find_haproxy

__all__ = [
    "POOL_META",
    "POOL_OPTIONS",
    "TOKEN_HEADER",
    "Origin",
    "PoolConnector",
    "Sidecar",
    "TLSSettings",
    "UpstreamPool",
    "find_haproxy",
    "haproxy_config",
    "origin_of",
    "pooled_origins",
]

logger = logging.getLogger("ollama_proxy")

META = "ollama"  # the addon's flow metadata key: requests going upstream carry "upstream_route"
POOL_META = "ollama_pool"  # set on a pooled flow: {"origin": "https://host:443", "via": "127.0.0.1:port"}

POOL_OPTIONS: list[tuple[str, type, Any, str]] = [
    (
        "upstream_pool",
        str,
        "off",
        "Keep upstream connections warm across client connections in an HAProxy sidecar on loopback "
        "(Debian's haproxy): 'https' pools TLS upstreams (where it pays: no TCP + TLS handshake per "
        "new client connection), 'all' plain-HTTP upstreams too, 'off' none. make run sets 'https' (POOL=0: off).",
    ),
    (
        "upstream_pool_max_idle",
        int,
        32,
        "Idle connections the pool keeps per upstream (busy ones are not limited by this).",
    ),
    (
        "upstream_pool_idle",
        int,
        30,
        "Seconds after which the pool starts closing idle upstream connections (half of them each period).",
    ),
]
POOL_OPTION_NAMES = frozenset(name for name, *_ in POOL_OPTIONS)
# mitmproxy's options the sidecar's configuration follows.
TLS_OPTION_NAMES = frozenset(
    {
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "client_certs",
        "tls_version_server_min",
        "tls_version_server_max",
        "ciphers_server",
        "openai_base_url",
    }
)


class UpstreamPool:
    """The first addon of the script: owns the sidecar, and puts the real upstream URL back on flows."""

    def __init__(self) -> None:
        self.sidecar: Sidecar | None = None
        self.draining: list[Sidecar] = []
        self.routes: dict[Origin, tuple[str, int]] = {}
        self.wanted: tuple[object, ...] | None = None
        self.is_running = False
        self.urls: tuple[str, ...] | None = None  # every upstream server's base URL (set by the proxy)

    def servers(self, urls: Sequence[str]) -> None:
        """The upstream servers' base URLs (several upstreams, addon/upstreams/): each https origin
        is pooled. Called by the proxy whenever it (re)builds its servers; a sidecar that cannot
        serve them refuses the option change that made them."""
        urls = tuple(urls)
        if urls == self.urls:
            return
        previous, self.urls = self.urls, urls
        if pooled_origins(ctx.options, urls) and find_haproxy() is None:
            self.urls = previous
            raise exceptions.OptionsError(
                "upstream_pool needs HAProxy, which is not installed: apt-get install haproxy "
                "(or run without the pool: make run POOL=0, or --set upstream_pool=off)"
            )
        if self.is_running:
            try:
                self.apply()
            except RuntimeError as e:
                self.urls = previous
                raise exceptions.OptionsError(f"upstream pool: {e}") from None

    # -- options and the sidecar's life ----------------------------------------------------

    def load(self, loader: Any) -> None:
        for name, typespec, default, help_text in POOL_OPTIONS:
            if name not in ctx.options:
                loader.add_option(name, typespec, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if not updated & (POOL_OPTION_NAMES | TLS_OPTION_NAMES):
            return
        if ctx.options.upstream_pool not in ("off", "https", "all"):
            raise exceptions.OptionsError(f"upstream_pool must be off, https or all, got {ctx.options.upstream_pool!r}")
        if ctx.options.upstream_pool_max_idle < 1 or ctx.options.upstream_pool_idle < 1:
            raise exceptions.OptionsError("upstream_pool_max_idle and upstream_pool_idle must be at least 1")
        origins = pooled_origins(ctx.options, self.urls)
        if origins and find_haproxy() is None:
            raise exceptions.OptionsError(
                "upstream_pool needs HAProxy, which is not installed: apt-get install haproxy "
                "(or run without the pool: make run POOL=0, or --set upstream_pool=off)"
            )
        if self.is_running:
            self.apply()

    def running(self) -> None:
        self.is_running = True
        try:
            self.apply()
        except (RuntimeError, exceptions.OptionsError) as e:
            logger.error("upstream pool: %s; stopping (run without it: --set upstream_pool=off, make run POOL=0)", e)
            ctx.master.shutdown()

    def apply(self) -> None:
        """Start, restart or stop the sidecar so that it serves what the options say."""
        origins = pooled_origins(ctx.options, self.urls)
        wanted = (
            tuple(origins),
            *(getattr(ctx.options, name) for name in sorted(POOL_OPTION_NAMES | TLS_OPTION_NAMES)),
        )
        if wanted == self.wanted:
            return
        sidecar = None
        if origins:  # the new one first: if it cannot start, the running one stays (the option change is refused)
            haproxy = find_haproxy()
            assert haproxy is not None  # configure checked
            sidecar = Sidecar(origins, ctx.options, haproxy)
            try:
                sidecar.check()
                sidecar.start()
            except BaseException:
                sidecar.stop()
                raise
            self._watch(sidecar)
            for origin, (host, port) in sidecar.routes.items():
                tls = (
                    "none (plain HTTP)"
                    if origin.scheme != "https"
                    else "not verified (ssl_insecure)"
                    if ctx.options.ssl_insecure
                    else "verified"
                )
                logger.info(
                    "upstream pool: %s is served through HAProxy on %s:%d (TLS %s, up to %d idle connections "
                    "kept, idle close after %d s)",
                    origin,
                    host,
                    port,
                    tls,
                    ctx.options.upstream_pool_max_idle,
                    ctx.options.upstream_pool_idle,
                )
        old = self.sidecar
        self.sidecar, self.routes, self.wanted = sidecar, dict(sidecar.routes) if sidecar else {}, wanted
        secrets.register(TOKEN_HEADER, sidecar.token if sidecar else "")  # hidden wherever it could show
        self._place_connector()
        if old is not None:
            self._unwatch(old)
            old.stop(graceful=True)  # requests under way finish on the old one
            self.draining.append(old)
        for done in [s for s in self.draining if s.process is None or s.process.poll() is not None]:
            done.stop()  # releases its pipe
            self.draining.remove(done)

    def _watch(self, sidecar: Sidecar) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        assert sidecar.process is not None and sidecar.process.stderr is not None
        loop.add_reader(sidecar.process.stderr.fileno(), self._relay_log, sidecar)

    def _unwatch(self, sidecar: Sidecar) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if sidecar.process is not None and sidecar.process.stderr is not None and not sidecar.process.stderr.closed:
            loop.remove_reader(sidecar.process.stderr.fileno())

    def _relay_log(self, sidecar: Sidecar) -> None:
        lines = sidecar.read_log()
        for line in lines:
            logger.warning("upstream pool: %s", line)
        if not lines and sidecar.process is not None and sidecar.process.poll() is not None:
            self._unwatch(sidecar)
            if sidecar is self.sidecar:
                logger.error(
                    "upstream pool: HAProxy stopped (exit status %s); requests now go straight to the "
                    "upstream, each new client connection with its own TLS handshake",
                    sidecar.process.returncode,
                )
                self.sidecar, self.routes, self.wanted = None, {}, None
                secrets.register(TOKEN_HEADER, "")
                self._place_connector()

    def _place_connector(self) -> None:
        """The connector is in mitmproxy's chain only while the pool serves an origin: an addon with
        nothing to do would still cost every hook of every flow its dispatch."""
        addons = ctx.master.addons
        existing = addons.get(PoolConnector.name)
        if self.routes and existing is None:
            addons.add(PoolConnector(self))  # at the end of the chain, after every view
        elif self.routes:  # the script was reloaded: the connector stays at the end of the chain, serving this pool
            existing.pool = self
        elif existing is not None:
            addons.remove(existing)

    def done(self) -> None:
        for sidecar in (self.sidecar, *self.draining):
            if sidecar is not None:
                self._unwatch(sidecar)
                sidecar.stop()
        self.sidecar, self.draining, self.routes, self.wanted = None, [], {}, None
        secrets.register(TOKEN_HEADER, "")
        self.is_running = False

    # -- flows: the real URL back before anything else sees the answer ---------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        restore(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        restore(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        restore(flow)


def restore(flow: http.HTTPFlow) -> None:
    pooled = flow.metadata.get(POOL_META)
    if pooled is not None and "real" in pooled:
        scheme, host, port = pooled.pop("real")
        flow.request.scheme = scheme  # sets no header
        flow.request.data.host, flow.request.data.port = host, port  # the setters would rewrite the Host header


class PoolConnector:
    """The last addon of mitmproxy's chain: sends a request bound for a pooled origin to the pool.

    mitmproxy runs every addon's `update` hook after the `request` hooks (that is when mitmweb's
    view shows the flow) and then connects to `request.scheme/host/port`: this changes only those,
    for the connection, and leaves the Host header naming the real upstream.
    """

    name = "ollamapoolconnector"

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def update(self, flows: Sequence[Flow]) -> None:
        routes = self.pool.routes
        if not routes:
            return
        for flow in flows:
            if (
                not isinstance(flow, http.HTTPFlow)
                or flow.response is not None
                or flow.error is not None
                or POOL_META in flow.metadata
                or "upstream_route" not in flow.metadata.get(META, {})
            ):
                continue
            request = flow.request
            target = routes.get(Origin(request.scheme, request.host, request.port))
            if target is None:
                continue
            flow.metadata[POOL_META] = {
                "origin": str(Origin(request.scheme, request.host, request.port)),
                "via": f"{target[0]}:{target[1]}",
                "real": (request.scheme, request.host, request.port),
            }
            # request.data, not request.host: the Host header keeps naming the upstream.
            request.scheme = "http"
            request.data.host, request.data.port = target
            if (sidecar := self.pool.sidecar) is not None:
                secrets.put_on_wire(request, extra=sidecar.wire)  # the pool's token: on the wire only
