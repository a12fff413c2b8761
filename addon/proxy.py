"""The mitmproxy addon: its hooks decide which flows are Ollama requests and route them.

Run it with `mitmdump -s addon/proxy.py` (see README.md). The work is done elsewhere:
`addon.routes` handles each endpoint, `addon.translate` and `addon.stream` convert bodies.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import NamedTuple

if __package__ in (None, ""):  # loaded by mitmproxy as a script: make the `addon` package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mitmproxy import ctx, http
from mitmproxy.addonmanager import Loader
from mitmproxy.proxy.mode_specs import ReverseMode

from addon import annotate, contentviews, errorpage, routes
from addon.options import OPTIONS, Settings

logger = logging.getLogger("ollama_proxy")
OPTION_NAMES = frozenset(name for name, *_ in OPTIONS)


class Route(NamedTuple):
    methods: frozenset[str]
    handler: Callable[[http.HTTPFlow, Settings], None]


def _route(methods: str, handler: Callable[[http.HTTPFlow, Settings], None]) -> Route:
    return Route(frozenset(methods.split()), handler)


ROUTES: dict[str, Route] = {
    "/": _route("GET HEAD", routes.root),
    "/api/version": _route("GET HEAD", routes.version),
    "/api/chat": _route("POST", routes.chat),
    "/api/generate": _route("POST", routes.generate),
}


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

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or not self.is_ollama(flow):
            return
        assert self.settings is not None
        path = flow.request.path.split("?", 1)[0]
        flow.metadata[routes.META] = {"method": flow.request.method, "route": path}
        route = ROUTES.get(path)
        if route is None:
            routes.not_found(flow)
        elif flow.request.method not in route.methods:
            routes.method_not_allowed(flow)
        else:
            route.handler(flow, self.settings)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if routes.META in flow.metadata:
            assert self.settings is not None
            routes.response_headers(flow, self.settings)

    def response(self, flow: http.HTTPFlow) -> None:
        if meta := flow.metadata.get(routes.META):
            assert self.settings is not None
            routes.response(flow, self.settings)
            routes.forget_secrets(flow)
            annotate.finish(flow, meta)

    def error(self, flow: http.HTTPFlow) -> None:
        if meta := flow.metadata.get(routes.META):
            meta.setdefault("error", flow.error.msg if flow.error else "failed")
            routes.forget_secrets(flow)
            annotate.finish(flow, meta)


addons = [OllamaProxy()]
