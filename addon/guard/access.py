"""Who may use the proxy: a client key checked in constant time, loopback by default, and the
option to forward each client's own key upstream instead of the configured one.

The steps, in the order `addon.proxy` calls them:
- `take_client_key` (requestheaders): the client's `Authorization` and `x-api-key` headers leave
  the flow before any view (mitmweb adds flows here) sees them; the exchange holds the key.
- `refusal` (request): with `ollama_api_key` or the catalog's `[keys.NAME]` tables set
  (`guard.keys`), a request without one of the keys as `Authorization: Bearer <key>` (what the
  Ollama SDKs send when OLLAMA_API_KEY is set) or `x-api-key: <key>` (what the Anthropic SDK and
  Claude Code send) gets a 401 in its family's shape, a key over its per-minute limits a 429 with
  `Retry-After`; the exchange notes the key (its name goes into the record and the metrics).
  When some server forwards client keys (`forward_client_key`, the option or a `[servers.NAME]`
  table's), the client's key is kept for the next step.
- `forward_client_key` (request, once the flow is rewritten to go upstream, and only when its
  server forwards client keys): the client's own key in place of the server's (none at all for
  a client without one). Any other server gets its own key, never the client's.
- `listen_on_loopback` / `rebind`: mitmproxy's default listen host "" means every interface.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from addon import mitm_internals as fence

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint
    from addon.exchange import Exchange
    from addon.reply import Answer
    from addon.settings import Settings

logger = logging.getLogger("ollama_proxy")

REALM = 'Bearer realm="ollama"'


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
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def take_client_key(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """Take the client's key out of the flow before any view sees it; the exchange holds it.

    `Authorization: Bearer <key>` wins; else `x-api-key: <key>` (the Anthropic SDK's header) is
    held as the bearer it stands for. Neither header ever goes upstream (`send_upstream` writes
    the upstream request's headers afresh).
    """
    headers = flow.request.headers
    header = headers.get("authorization")
    api_key = headers.get("x-api-key")
    if header is not None:
        exchange.client_authorization = header
        headers["authorization"] = "Bearer [redacted]" if bearer_of(header) else "[redacted]"
    if api_key is not None:
        if header is None or bearer_of(header) is None:
            exchange.client_authorization = f"Bearer {api_key.strip()}"
        headers["x-api-key"] = "[redacted]"


def refusal(exchange: Exchange, settings: Settings, endpoint: Endpoint) -> Answer | None:
    """A 401 for a client without one of the configured keys (`ollama_api_key`, the catalog's
    `[keys.NAME]`), a 429 for a key over its limits (None: let it in). The exchange notes the key."""
    header, exchange.client_authorization = exchange.client_authorization, None
    token = bearer_of(header) if header is not None else None
    if settings.keys:
        key = settings.keys.identify(token)
        if key is None:
            message = (
                "unauthorized: this proxy requires an API key (Authorization: Bearer <key>, OLLAMA_API_KEY; or x-api-key)"
                if not token
                else "unauthorized: invalid API key"
            )
            return dataclasses.replace(endpoint.error(401, message), headers=(("WWW-Authenticate", REALM),))
        exchange.key = key
        if over := key.admit():
            limit, wait = over
            answer = endpoint.error(429, f"rate limited: key {key.name} is over its {limit}; retry in {wait} s")
            return dataclasses.replace(answer, headers=(*answer.headers, ("Retry-After", str(wait))))
    if settings.servers.any_forwards_client_key and token:  # held for a server that forwards client keys
        exchange.forwarded_key = f"Bearer {token}"
    return None


def forward_client_key(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """Send the client's own key upstream (forward_client_key) in place of the configured one."""
    if exchange.forwarded_key is None:
        flow.request.headers.pop("authorization", None)
    else:
        flow.request.headers["authorization"] = exchange.forwarded_key
        exchange.forwarded_key = None


def listen_on_loopback(options: Any) -> bool:
    """Make mitmproxy listen on loopback unless told otherwise; True if the option was changed."""
    if "listen_host" in options and options.listen_host == "":
        options.listen_host = "127.0.0.1"
        return True
    return False


async def rebind(master: Any) -> None:
    """mitmproxy may have started listening before the script set listen_host: listen again."""
    await fence.rebind_listeners(master)  # raises MitmproxyChanged when it cannot
    logger.info("listening on loopback only (set listen_host to choose another address)")
