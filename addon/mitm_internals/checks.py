"""The checks: every touch of mitmproxy's internals, verified once at load (`verify`).

Where security depends on a touch the addon refuses to start (`MitmproxyChanged`, one error naming
each missing piece); where it is safe the feature is switched off with one warning (`available`).
"""

from __future__ import annotations

import enum
import hashlib
import inspect
from typing import Any

from addon.mitm_internals import private
from addon.mitm_internals.failures import MITMPROXY_TEXTS


class MitmproxyChanged(RuntimeError):
    """A mitmproxy internal the addon's security depends on is gone or changed: the addon does not start."""


class Feature(enum.Enum):
    """What is switched off, with one warning, when the internal it needs is gone."""

    FAST_DISPATCH = "fast_hook_dispatch (mitmproxy's own hook dispatch serves)"
    TRAILER_REFUSAL = "refusing HTTP/1 trailers (mitmproxy's connection layer would crash on them)"
    TLS_STREAM_END = "the final error line of a broken stream for a client that speaks TLS to the proxy"
    BODY_ACTIVITY = "a whole answer's body arriving counting as upstream activity for upstream_timeout"
    STALE_UPSTREAMS = "not reusing an upstream connection the upstream has already closed"


_off: set[Feature] | None = None  # None: not verified yet


def available(feature: Feature) -> bool:
    """Whether the internal `feature` needs passed `verify()` (run now if it has not run)."""
    if _off is None:
        verify()
    return _off is not None and feature not in _off


def _resolve(name: str) -> Any:
    """A dotted name (`_http1.Http1Server.send`) among this module's imports."""
    first, *rest = name.split(".")
    target = vars(private)[first]
    for part in rest:
        target = getattr(target, part)
    return target


def _has(name: str, *needles: str) -> str | None:
    """What `name` lacks of `needles`: `.attr` an attribute or annotated field, `(a, b` its first
    parameters, `sha256:` the start of its source's digest (the very code), anything else a text of its
    source (a call or attribute it relies on); None if nothing."""
    target = _resolve(name)
    missing = []
    for needle in needles:
        if needle.startswith("."):
            ok = hasattr(target, needle[1:]) or needle[1:] in getattr(target, "__annotations__", {})
        elif needle.startswith("("):
            ok = ", ".join(inspect.signature(target).parameters).startswith(needle[1:])
        elif needle.startswith("sha256:"):
            ok = hashlib.sha256(inspect.getsource(target).encode()).hexdigest().startswith(needle[7:])
        else:
            ok = needle in inspect.getsource(target)
        if not ok:
            missing.append(needle)
    return f"{name} no longer has {missing}" if missing else None


# Each touch: the feature switched off without it (None: the addon refuses to start), then its checks: a
# dotted name and what it must still have (see `_has`).
TOUCHES: dict[str, tuple[Feature | None, *tuple[tuple[str, ...], ...]]] = {
    "HTTP/1 helpers (net.http.http1, status_codes, url, utils.human)": (
        None,
        ("http1.expected_http_body_size", "(request, response"),
        ("http1.connection_close", "(http_version, headers"),
        ("http1.assemble_response", "(response"),
        ("url.parse", "(url"),
        ("human.parse_size", "(s"),
        ("status_codes", ".RESPONSES"),
    ),
    "the error page (_http1.make_error_response: JSON, no upstream bytes, no key)": (
        None,
        ("_http1.make_error_response", "(status_code, message"),
        ("_http1.Http1Server", "make_error_response("),
        ("HttpStream.handle_protocol_error", "HttpErrorHook(", "SendHttp(event"),
    ),
    "bounded client buffers (_http1.Http1Server._handle_event, its buffer and states)": (
        None,
        ("_http1.Http1Connection._handle_event", "self.buf += event.data"),
        ("_http1.Http1Server", ".read_headers", ".read_body", ".wait", ".done", ".passthrough"),
        ("ErrorCode", ".REQUEST_TOO_LARGE", ".GENERIC_CLIENT_ERROR"),
    ),
    "client connections (Proxyserver.connections, ConnectionHandler.transports): answers before the body "
    "is read, upstream_timeout, a killed flow writing nothing": (
        None,
        ("Proxyserver", ".connections"),
        ("server.ConnectionIO", ".handler", ".writer"),
        ("server.ConnectionHandler.__init__", "self.transports"),
        ("server.ConnectionHandler.close_connection", "handler.cancel("),
        ("_http1.Http1Server.send", "isinstance(event, ResponseProtocolError)", "CloseConnection(self.conn)"),
        ("HttpStream.check_killed", "ErrorCode.KILL"),
    ),
    "the loopback rebind (Proxyserver.servers.update)": (
        None,
        ("Proxyserver.__init__", "self.servers = Servers("),
        ("Servers.update", "(self, modes"),
    ),
    "the upstream key on the wire only (an HTTP/1.1 request head written as bytes(headers))": (
        None,
        ("assemble._assemble_request_headers", "bytes(request_data.headers)"),
        ("_http1.Http1Client.send", "assemble_request_head("),
        ("TlsConfig.tls_start_server", "if not server.alpn_offers"),
    ),
    "a TLS handshake on a plain reverse listener refused (NextLayer.layer set from the next_layer hook, a "
    "layer of the proxy's own, starts_like_tls_record)": (
        None,
        ("layer.NextLayer.__init__", "self.layer", "self.context"),
        ("layer.NextLayer.data_client", "(self"),
        ("layer.Layer", "._handle_event", ".context"),
        ("commands.SendData", "(connection, data"),
        ("commands.CloseConnection", "(connection"),
        ("starts_like_tls_record", "(d"),
        ("ReverseMode", ".scheme"),
    ),
    "mitmproxy's failure texts (FailureKind)": (None, *MITMPROXY_TEXTS),
    "the hook dispatch (addonmanager.traverse, AddonManager._iter_hooks, trigger_event)": (
        Feature.FAST_DISPATCH,
        ("addonmanager.traverse", "sha256:bad3d9f88bdf9269"),
        ("addonmanager.AddonManager._iter_hooks", "sha256:350b419ab7284091"),
        ("addonmanager.AddonManager.trigger_event", "sha256:b763c59bc4992e33"),
    ),
    "_http1.make_body_reader and h11's ChunkedReader": (
        Feature.TRAILER_REFUSAL,
        ("_http1.make_body_reader", "(expected_size"),
        ("_http1.Http1Client.read_headers", "make_body_reader(expected_size)"),
        ("ChunkedReader.__call__", "EndOfMessage(headers=", "return self(buf)"),
    ),
    "the client's TLS layer (ClientTLSLayer.tls, send_data; NextLayer.layer)": (
        Feature.TLS_STREAM_END,
        ("tls.TLSLayer.send_data", "self.tls"),
        ("layer.NextLayer.__init__", "self.layer"),
        ("server.ConnectionHandler.__init__", "self.layer = "),
    ),
    "ConnectionHandler.timeout_watchdog.last_activity": (
        Feature.BODY_ACTIVITY,
        ("server.TimeoutWatchdog", ".last_activity"),
    ),
    "an upstream connection's state before reuse (ConnectionState.CAN_READ)": (
        Feature.STALE_UPSTREAMS,
        ("HttpLayer.get_connection", "connection.connected"),
    ),
}


def verify() -> list[str]:
    """Check every touch; the warnings for features switched off. Raises `MitmproxyChanged` when a
    touch security depends on is broken (then nothing of the addon may run)."""
    if private._import_error is not None:
        raise MitmproxyChanged(f"mitmproxy changed: {private._import_error}; the proxy needs mitmproxy 12.3.1")
    global _off
    refused, warnings, off = [], [], set()
    for name, (feature, *checks) in TOUCHES.items():
        problems = []
        for check in checks:
            try:
                problems.append(_has(*check))
            except Exception as e:  # noqa: BLE001 - a check that cannot run is a failed check
                problems.append(f"{check[0]}: {type(e).__name__}: {e}")
        if not (problem := "; ".join(p for p in problems if p)):
            continue
        if feature is None:
            refused.append(f"{name}: {problem}")
        else:
            off.add(feature)
            warnings.append(f"mitmproxy changed ({name}: {problem}): switched off: {feature.value}")
    _off = off
    if refused:
        raise MitmproxyChanged(
            "the proxy does not start: mitmproxy's internals it relies on for security changed "
            "(docs/mitmproxy-internals.md; the proxy needs mitmproxy 12.3.1): " + " | ".join(refused)
        )
    return warnings
