"""The mitmproxy addon: its hooks decide which flows are Ollama requests and route them.

Run it with `mitmdump -s addon/proxy.py` (see README.md). The work is done elsewhere:
`addon.routes` handles each endpoint, `addon.translate` and `addon.stream` convert bodies.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import NamedTuple


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

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ReverseMode

from addon import access, annotate, contentviews, discovery, embeddings, errorpage, openai_routes, redact, routes, timeouts
from addon import pool
from addon.options import OPTIONS, Settings

logger = logging.getLogger("ollama_proxy")
OPTION_NAMES = frozenset(name for name, *_ in OPTIONS) | {"save_stream_file"}  # it decides body_view_limit "auto"


class Route(NamedTuple):
    methods: frozenset[str]
    handler: Callable[[http.HTTPFlow, Settings], Awaitable[None] | None]  # async for routes that look up models


def _route(methods: str, handler: Callable[[http.HTTPFlow, Settings], Awaitable[None] | None]) -> Route:
    return Route(frozenset(methods.split()), handler)


ROUTES: dict[str, Route] = {
    "/": _route("GET HEAD", routes.root),
    "/api/version": _route("GET HEAD", routes.version),
    "/api/chat": _route("POST", routes.chat),
    "/api/generate": _route("POST", routes.generate),
    "/api/embed": _route("POST", embeddings.embed),
    "/api/embeddings": _route("POST", embeddings.embeddings),
    "/api/tags": _route("GET HEAD", discovery.tags),
    "/api/show": _route("POST", discovery.show),
    "/api/ps": _route("GET HEAD", discovery.ps),
    "/api/pull": _route("POST", discovery.pull),
    "/api/push": _route("POST", discovery.unmanaged),
    "/api/create": _route("POST", discovery.unmanaged),
    "/api/copy": _route("POST", discovery.unmanaged),
    "/api/delete": _route("DELETE", discovery.unmanaged),
    "/v1/chat/completions": _route("POST", openai_routes.forward),
    "/v1/completions": _route("POST", openai_routes.forward),
    "/v1/embeddings": _route("POST", openai_routes.forward),
    "/v1/models": _route("GET HEAD", openai_routes.models),
}
# Paths with a variable last part, by prefix.
PREFIX_ROUTES: dict[str, Route] = {
    "/api/blobs/": _route("HEAD POST", discovery.unmanaged),
    "/v1/models/": _route("GET HEAD", openai_routes.model),
}
# Endpoint groups whose upstream answers another module converts, by flow.metadata[META]["kind"].
RESPONSE_MODULES = {"embed": embeddings, "openai": openai_routes}


def find_route(path: str) -> Route | None:
    if (route := ROUTES.get(path)) is not None:
        return route
    return next((r for prefix, r in PREFIX_ROUTES.items() if path.startswith(prefix) and len(path) > len(prefix)), None)


class OllamaProxy:
    def __init__(self) -> None:
        self.settings: Settings | None = None

    def load(self, loader: Loader) -> None:
        for name, typespec, default, help_text in OPTIONS:
            loader.add_option(name, typespec, default, help_text)
        errorpage.install()
        contentviews.register()

    def configure(self, updated: set[str]) -> None:
        if self.settings is None or updated & OPTION_NAMES:
            self.settings = Settings.from_options(ctx.options)
        # Requests are rewritten or answered before any upstream connection is needed; "eager"
        # would first connect to the reverse target and fail the client when it is absent.
        if "connection_strategy" in ctx.options and ctx.options.connection_strategy != "lazy":
            ctx.options.connection_strategy = "lazy"

    def done(self) -> None:
        errorpage.uninstall()
        contentviews.unregister()

    def is_ollama(self, flow: http.HTTPFlow) -> bool:
        if isinstance(flow.client_conn.proxy_mode, ReverseMode):
            return True
        assert self.settings is not None
        return self.settings.is_ollama_host(flow.request.host, flow.request.port)

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response is not None or not self.is_ollama(flow):
            return
        assert self.settings is not None
        path = flow.request.path.split("?", 1)[0]
        flow.metadata[routes.META] = {"method": flow.request.method, "route": path}
        route = find_route(path)
        if route is None:
            routes.not_found(flow)
        elif flow.request.method not in route.methods:
            routes.method_not_allowed(flow)
        else:
            return route.handler(flow, self.settings)  # mitmproxy awaits what an async handler returns
        return None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if meta := flow.metadata.get(routes.META):
            assert self.settings is not None
            routes.keep_upstream_head(flow, self.settings)
            RESPONSE_MODULES.get(meta.get("kind"), routes).response_headers(flow, self.settings)

    def response(self, flow: http.HTTPFlow) -> None:
        if meta := flow.metadata.get(routes.META):
            assert self.settings is not None
            RESPONSE_MODULES.get(meta.get("kind"), routes).response(flow, self.settings)
            routes.forget_secrets(flow)
            annotate.finish(flow, meta)

    def error(self, flow: http.HTTPFlow) -> None:
        if meta := flow.metadata.get(routes.META):
            meta.setdefault("error", flow.error.msg if flow.error else "failed")
            routes.forget_secrets(flow)
            annotate.finish(flow, meta)


addons = [OllamaProxy()]

# Around the proxy: the key check before it; after it, the client-key forwarder, the key hider and
# the upstream watch (timeouts, broken streams). See addon/access.py, redact.py, timeouts.py.
_gate = access.AccessGate(addons[0].is_ollama)
_hider = redact.KeyHider()
_watch = timeouts.UpstreamWatch()
addons = [_gate, redact.AnswerScrubber(_hider), timeouts.ErrorFirst(_watch), *addons,
          access.ClientKeyForwarder(_gate), _hider, _watch]
# The upstream connection pool (addon/pool.py): first, so that the real upstream URL is back on a
# flow before any other hook sees its answer; it adds its connector at the end of mitmproxy's chain.
addons.insert(0, pool.UpstreamPool())
