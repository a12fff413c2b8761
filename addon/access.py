"""Who may use the proxy: a client key checked in constant time, loopback by default, and the
option to forward each client's own key upstream instead of the configured one.

Two small addons around `OllamaProxy` in the addon chain:
- `AccessGate` runs before it: it answers 401 to an Ollama request without the right
  `Authorization: Bearer <ollama_api_key>` (what the Ollama SDKs send when OLLAMA_API_KEY is
  set), then removes the client's Authorization header from the flow so that no view or saved
  flow keeps it; with `forward_client_key` it holds the client's header for the forwarder.
- `ClientKeyForwarder` runs after it: for a request the proxy rewrote to go upstream, it puts
  the client's own header in place of the configured key.
Held headers live in a dict keyed by flow id on the gate, never in `flow.metadata` (saved flows).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable

from mitmproxy import ctx, http
from mitmproxy.proxy import mode_specs

from addon import redact

logger = logging.getLogger("ollama_proxy")

META = "ollama"  # routes.META: set on flows the proxy sends upstream

# The options this module reads (declared in addon.options.OPTIONS).
OPTION_NAMES = frozenset({"ollama_api_key", "forward_client_key"})


def bearer_of(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header ("" for Copilot's empty bearer), else None."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip()


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the client's key with the configured one."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape"))


def unauthorized(flow: http.HTTPFlow, message: str) -> None:
    flow.response = http.Response.make(
        401,
        json.dumps({"error": message}).encode(),
        {"Content-Type": "application/json; charset=utf-8", "WWW-Authenticate": 'Bearer realm="ollama"'},
    )
    path = flow.request.path.split("?", 1)[0]
    flow.metadata[META] = {"method": flow.request.method, "route": path, "error": message}


class AccessGate:
    """Checks the client's key on every Ollama request; holds it when it is to be forwarded."""

    def __init__(self, is_ollama: Callable[[http.HTTPFlow], bool]) -> None:
        self.is_ollama = is_ollama
        self.key = ""
        self.forward = False
        self.rebind = False
        self.presented: dict[str, str] = {}  # flow id → the client's Authorization header
        self.held: dict[str, str] = {}  # flow id → the client's bearer, to be forwarded upstream

    def configure(self, updated: set[str]) -> None:
        if "ollama_api_key" in ctx.options:
            self.key = ctx.options.ollama_api_key.strip()
            self.forward = ctx.options.forward_client_key
            redact.register("ollama_api_key", self.key)
        # Listen on loopback unless told otherwise: mitmproxy's default "" means every interface.
        if "listen_host" in ctx.options and ctx.options.listen_host == "":
            ctx.options.listen_host = "127.0.0.1"
            self.rebind = True

    async def running(self) -> None:
        """mitmproxy may have started listening before the script set listen_host: listen again."""
        if not self.rebind:
            return
        self.rebind = False
        proxyserver = ctx.master.addons.get("proxyserver")
        if proxyserver is None or not len(proxyserver.servers):
            return
        modes = [mode_specs.ProxyMode.parse(m) for m in ctx.options.mode]
        await proxyserver.servers.update([])
        await proxyserver.servers.update(modes)
        logger.info("listening on loopback only (set listen_host to choose another address)")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Take the client's key out of the flow before any view (mitmweb adds flows here) sees it."""
        if not self.is_ollama(flow):
            return
        header = flow.request.headers.get("authorization")
        if header is not None:
            self.presented[flow.id] = header
            token = bearer_of(header)
            flow.request.headers["authorization"] = "Bearer [redacted]" if token else "[redacted]"

    def request(self, flow: http.HTTPFlow) -> None:
        header = self.presented.pop(flow.id, None)
        if flow.response is not None or not self.is_ollama(flow):
            return
        token = bearer_of(header) if header is not None else None
        if self.key and not key_matches(token, self.key):
            unauthorized(
                flow,
                "unauthorized: this proxy requires an API key (Authorization: Bearer <key>, OLLAMA_API_KEY)"
                if not token
                else "unauthorized: invalid API key",
            )
        elif self.forward and token:
            self.held[flow.id] = f"Bearer {token}"

    def error(self, flow: http.HTTPFlow) -> None:
        self.presented.pop(flow.id, None)
        self.held.pop(flow.id, None)


class ClientKeyForwarder:
    """Sends the client's own key upstream (forward_client_key) in place of the configured one."""

    def __init__(self, gate: AccessGate) -> None:
        self.gate = gate

    def request(self, flow: http.HTTPFlow) -> None:
        held = self.gate.held.pop(flow.id, None)
        if not self.gate.forward or flow.response is not None or "upstream_route" not in flow.metadata.get(META, {}):
            return
        if held is None:
            flow.request.headers.pop("authorization", None)
        else:
            flow.request.headers["authorization"] = held
