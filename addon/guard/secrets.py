"""Keeping keys secret: out of log lines, error answers, flow views and saved flows.

- `register(name, key)` records the configured keys (openai_api_key, ollama_api_key);
  `scrub(text)` replaces each of them by `[redacted]`.
- `LogScrubber` is a logging filter put on every handler of the root logger (mitmproxy's
  terminal log, mitmweb's event log), so no log line, ours or mitmproxy's, shows a key.
- `hide` runs when a request has been rewritten to go upstream: it takes the `Authorization`
  header out of the flow (leaving `Bearer [redacted]`) and holds it on the exchange;
  `KeyInjector`, which the addon appends at the very end of mitmproxy's addon chain, gives it
  back just before mitmproxy sends the request — only to the bytes written on the wire
  (`WireHeaders`), so that mitmweb's view, saved flows and other addons never read it, not even
  while the request waits. `forget` takes it out of the flow again once it is sent.
- `scrub_answer` runs first on an upstream answer: one that shows a key (an error that echoes
  it, a 401/403 that shows part of it) is scrubbed before the proxy turns it into an error
  message or a log line. A forwarded client key counts as a key while its request is under way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.flow import Flow

if TYPE_CHECKING:
    from addon.exchange import Exchange

REDACTED = "Bearer [redacted]"

_keys: dict[str, str] = {}  # option name → configured key
_in_flight: dict[str, str] = {}  # flow id → a forwarded client key, while its request is under way
_secrets: tuple[str, ...] = ()  # the distinct keys of both, recomputed only when they change
_secret_bytes: tuple[bytes, ...] = ()


def _refresh() -> None:
    global _secrets, _secret_bytes
    _secrets = tuple(dict.fromkeys(k for k in (*_keys.values(), *_in_flight.values()) if k and len(k) >= 4))
    _secret_bytes = tuple(k.encode() for k in _secrets)


def register(name: str, key: str) -> None:
    """Remember a configured secret (empty: forget it)."""
    if key and len(key) >= 4:
        _keys[name] = key
    else:
        _keys.pop(name, None)
    _refresh()


def hold_in_flight(flow_id: str, key: str) -> None:
    """A key that is not configured (a forwarded client key) counts as a secret while its request runs."""
    if key and key not in _secrets:
        _in_flight[flow_id] = key
        _refresh()


def release_in_flight(flow_id: str) -> None:
    if _in_flight.pop(flow_id, None) is not None:
        _refresh()


def secrets() -> tuple[str, ...]:
    return _secrets


def shows_secret(data: bytes) -> bool:
    """Whether bytes contain a key (cheap when there are none)."""
    return any(k in data for k in _secret_bytes)


def scrub(text: str, extra: tuple[str, ...] = ()) -> str:
    for key in (*_secrets, *(k for k in extra if len(k) >= 4)):
        if key in text:
            text = text.replace(key, "[redacted]")
    return text


# What upstreams print of a rejected key ("Incorrect API key provided: sk-abc***wxyz").
_KEYLIKE = re.compile(r'(provided:\s*)[^\s"\\]+?(?=\.?(?:[\s"\\]|$))|\b(?:sk|gsk)[-_][\w\-*]{3,}')


def scrub_keylike(text: str, extra: tuple[str, ...] = ()) -> str:
    """Also hide partial keys that an upstream shows in a 401/403 message."""
    return _KEYLIKE.sub(lambda m: (m.group(1) or "") + "[redacted]", scrub(text, extra))


# ---------------------------------------------------------------------------------------------
# Log lines


class LogScrubber(logging.Filter):
    """Hides every key in every log record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        if record.exc_text:  # set by the first handler that formatted the record's traceback
            record.exc_text = scrub(record.exc_text)
        if getattr(record, _SCRUBBED, False):  # every handler runs this filter: the message once is enough
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        setattr(record, _SCRUBBED, True)
        return True


_SCRUBBED = "_ollama_scrubbed"  # a record attribute: its message is clean


_scrubber = LogScrubber()


def install_log_scrubber() -> None:
    """Filter every handler of the root logger (handlers added later are covered on the next call)."""
    for handler in logging.getLogger().handlers:
        if _scrubber not in handler.filters:
            handler.addFilter(_scrubber)


def uninstall_log_scrubber() -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(_scrubber)


# ---------------------------------------------------------------------------------------------
# Flows


def hide(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """A request about to go upstream: hold its Authorization for the wire only."""
    value = flow.request.headers.get("authorization")
    if value is not None and value != REDACTED:
        exchange.wire_authorization = value
        exchange.sent_key = key = value.partition(" ")[2].strip()
        hold_in_flight(flow.id, key)
        flow.request.headers["authorization"] = REDACTED


def forget(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """The key is sent (or the flow is over): no trace of it stays in the flow."""
    exchange.wire_authorization = None
    if isinstance(flow.request.data.headers, WireHeaders):  # sent: drop the object that holds the key
        flow.request.data.headers = http.Headers(flow.request.headers.fields)
    if flow.request.headers.get("authorization", REDACTED) != REDACTED:
        flow.request.headers["authorization"] = REDACTED


def done_with(flow: http.HTTPFlow, exchange: Exchange) -> None:
    forget(flow, exchange)
    exchange.sent_key = ""
    release_in_flight(flow.id)


def scrub_answer(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """Hide keys in the upstream's answer before the proxy turns it into messages and log lines."""
    response = flow.response
    if response is None or not response.raw_content:
        return
    text = response.get_text(strict=False)
    if text is None:
        return
    extra = (exchange.sent_key,)
    cleaned = scrub_keylike(text, extra) if response.status_code in (401, 403) else scrub(text, extra)
    if cleaned != text:
        response.text = cleaned


class KeyInjector:
    """The last addon of mitmproxy's chain: gives the request being sent the held key, for the wire only.

    mitmproxy runs the `update` hook of every addon after the `request` hooks (that is when
    mitmweb's view shows the flow) and then sends the request: this is the last moment. Even then
    the key goes only into the wire form of the headers (`WireHeaders`), never into what any
    view, saved flow or addon reads.
    """

    name = "ollamakeyinjector"

    def __init__(self, exchange_of: Callable[[str], Exchange | None]) -> None:
        self.exchange_of = exchange_of  # the proxy's exchanges, by flow id

    def update(self, flows: Sequence[Flow]) -> None:
        for flow in flows:
            if not isinstance(flow, http.HTTPFlow) or (exchange := self.exchange_of(flow.id)) is None:
                continue
            value, exchange.wire_authorization = exchange.wire_authorization, None
            if value is None or flow.response is not None or flow.error is not None:
                continue
            if b"h2" in (flow.client_conn.alpn_offers or ()):
                # mitmproxy may speak HTTP/2 upstream when the client offered it, and HTTP/2 frames are
                # built from the header fields: then the key must be in them (until the answer arrives).
                flow.request.headers["authorization"] = value
            else:
                flow.request.data.headers = WireHeaders(flow.request.headers.fields, value)


def install_injector(master: object, exchange_of: Callable[[str], Exchange | None]) -> None:
    """Put the injector at the end of mitmproxy's addon chain (after mitmweb's view), once."""
    addons = master.addons  # type: ignore[attr-defined]
    existing = addons.get(KeyInjector.name)
    if existing is None:
        addons.add(KeyInjector(exchange_of))
    else:  # the script was reloaded: the injector stays at the end of the chain, serving this proxy
        existing.exchange_of = exchange_of


class WireHeaders(http.Headers):
    """Request headers that show `Authorization: Bearer [redacted]` to everything that reads them
    (views, saved flows, other addons) but put the real value on the wire.

    mitmproxy writes an HTTP/1 request head as `bytes(request.headers)`
    (`net.http.http1.assemble._assemble_request_headers`; tests/test_guard_secrets.py guards it).
    The upstream is always spoken to in HTTP/1.1 here: mitmproxy offers it no ALPN for plain-HTTP clients.
    """

    def __init__(self, fields: tuple[tuple[bytes, bytes], ...], authorization: str) -> None:
        super().__init__(fields)
        self._authorization = authorization.encode("latin-1", "replace")

    def __bytes__(self) -> bytes:
        fields = [
            (name, self._authorization if name.lower() == b"authorization" and value == REDACTED.encode() else value)
            for name, value in self.fields
        ]
        return b"".join(b"%s: %s\r\n" % field for field in fields)
