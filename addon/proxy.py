"""The mitmproxy addon: its options, and the order of every step a flow goes through, in one place.

Run it with `mitmdump -s addon/proxy.py` (see README.md and docs/architecture.md). Each hook
below is the complete sequence of what happens to an Ollama flow at that moment; the work is
done by the endpoint of its route (`addon.endpoints`), the exchange helpers (`addon.exchange`),
the guards (`addon.guard`) and, for the hooks' longer steps, `addon.flow_steps`. `OllamaProxy`
decides every flow; beside it, the pool and `ClientConnections` (client connections below the
requests); `KeyInjector` joins the end of mitmproxy's chain at start-up, because the upstream key
may reach the request only after every other addon (mitmweb's view among them) has seen it.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _load_own_package() -> None:
    """Bind the name `addon` to the package in this file's own directory.

    mitmproxy loads this file as the module `__mitmproxy_script__.proxy`, outside any package.
    A plain `import addon` would then find whatever `addon` the environment offers first: an
    editable install of another checkout, an unrelated package of that name, or nothing. The
    package is therefore loaded from this directory by path (tests/test_script_load.py).
    """
    here = os.path.dirname(os.path.abspath(__file__))
    loaded = sys.modules.get("addon")
    if loaded is not None and os.path.dirname(os.path.abspath(getattr(loaded, "__file__", "") or "")) == here:
        return
    for name in [n for n in sys.modules if n == "addon" or n.startswith("addon.")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        "addon", os.path.join(here, "__init__.py"), submodule_search_locations=[here]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules["addon"] = package
    spec.loader.exec_module(package)


if __package__ != "addon":
    _load_own_package()

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402

from mitmproxy import ctx, http  # noqa: E402
from mitmproxy.addonmanager import Loader  # noqa: E402
from mitmproxy.flow import Flow  # noqa: E402

from addon import (  # noqa: E402
    accounting,
    dispatch,
    endpoints,
    flow_steps,
    offload,
    pool,
    views,
)
from addon import mitm_internals as fence  # noqa: E402
from addon.endpoints.base import Endpoint  # noqa: E402
from addon.exchange import (  # noqa: E402
    Exchange,
    complete_stream,
    finish_stream,
    flow_log,
    replace_answer,
    respond,
    send_upstream,
)
from addon.flow_line import finish  # noqa: E402
from addon.guard import (  # noqa: E402
    access,
    client_buffer,
    connections,
    early,
    errorpage,
    keys,
    output,
    request_size,
    secrets,
    timeouts,
)
from addon.mitm_internals import FailureKind  # noqa: E402
from addon.reply import Answer, Forward, Reply  # noqa: E402
from addon.settings import OPTION_NAMES, OPTIONS, WATCHED_OPTIONS, Settings, log_flows  # noqa: E402
from addon.upstreams.directory import ServersDirectory  # noqa: E402
from addon.upstreams.health import Health  # noqa: E402
from addon.upstreams.servers import Unroutable  # noqa: E402

logger = logging.getLogger("ollama_proxy")


def refuse_to_start(message: str) -> None:
    """Fail closed: without the addon, mitmproxy would forward requests untranslated. An error logged
    while starting makes mitmdump and mitmweb exit with status 1 (their errorcheck addon, right after
    the listeners are up); the shutdown a second later stops a proxy that runs already (a reload)."""
    logger.error("%s", message)
    with contextlib.suppress(AttributeError, RuntimeError):
        asyncio.get_running_loop().call_later(1.0, ctx.master.shutdown)


class OllamaProxy:
    """The addon: Ollama requests in, answered locally or rewritten for the OpenAI upstream."""

    def __init__(self, upstream_pool: pool.UpstreamPool | None = None) -> None:
        self.pool = upstream_pool  # told every upstream server's base URL (its https origins are pooled)
        self.settings: Settings | None = None
        self.exchanges: dict[str, Exchange] = {}  # by flow id, from the request's headers to its end
        self.watch = timeouts.UpstreamWatch()
        self.health = Health()  # the servers' health, kept across every reconfiguration
        self.key_names: set[str] = set()  # the names the servers' keys are registered under (secrets)
        self.injector_installed = False
        self.rebind = False
        self.is_running = False
        self.closing: set[asyncio.Task[None]] = set()  # old directories being closed
        self.body_size_limit: str | None = None  # the value the addon gave mitmproxy's body_size_limit
        # Told of every flow the proxy finishes (addon.accounting: the metrics, per-key token limits).
        self.on_end: Callable[[http.HTTPFlow, Exchange], None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self, loader: Loader) -> None:
        try:
            warnings = fence.verify()  # mitmproxy's internals the addon relies on, once
        except fence.MitmproxyChanged as e:
            refuse_to_start(str(e))
            raise
        for warning in warnings:
            logger.warning("%s", warning)
        for name, typespec, default, help_text in OPTIONS:
            loader.add_option(name, typespec, default, help_text)
        errorpage.install()
        views.register()

    def configure(self, updated: set[str]) -> None:
        options = ctx.options
        if self.settings is None or updated & (OPTION_NAMES | WATCHED_OPTIONS):
            previous = self.settings
            settings = Settings.build(options, previous, updated, self.health)
            if self.pool is not None:  # may refuse the change (a new https server and no HAProxy)
                self.pool.servers([str(server.base_url) for server in settings.servers])
            self.settings = settings
            self.register_keys(settings)
            if previous is not None and previous.models is not settings.models:
                self.replace_directory(previous.models, settings.models)
        if "fast_hook_dispatch" in updated:
            dispatch.install(options.fast_hook_dispatch)
        secrets.install_log_scrubber()
        output.install()
        flow_log.setLevel(logging.INFO if log_flows(options) else logging.WARNING)  # the line of each flow
        timeouts.keep_client_connection(options, max(s.upstream_timeout for s in self.settings.servers))
        self.rebind |= access.listen_on_loopback(options)
        self.body_size_limit = request_size.ceiling(options, self.settings.request_body_limit, self.body_size_limit)
        client_buffer.install(self.settings.request_body_limit)
        # Requests are rewritten or answered before any upstream connection is needed; "eager"
        # would first connect to the reverse target and fail the client when it is absent.
        if "connection_strategy" in options and options.connection_strategy != "lazy":
            options.connection_strategy = "lazy"
        # In reverse mode mitmproxy would replace the client's Host by the reverse target's before
        # requestheaders: the Host check needs the client's (send_upstream sets the upstream's).
        if "keep_host_header" in options and not options.keep_host_header:
            options.keep_host_header = True
        if "web_columns" in updated:  # mitmweb: the client's route, model and server in the flow list
            views.flow_list_columns(options)

    def register_keys(self, settings: Settings) -> None:
        """Every server's key (and the client key) is a secret: hidden in logs, answers, views, saved flows."""
        keys = settings.servers.secrets()
        keys.update({f"client key {key.name}": key.spec.key for key in settings.keys.by_name.values()})
        for name in self.key_names - keys.keys():
            secrets.register(name, "")
        for name, key in keys.items():
            secrets.register(name, key)
        self.key_names = set(keys)
        secrets.register("ollama_api_key", settings.client_key)

    def replace_directory(self, old: ServersDirectory, new: ServersDirectory) -> None:
        """The servers or their lists' sources changed: the old directory's fetches end, the new one's begin."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # configured outside the event loop (unit tests): nothing is running
            return
        closing = loop.create_task(old.close())
        self.closing.add(closing)
        closing.add_done_callback(self.closing.discard)
        if self.is_running:
            new.start()

    async def running(self) -> None:
        # What start-up made (modules, classes, mitmproxy's and the addon's tables) lives as long as the
        # process: out of the collector's sight, so that a full collection walks only what flows made
        # (with 1000 streams held, each full pass was a stall of every stream; docs/performance.md).
        gc.collect()
        gc.freeze()
        secrets.install_log_scrubber()
        secrets.install_injector(ctx.master, self.exchanges.get)
        self.injector_installed = True
        self.is_running = True
        if self.settings is not None:
            self.settings.models.start()  # several servers: every first list, and the health probe
        if self.rebind:
            self.rebind = False
            try:
                await access.rebind(ctx.master)
            except fence.MitmproxyChanged as e:
                refuse_to_start(str(e))

    async def done(self) -> None:
        # Flows still in flight are written by mitmproxy's save addon after this hook (it comes later
        # in the chain): none of them keeps a key.
        for exchange in self.exchanges.values():
            if exchange.flow is not None:
                secrets.forget(exchange.flow, exchange)
        fence.uninstall_patches()
        dispatch.uninstall()
        self.watch.done()
        self.is_running = False
        if self.settings is not None:
            await self.settings.models.close()

    # -- flows --------------------------------------------------------------------------------

    def is_ollama(self, flow: http.HTTPFlow) -> bool:
        if fence.is_reverse(flow.client_conn.proxy_mode):
            return True
        assert self.settings is not None
        return self.settings.is_ollama_host(flow.request.host, flow.request.port)

    def open(self, flow: http.HTTPFlow) -> Exchange:
        request = flow.request
        exchange = Exchange(request.method, request.path.split("?", 1)[0], request.timestamp_start)
        exchange.flow = flow
        route = endpoints.find(exchange.route)
        exchange.endpoint = route.endpoint if route is not None else endpoints.FALLBACK
        exchange.close = fence.connection_close(request.http_version, request.headers)
        exchange.http10 = request.http_version == "HTTP/1.0"
        self.exchanges[flow.id] = exchange
        return exchange

    def admit(self, flow: http.HTTPFlow, exchange: Exchange) -> Answer | None:
        """Everything decided from the request's head, in Ollama's order: a refusal, a preflight, or None."""
        assert self.settings is not None
        return flow_steps.admit(flow, exchange, self.settings)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Fail closed: an exception here would let the request through unchecked (key, Origin, Host, size).
        exchange: Exchange | None = None
        try:
            if not self.is_ollama(flow):
                return
            exchange = self.open(flow)
            if answer := self.admit(flow, exchange):
                respond(flow, exchange, answer)
                early.answer_now(flow, exchange)  # before the body is read
                exchange.publish(flow)
            elif request_size.chunked(flow.request):
                assert self.settings is not None
                flow_steps.limit_chunked_body(flow, exchange, self.settings)
        except Exception as e:  # noqa: BLE001 - any failure is answered, never forwarded
            self.head_error(flow, exchange, e)

    def head_error(self, flow: http.HTTPFlow, exchange: Exchange | None, error: Exception) -> None:
        """A failure while checking a request's head: its 500 before the body is read, or the connection closed."""
        try:
            if exchange is None:
                exchange = self.open(flow)
            self.internal_error(flow, exchange, error)
            if flow.response is not None and flow.live:
                early.answer_now(flow, exchange)
        except Exception:  # noqa: BLE001 - nothing can be answered: nothing goes through either
            flow.kill()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        exchange = self.exchanges.get(flow.id)
        if exchange is None:
            try:
                if not self.is_ollama(flow):
                    return None
                exchange = self.open(flow)  # (no requestheaders hook: a replayed flow)
                if answer := self.admit(flow, exchange):
                    respond(flow, exchange, answer)
                    exchange.early = True
            except Exception as e:  # noqa: BLE001 - any failure is answered, never forwarded
                self.head_error(flow, exchange, e)
                return None
        if flow.response is not None:
            if not exchange.early:  # answered by another addon
                del self.exchanges[flow.id]
            return None
        # Fail closed: an exception here would make mitmproxy forward the untranslated request.
        try:
            settings = self.settings
            assert settings is not None
            route = endpoints.find(exchange.route)
            endpoint = exchange.endpoint or endpoints.FALLBACK
            reply: Reply | Awaitable[Reply]
            if too_large := request_size.too_large(flow.request, settings.request_body_limit, endpoint):
                reply = too_large  # a chunked body (a declared length was checked at its headers)
            elif refused := request_size.decode(flow.request, settings.request_body_limit, endpoint):
                reply = refused  # a compressed body over the limit once decoded, or not decodable
            elif route is None:
                reply = endpoints.NOT_FOUND
            elif flow.request.method not in route.methods:
                reply = Answer(405, b"405 method not allowed", "text/plain")
            elif settings.models.warming:  # several servers, right after start: their first lists first
                return self.handle_later(flow, exchange, endpoint, settings)
            elif offload.is_large(flow.request):  # worked on in a thread: the event loop serves the others
                return self.apply_later(
                    flow, exchange, endpoint, offload.handle(endpoint, exchange, flow.request, settings)
                )
            else:
                try:
                    reply = endpoint.handle(exchange, flow.request, settings)
                except Unroutable as e:
                    reply = offload.refused(endpoint, e.refusal)
            if isinstance(reply, Answer | Forward):
                self.apply(flow, exchange, reply)
                return None
        except Exception as e:  # noqa: BLE001 - any failure is answered, never forwarded
            self.internal_error(flow, exchange, e)
            return None
        return self.apply_later(flow, exchange, endpoint, reply)  # mitmproxy awaits it

    async def apply_later(
        self, flow: http.HTTPFlow, exchange: Exchange, endpoint: Endpoint, reply: Awaitable[Reply]
    ) -> None:
        try:
            try:
                done = await reply
            except Unroutable as e:
                done = offload.refused(endpoint, e.refusal)
            self.apply(flow, exchange, done)
        except Exception as e:  # noqa: BLE001 - any failure is answered, never forwarded
            self.internal_error(flow, exchange, e)

    async def handle_later(
        self, flow: http.HTTPFlow, exchange: Exchange, endpoint: Endpoint, settings: Settings
    ) -> None:
        await settings.models.wait_first()
        try:
            try:
                reply = endpoint.handle(exchange, flow.request, settings)
            except Unroutable as e:
                reply = offload.refused(endpoint, e.refusal)
        except Exception as e:  # noqa: BLE001 - any failure is answered, never forwarded
            self.internal_error(flow, exchange, e)
            return
        if isinstance(reply, Answer | Forward):
            try:
                self.apply(flow, exchange, reply)
            except Exception as e:  # noqa: BLE001
                self.internal_error(flow, exchange, e)
        else:
            await self.apply_later(flow, exchange, endpoint, reply)

    def apply(self, flow: http.HTTPFlow, exchange: Exchange, reply: Reply) -> None:
        settings = self.settings
        assert settings is not None
        if exchange.key is not None and exchange.key.patterns:
            reply = keys.model_refusal(exchange.key, exchange.model, reply, exchange.endpoint or endpoints.FALLBACK)
        if isinstance(reply, Answer):
            respond(flow, exchange, reply)
        else:
            server = reply.target.server
            send_upstream(flow, exchange, reply, settings)
            if server.forward_client_key:
                access.forward_client_key(flow, exchange)
            exchange.forwarded_key = None  # a client key goes only to a server that forwards client keys
            if self.injector_installed:
                secrets.hide(flow, exchange)
            timeouts.drop_closed_upstreams(flow)
            self.watch.start(flow, exchange)
            self.health.begin(server.name, flow.id)
        exchange.publish(flow)

    def internal_error(self, flow: http.HTTPFlow, exchange: Exchange, error: Exception) -> None:
        """A bug (or an input no check foresaw) while handling a request: a 500 in the route's shape."""
        flow_steps.internal_error(flow, exchange, error, self.watch)

    def server_connect(self, data: fence.ServerHookData) -> None:
        """The upstream is spoken to in HTTP/1.1 only: the key goes on the wire through `WireHeaders`,
        which HTTP/2 frames would bypass (tls_start_server offers the server the client's ALPNs otherwise)."""
        settings = self.settings
        if settings is not None and data.server.address is not None:
            address = tuple(data.server.address)[:2]
            if any(address == (s.base_url.host, s.base_url.port) for s in settings.servers.servers):
                data.server.alpn_offers = (b"http/1.1",)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.get(flow.id)
        if exchange is None or not exchange.forwarded or flow.response is None or exchange.endpoint is None:
            return
        assert self.settings is not None
        flow_steps.upstream_head(flow, exchange, self.settings, self.watch)

    def response(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.pop(flow.id, None)
        if exchange is None:
            return
        if exchange.forwarded and flow.response is not None and exchange.endpoint is not None:
            settings = self.settings
            assert settings is not None
            try:
                flow_steps.answer(flow, exchange, exchange.endpoint, settings)
            except Exception as e:  # noqa: BLE001 - logged (log_internal_error), answered where nothing was sent
                flow_steps.log_internal_error(exchange, e)
                if exchange.relay is None:
                    replace_answer(
                        flow, exchange, exchange.endpoint.error(500, f"internal proxy error: {type(e).__name__}")
                    )
            self.watch.forget(flow, exchange)
            self.health.end(flow.id)
        secrets.done_with(flow, exchange)
        exchange.flow = None
        self.end(flow, exchange)

    def error(self, flow: http.HTTPFlow) -> None:
        exchange = self.exchanges.pop(flow.id, None)
        if exchange is None:
            return
        if exchange.early:  # answered from its headers, then killed: its answer is what it got
            self.end(flow, exchange)
            return
        kind = fence.failure_kind(flow.error.msg if flow.error is not None else None)
        if kind is FailureKind.REQUEST_TOO_LARGE and self.settings:
            # a chunked body crossed request_body_limit: client_buffer sent this 413 and closed
            endpoint = exchange.endpoint or endpoints.FALLBACK
            respond(flow, exchange, request_size.chunked_refusal(endpoint, self.settings.request_body_limit))
            self.end(flow, exchange)
            return
        if flow.request.timestamp_end is None:  # the client left before its request was read
            return
        if exchange.forwarded and kind is FailureKind.CLIENT_GONE:
            if relay := complete_stream(exchange):  # it hung up after the last event: a whole answer
                finish_stream(flow, exchange, relay)
                self.watch.forget(flow, exchange)
                self.health.end(flow.id)
                secrets.done_with(flow, exchange)
                exchange.flow = None
                self.end(flow, exchange, answered=True)
                return
        flow_steps.record_failure(flow, exchange, kind, self.settings, self.watch, self.health)
        secrets.done_with(flow, exchange)
        exchange.flow = None
        self.end(flow, exchange)

    def end(self, flow: http.HTTPFlow, exchange: Exchange, answered: bool = False) -> None:
        """The flow's comment, marker and log line (`flow_line.finish`), then its accounting."""
        finish(flow, exchange, answered)
        if self.on_end is not None:
            try:
                self.on_end(flow, exchange)
            except Exception:
                logger.warning("cannot count the flow in the metrics", exc_info=True)

    def update(self, flows: Sequence[Flow]) -> None:
        """Before a view shows a flow again (mitmweb marks, edits, ...): no key is in it."""
        for flow in flows:
            exchange = self.exchanges.get(flow.id)
            if exchange is not None and exchange.wire_authorization is None and isinstance(flow, http.HTTPFlow):
                secrets.forget(flow, exchange)


# The upstream connection pool (addon/pool/) comes first, so that the real upstream URL is back on a
# flow before any other hook sees its answer; it adds its connector at the end of mitmproxy's chain.
# The proxy tells it every upstream server's base URL. `ClientConnections` (addon/guard/connections.py)
# watches client connections below the requests: the descriptor limit, TLS on a plain listener,
# client_header_timeout.
_pool = pool.UpstreamPool()
_proxy = OllamaProxy(_pool)
addons: list[object] = [_pool, _proxy, accounting.Accounting(_proxy), connections.ClientConnections()]
