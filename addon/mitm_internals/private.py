"""mitmproxy's private modules (and h11, its HTTP/1 parser), imported once for the fence.

Only the package addon/mitm_internals/ imports this module. When one of these imports fails,
nothing is raised here: `checks.verify()` reports `_import_error`, and the addon refuses to start.
The public aliases below (`assemble_response`, `parse_size`, ...) are re-exported by the package.
"""

from __future__ import annotations

from mitmproxy import addonmanager

_import_error: ImportError | None = None
try:
    import h11
    from h11._readers import ChunkedReader
    from mitmproxy.addons.proxyserver import Proxyserver, Servers
    from mitmproxy.addons.tlsconfig import TlsConfig
    from mitmproxy.net.http import http1, status_codes, url
    from mitmproxy.net.http.http1 import assemble
    from mitmproxy.net.tls import starts_like_tls_record
    from mitmproxy.proxy import commands, events, layer, server
    from mitmproxy.proxy.layers import tls
    from mitmproxy.proxy.layers.http import HttpLayer, HttpStream, _http1
    from mitmproxy.proxy.layers.http._base import ReceiveHttp
    from mitmproxy.proxy.layers.http._events import ErrorCode, RequestData, RequestProtocolError, ResponseData
    from mitmproxy.proxy.mode_specs import ProxyMode, ReverseMode
    from mitmproxy.proxy.server_hooks import ServerConnectionHookData
    from mitmproxy.utils import human

    ServerHookData = ServerConnectionHookData  # (the type of server_connect's argument)
    NextLayer = layer.NextLayer  # (the type of next_layer's argument)
    assemble_response = http1.assemble_response
    assemble_response_head = http1.assemble_response_head
    expected_body_size = http1.expected_http_body_size  # ValueError for bad framing; None: until the end
    connection_close = http1.connection_close
    REASONS = status_codes.RESPONSES
    parse_url = url.parse
    hostport = url.hostport
    parse_size = human.parse_size
    pretty_size = human.pretty_size
    format_address = human.format_address
except ImportError as e:  # reported by verify(), with what is missing
    _import_error = e

# Every name above is used by the fence's other modules, or checked by name (checks.TOUCHES resolves
# its dotted names here).
__all__ = [
    "REASONS",
    "ChunkedReader",
    "ErrorCode",
    "HttpLayer",
    "HttpStream",
    "NextLayer",
    "ProxyMode",
    "Proxyserver",
    "ReceiveHttp",
    "RequestData",
    "RequestProtocolError",
    "ResponseData",
    "ReverseMode",
    "ServerConnectionHookData",
    "ServerHookData",
    "Servers",
    "TlsConfig",
    "_http1",
    "addonmanager",
    "assemble",
    "assemble_response",
    "assemble_response_head",
    "commands",
    "connection_close",
    "events",
    "expected_body_size",
    "format_address",
    "h11",
    "hostport",
    "http1",
    "human",
    "layer",
    "parse_size",
    "parse_url",
    "pretty_size",
    "server",
    "starts_like_tls_record",
    "status_codes",
    "tls",
    "url",
]
