"""Keeping keys secret: out of log lines, answers, flow views and saved flows, in every encoding.

- `register(name, key)` records the configured keys (openai_api_key, ollama_api_key): they are
  secrets everywhere. Each is hidden in every form an echo can give it (`forms`: plain,
  JSON-escaped, URL- and form-encoded, hex, base64 and base64url at the three alignments it can
  have inside a longer text), found by one precompiled pattern: `scrub(text)` and
  `scrub_bytes(data)` replace each by `[redacted]`, `shows_secret(data)` tells whether there is one
  (`FramedScan`: the same answer for a line of fixed parts around one JSON string, from a scan
  of that string alone when the fixed parts cannot show a key).
- A forwarded client key (`forward_client_key`) is a secret of *its* flow only: hidden in what the
  proxy writes about that flow (its log line, comment, metadata, error messages: `extra=`),
  never in answers (the client knows its own key) and never in other flows. There is no global
  list of client keys: one client's key can never change another client's answer.
- `LogScrubber` is a logging filter put on every handler of the root logger (mitmproxy's
  terminal log, mitmweb's event log), so no log line, ours or mitmproxy's, shows a key; the one
  line of mitmproxy's that quotes raw upstream bytes is replaced by a fixed text.
- `hide` runs when a request has been rewritten to go upstream: it takes the `Authorization`
  header out of the flow (leaving `Bearer [redacted]`) and holds it on the exchange;
  `KeyInjector`, which the addon appends at the very end of mitmproxy's addon chain, gives it
  back just before mitmproxy sends the request — only to the bytes written on the wire
  (`WireHeaders`), so that mitmweb's view, saved flows and other addons never read it, not even
  while the request waits. `forget` takes it out of the flow again once it is sent.
- `scrub_answer` runs first on an upstream answer: one that shows a configured key (an error that
  echoes it, a 401/403 that shows part of it) is scrubbed before the proxy turns it into an
  answer, an error message or a log line.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from mitmproxy import http
from mitmproxy.flow import Flow

if TYPE_CHECKING:
    from addon.exchange import Exchange

REDACTED = "Bearer [redacted]"
MIN_LENGTH = 4  # shorter "keys" are not scanned for (every text would match)
MIN_ENCODED = 8  # keys at least this long are also hidden hex- and base64-encoded

_keys: dict[str, str] = {}  # option name → configured key
_secrets: tuple[str, ...] = ()  # every form of every configured key, longest first
_pattern: re.Pattern[str] | None = None
_pattern_bytes: re.Pattern[bytes] | None = None


def forms(key: str) -> list[str]:
    """The texts that show `key`: plain, JSON-escaped, URL-encoded (upper and lower case), form-encoded,
    hex, and (for keys of MIN_ENCODED characters or more) base64 and base64url at each of the three
    alignments the key can have inside a longer encoded text (the characters that depend on the key alone)."""
    raw = key.encode("utf-8", "surrogateescape")
    found = [key, key.replace("/", "\\/"), quote(key, safe=""), quote_plus(key)]
    found.append(re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), found[2]))
    if len(raw) >= MIN_ENCODED:
        found += [raw.hex(), raw.hex().upper()]
        for offset in range(3):
            start, end = (offset * 8 + 5) // 6, ((offset + len(raw)) * 8) // 6
            for encode in (base64.b64encode, base64.urlsafe_b64encode):
                found.append(encode(b"\0" * offset + raw)[start:end].decode())
    return sorted(dict.fromkeys(f for f in found if len(f) >= MIN_LENGTH), key=len, reverse=True)


def _compile(texts: Iterable[str]) -> re.Pattern[str] | None:
    texts = list(texts)
    return re.compile("|".join(map(re.escape, texts))) if texts else None


def _refresh() -> None:
    global _secrets, _pattern, _pattern_bytes
    _secrets = tuple(sorted({f for key in _keys.values() for f in forms(key)}, key=len, reverse=True))
    _pattern = _compile(_secrets)
    _pattern_bytes = (
        re.compile(b"|".join(re.escape(s.encode("utf-8", "surrogateescape")) for s in _secrets)) if _secrets else None
    )


def register(name: str, key: str) -> None:
    """Remember a configured secret (empty: forget it)."""
    if key and len(key) >= MIN_LENGTH:
        _keys[name] = key
    else:
        _keys.pop(name, None)
    _refresh()


def secrets() -> tuple[str, ...]:
    """Every form of every configured key."""
    return _secrets


def own_secret(key: str) -> bool:
    """Whether `key` (a key sent upstream) is a flow's own secret: long enough to scan for, and not configured."""
    return len(key) >= MIN_LENGTH and key not in _keys.values()


def shows_secret(data: bytes) -> bool:
    """Whether bytes show a configured key in any form (one scan; nothing to do when there are none)."""
    return _pattern_bytes is not None and _pattern_bytes.search(data) is not None


class FramedScan:
    """`shows_secret` for the lines of one stream that are fixed parts around one JSON string: the fixed parts
    (`frame`: bytes that are the same in every line, and a variable part made only of bytes of `alphabet`, as a
    timestamp) and the string are each separated from the next by a `"` (a part ends or starts with one).

    When no form of any key has a `"`, none is made only of `alphabet` bytes, and no fixed part shows one, a
    key's form in such a line can only lie inside the string: a scan of the string's bytes (`span`) then
    answers for the whole line, exactly. Otherwise (checked once per set of keys) the whole line is scanned."""

    __slots__ = ("alphabet", "fixed", "quiet_for", "shortest")

    def __init__(self, fixed: Sequence[bytes], alphabet: bytes) -> None:
        self.fixed = tuple(fixed)
        self.alphabet = alphabet
        self.quiet_for: re.Pattern[bytes] | None = None  # the pattern for which the frame shows no form
        self.shortest = 0  # the bytes of the shortest form of a key (a shorter string holds none)

    def shows(self, data: bytes, span: tuple[int, int]) -> bool:
        """`shows_secret(data)`, for a line of this frame whose string is `data[span[0]:span[1]]`."""
        pattern = _pattern_bytes
        if pattern is None:
            return False
        if pattern is not self.quiet_for:
            if not self._quiet(pattern):
                return pattern.search(data) is not None
            self.quiet_for = pattern
        start, end = span
        return end - start >= self.shortest and pattern.search(data, start, end) is not None

    def _quiet(self, pattern: re.Pattern[bytes]) -> bool:
        shown = [form.encode("utf-8", "surrogateescape") for form in _secrets]
        self.shortest = min(map(len, shown), default=0)
        return not any(b'"' in form or not form.strip(self.alphabet) for form in shown) and not any(
            pattern.search(part) for part in self.fixed
        )


def scrub_bytes(data: bytes) -> bytes:
    """Bytes with every form of every configured key replaced by `[redacted]`."""
    return _pattern_bytes.sub(b"[redacted]", data) if _pattern_bytes is not None else data


def scrub(text: str, extra: tuple[str, ...] = ()) -> str:
    """Text with every form of every configured key, and of the `extra` keys of one flow, replaced."""
    if _pattern is not None:
        text = _pattern.sub("[redacted]", text)
    for key in extra:
        if own_secret(key):
            own = _compile(forms(key))
            assert own is not None
            text = own.sub("[redacted]", text)
    return text


# What upstreams print of a rejected key ("Incorrect API key provided: sk-abc***wxyz").
_KEYLIKE = re.compile(r'(provided:\s*)[^\s"\\]+?(?=\.?(?:[\s"\\]|$))|\b(?:sk|gsk)[-_][\w\-*]{3,}')


def scrub_keylike(text: str, extra: tuple[str, ...] = ()) -> str:
    """Also hide partial keys that an upstream shows in a 401/403 message."""
    return _KEYLIKE.sub(lambda m: (m.group(1) or "") + "[redacted]", scrub(text, extra))


# ---------------------------------------------------------------------------------------------
# Log lines


# mitmproxy's log lines that quote raw upstream bytes (a header echoing a key, in any encoding).
_QUOTES_UPSTREAM = ("Unexpected data from server:",)
QUOTE_REPLACED = "Unexpected data from server after its answer (not shown: it may echo secrets); connection closed."


class LogScrubber(logging.Filter):
    """Hides every configured key, in every form, in every log record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_text and _pattern is not None:  # set by the first handler that formatted a traceback
            record.exc_text = scrub(record.exc_text)
        if getattr(record, _SCRUBBED, False):  # every handler runs this filter: the message once is enough
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
            return True
        setattr(record, _SCRUBBED, True)
        if message.startswith(_QUOTES_UPSTREAM):
            record.msg, record.args = QUOTE_REPLACED, None
            return True
        if _pattern is None:
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_SCRUBBED = "_ollama_scrubbed"  # a record attribute: its message has been through the filter


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
        exchange.sent_key = value.partition(" ")[2].strip()
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


def scrub_answer(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """Hide configured keys in the upstream's (decoded) answer before the proxy turns it into an answer,
    messages and log lines. A forwarded client key is left in: the answer goes to that client."""
    response = flow.response
    if response is None or not response.raw_content:
        return
    if response.status_code in (401, 403):
        text = response.get_text(strict=False)
        if text is not None and (cleaned := scrub_keylike(text)) != text:
            response.text = cleaned
    elif shows_secret(response.raw_content):
        response.raw_content = scrub_bytes(response.raw_content)


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
            # The upstream is always spoken to in HTTP/1.1 (`exchange.send_upstream` makes the request an
            # HTTP/1.1 one, `OllamaProxy.server_connect` offers the upstream no h2): the head is bytes(headers).
            put_on_wire(flow.request, authorization=value)


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
    (views, saved flows, other addons) but put the real value on the wire, and add wire-only
    header lines (`extra`: the pool's token) that nothing but the wire ever sees.

    mitmproxy writes an HTTP/1 request head as `bytes(request.headers)`
    (checked at load by the fence, `addon.mitm_internals`; tests/test_guard_secrets.py too).
    The upstream is always spoken to in HTTP/1.1 here: requests from HTTP/2 clients are made HTTP/1.1
    requests before they go (mitmproxy would otherwise convert a copy, which loses this class), and the
    upstream's TLS handshake offers only `http/1.1`.
    """

    def __init__(
        self, fields: tuple[tuple[bytes, bytes], ...], authorization: str | None, extra: tuple[bytes, ...] = ()
    ) -> None:
        super().__init__(fields)
        self.authorization = None if authorization is None else authorization.encode("latin-1", "replace")
        self.extra = extra  # whole header lines, b"name: value\r\n"

    def __bytes__(self) -> bytes:
        wire = self.authorization
        fields = [
            (
                name,
                wire if wire is not None and name.lower() == b"authorization" and value == REDACTED.encode() else value,
            )
            for name, value in self.fields
        ]
        return b"".join(b"%s: %s\r\n" % field for field in fields) + b"".join(self.extra)


def put_on_wire(request: http.Request, authorization: str | None = None, extra: tuple[bytes, ...] = ()) -> None:
    """Give the request's wire form the held `authorization` and/or `extra` header lines, keeping what an
    earlier call gave it (the key injector and the pool's connector each add theirs, in either order)."""
    current = request.headers
    if isinstance(current, WireHeaders):
        held = current.authorization.decode("latin-1") if current.authorization is not None else None
        authorization = authorization if authorization is not None else held
        extra = (*current.extra, *extra)
    request.headers = WireHeaders(current.fields, authorization, extra)
