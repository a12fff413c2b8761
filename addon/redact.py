"""Keeping keys secret: out of log lines, error answers, flow views and saved flows.

- `register(name, key)` records the configured keys (openai_api_key, ollama_api_key);
  `scrub(text)` replaces each of them by `[redacted]`.
- `LogScrubber` is a logging filter put on every handler of the root logger (mitmproxy's
  terminal log, mitmweb's event log), so no log line, ours or mitmproxy's, shows a key.
- `KeyHider` runs right after `OllamaProxy` in the script: for a request going upstream it takes
  the `Authorization` header out of the flow (leaving `Bearer [redacted]`) and `KeyInjector`,
  which the addon appends at the very end of mitmproxy's addon chain, puts it back just before
  mitmproxy sends the request. mitmweb's view, the intercept and the flow list, which run in
  between, see only the redacted header. Answers whose body contains a key (an upstream error
  that echoes it, a 401/403 that shows part of it) are scrubbed in `response`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from mitmproxy import http
from mitmproxy.flow import Flow

META = "ollama"
REDACTED = "Bearer [redacted]"

_keys: dict[str, str] = {}


def register(name: str, key: str) -> None:
    """Remember a configured secret (empty: forget it)."""
    if key and len(key) >= 4:
        _keys[name] = key
    else:
        _keys.pop(name, None)


_in_flight: dict[str, str] = {}  # flow id → a forwarded client key, while its request is under way


def secrets() -> list[str]:
    return [k for k in (*_keys.values(), *_in_flight.values()) if k and len(k) >= 4]


def scrub(text: str, extra: tuple[str, ...] = ()) -> str:
    for key in (*secrets(), *(k for k in extra if len(k) >= 4)):
        if key in text:
            text = text.replace(key, "[redacted]")
    return text


# What upstreams print of a rejected key ("Incorrect API key provided: sk-abc***wxyz").
_KEYLIKE = re.compile(r'(provided:\s*)[^\s"\\]+?(?=\.?(?:[\s"\\]|$))|\b(?:sk|gsk)[-_][\w\-*]{3,}')


def scrub_keylike(text: str, extra: tuple[str, ...] = ()) -> str:
    """Also hide partial keys that an upstream shows in a 401/403 message."""
    return _KEYLIKE.sub(lambda m: (m.group(1) or "") + "[redacted]", scrub(text, extra))


class LogScrubber(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not secrets():
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_scrubber = LogScrubber()


def install_log_scrubber() -> None:
    """Filter every handler of the root logger (handlers added later are covered on the next call)."""
    for handler in logging.getLogger().handlers:
        if _scrubber not in handler.filters:
            handler.addFilter(_scrubber)


def uninstall_log_scrubber() -> None:
    for handler in logging.getLogger().handlers:
        handler.removeFilter(_scrubber)


class KeyHider:
    """In the script, after OllamaProxy: hold the upstream Authorization until the very last moment."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.sent: dict[str, str] = {}  # flow id → the key sent upstream (a forwarded client key is not registered)
        self.injector_installed = False

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if "openai_api_key" in ctx.options:
            from addon.options import upstream_key

            register("openai_api_key", upstream_key(ctx.options))
        install_log_scrubber()

    def running(self) -> None:
        install_log_scrubber()
        from mitmproxy import ctx

        if not self.injector_installed and ctx.master.addons.get("ollamakeyinjector") is None:
            ctx.master.addons.add(KeyInjector(self))
        self.injector_installed = True

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.injector_installed or flow.response is not None or "upstream_route" not in flow.metadata.get(META, {}):
            return
        value = flow.request.headers.get("authorization")
        if value is not None and value != REDACTED:
            self.held[flow.id] = value
            self.sent[flow.id] = _in_flight[flow.id] = value.partition(" ")[2].strip()
            flow.request.headers["authorization"] = REDACTED

    def update(self, flows: Sequence[Flow]) -> None:
        """Before a view shows a flow again (mitmweb marks, edits, ...): the key is never in it."""
        for flow in flows:
            if isinstance(flow, http.HTTPFlow) and flow.id not in self.held:
                self.forget(flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.forget(flow)

    def scrub_answer(self, flow: http.HTTPFlow) -> None:
        """Hide keys in the upstream's answer before the proxy turns it into messages and log lines."""
        extra = (self.sent.get(flow.id, ""),)
        response = flow.response
        if response is None or META not in flow.metadata or not response.raw_content:
            return
        text = response.get_text(strict=False)
        if text is None:
            return
        cleaned = scrub_keylike(text, extra) if response.status_code in (401, 403) else scrub(text, extra)
        if cleaned != text:
            response.text = cleaned

    def response(self, flow: http.HTTPFlow) -> None:
        self.forget(flow)
        self.done_with(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self.forget(flow)
        self.done_with(flow)

    def done_with(self, flow: http.HTTPFlow) -> None:
        self.sent.pop(flow.id, None)
        _in_flight.pop(flow.id, None)

    def forget(self, flow: http.HTTPFlow) -> None:
        self.held.pop(flow.id, None)
        if META in flow.metadata and "authorization" in flow.request.headers:
            flow.request.headers["authorization"] = REDACTED


class AnswerScrubber:
    """Before OllamaProxy in the script: the upstream's answer is scrubbed before anything reads it."""

    def __init__(self, hider: KeyHider) -> None:
        self.hider = hider

    def response(self, flow: http.HTTPFlow) -> None:
        self.hider.scrub_answer(flow)


class KeyInjector:
    """The last addon of mitmproxy's chain: puts the held key back into the request being sent.

    mitmproxy runs the `update` hook of every addon after the `request` hooks (that is when
    mitmweb's view shows the flow) and then sends the request: this is the last moment.
    """

    name = "ollamakeyinjector"

    def __init__(self, hider: KeyHider) -> None:
        self.hider = hider

    def update(self, flows: Sequence[Flow]) -> None:
        for flow in flows:
            if isinstance(flow, http.HTTPFlow) and (value := self.hider.held.pop(flow.id, None)) is not None:
                if flow.response is None and flow.error is None:
                    flow.request.headers["authorization"] = value
