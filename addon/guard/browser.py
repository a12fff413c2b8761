"""Web pages in the user's browser: which origins may use the proxy, and which Host names it answers.

A page on any site can send a "simple" request (`POST` with `Content-Type: text/plain`, no
preflight) to `http://127.0.0.1:11434`, and a DNS-rebinding page (`evil.example` resolving to
127.0.0.1) can even read the answers, because to the browser they come from the page's own
origin. Real Ollama refuses both since CVE-2024-28224 (server/routes.go: gin-contrib/cors v1.7.2
with `envconfig.AllowedOrigins()`, then `allowedHostsMiddleware`); the proxy does exactly the same,
in the same order, at `requestheaders` (before the body is read; see `addon.guard.early`):

- `origin_check`, as gin-contrib/cors: no `Origin`, or one equal to `http(s)://<Host>`, is not a
  cross-origin request and passes unchanged. An `Origin` that `Origins` allows passes, and its
  answer will carry `Access-Control-Allow-Origin` and `Vary: Origin` (`cors_headers`); an
  `OPTIONS` from it (a preflight) is answered 204 with the methods, headers and max age Ollama
  sends. Any other origin gets 403 and nothing goes upstream.
- `host_check`, as `allowedHostsMiddleware`: on a listener bound to a loopback address (not
  0.0.0.0: names are then the user's business, as in Ollama), a `Host`
  that is not a loopback, private or unspecified IP address, `localhost`, `*.localhost`, `*.local`,
  `*.internal`, this machine's host name or an `allowed_hosts` name gets 403.

`Origins` and `Hosts` are built from the options once (`addon.settings`).
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.exceptions import OptionsError

from addon import mitm_internals as fence
from addon.guard.output import escape
from addon.reply import Answer

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint
    from addon.exchange import Exchange
    from addon.reply import Answer
    from addon.settings import Settings

# envconfig.AllowedOrigins(): always allowed, whatever allowed_origins adds.
OLLAMA_ORIGINS = (
    *(
        f"{scheme}://{host}{port}"
        for host in ("localhost", "127.0.0.1", "0.0.0.0")
        for scheme in ("http", "https")
        for port in ("", ":*")
    ),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)

# gin-contrib/cors DefaultConfig() with Ollama's AllowHeaders, as the header values gin writes.
ALLOW_METHODS = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
ALLOW_HEADERS = ",".join(
    (
        "Authorization",
        "Content-Type",
        "User-Agent",
        "Accept",
        "X-Requested-With",
        "Openai-Beta",
        "X-Stainless-Arch",
        "X-Stainless-Async",
        "X-Stainless-Custom-Poll-Interval",
        "X-Stainless-Helper-Method",
        "X-Stainless-Lang",
        "X-Stainless-Os",
        "X-Stainless-Package-Version",
        "X-Stainless-Poll-Helper",
        "X-Stainless-Retry-Count",
        "X-Stainless-Runtime",
        "X-Stainless-Runtime-Version",
        "X-Stainless-Timeout",
    )
)
MAX_AGE = "43200"  # 12 hours
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

# Go's netip.Addr.IsPrivate (RFC 1918, RFC 4193); Python's is_private covers far more.
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


@dataclass(frozen=True, slots=True)
class Origins:
    """Ollama's default origins plus `allowed_origins`: exact ones, one-`*` patterns, or `*` for all."""

    allow_all: bool
    exact: frozenset[str]
    patterns: tuple[tuple[str, str], ...]  # (before the *, after it)

    @classmethod
    def parse(cls, spec: str) -> Origins:
        added = [o.strip().lower() for o in spec.split(",") if o.strip()]
        exact: set[str] = set()
        patterns: list[tuple[str, str]] = []
        for origin in (*added, *OLLAMA_ORIGINS):
            if origin == "*":
                continue
            if origin.count("*") > 1:
                raise OptionsError(f"allowed_origins: only one * is allowed per origin, got {origin!r}")
            if "*" in origin:
                before, _, after = origin.partition("*")
                patterns.append((before, after))
            else:
                exact.add(origin)
        return cls("*" in added, frozenset(exact), tuple(patterns))

    def allows(self, origin: str) -> bool:
        if self.allow_all:
            return True
        origin = origin.lower()
        if origin in self.exact:
            return True
        # gin-contrib/cors matches a prefix and a suffix; the part the * stands for must in addition be
        # a plain run of host or port characters, so no pattern reaches into another authority.
        return any(
            len(origin) >= len(before) + len(after)
            and origin.startswith(before)
            and origin.endswith(after)
            and _WILD_PART.fullmatch(origin[len(before) : len(origin) - len(after)]) is not None
            for before, after in self.patterns
        )


_WILD_PART = re.compile(r"[a-z0-9.\-_~:\[\]%]*")


@dataclass(frozen=True, slots=True)
class Hosts:
    """Host names a loopback listener answers besides local ones: `allowed_hosts` (shell wildcards)."""

    allow_all: bool
    hostname: str  # this machine's name, lowercased
    pattern: re.Pattern[str] | None

    @classmethod
    def parse(cls, spec: str) -> Hosts:
        names = [n.strip().lower() for n in spec.split(",") if n.strip()]
        pattern = re.compile("|".join(fnmatch.translate(n) for n in names)) if names else None
        return cls("*" in names, socket.gethostname().lower(), pattern)

    def allows(self, host: str) -> bool:
        """allowedHost (server/routes.go), and the names the user configured."""
        return _host_allowed(self, host)


@functools.lru_cache(maxsize=512)
def _host_allowed(hosts: Hosts, host: str) -> bool:
    """`Hosts.allows`, decided once per Host value (clients send the same few; parsing an address is not free)."""
    host = host.lower().rstrip(".")
    if hosts.allow_all or host in ("", "localhost", hosts.hostname):
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback or address.is_unspecified or any(address in net for net in _PRIVATE)
    return host.endswith(_LOCAL_SUFFIXES) or (hosts.pattern is not None and hosts.pattern.match(host) is not None)


def host_name(authority: str) -> str:
    """The host of a `Host` header value (`name:port`, `[v6]:port`, `name`)."""
    if authority.startswith("["):
        return authority[: authority.find("]") + 1] if "]" in authority else authority
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else authority


def _host_header(flow: http.HTTPFlow) -> str:
    request = flow.request
    header = request.host_header
    if header is not None:
        return header
    # No Host (HTTP/1.0): in reverse mode the request's host is the reverse target, not the client's.
    return "" if fence.is_reverse(flow.client_conn.proxy_mode) else request.host


def listens_on_loopback(flow: http.HTTPFlow, settings: Settings) -> bool:
    """Whether the listener the client came through is bound to a loopback address (as Ollama's
    `s.addr`): `--listen-host 0.0.0.0` (or "", every interface) is not, nor a mode without a listener."""
    return _loopback_listener(flow.client_conn.proxy_mode.listen_host(settings.listen_host))


@functools.lru_cache(maxsize=64)
def _loopback_listener(listen_host: str) -> bool:
    """`listens_on_loopback`, decided once per listen address."""
    host = listen_host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def origin_check(flow: http.HTTPFlow, exchange: Exchange, settings: Settings, endpoint: Endpoint) -> Answer | None:
    """gin-contrib/cors: 403 for a foreign origin, 204 for an allowed preflight; notes the CORS headers."""
    request = flow.request
    origin = request.headers.get("origin", "")
    if not origin:
        return None
    host = _host_header(flow)
    if origin in (f"http://{host}", f"https://{host}"):
        return None  # same origin: not a CORS request
    origins = settings.origins
    if not origins.allows(origin):
        return endpoint.error(403, f"forbidden: origin '{shown(origin)}' is not allowed (allowed_origins)")
    allow_origin = "*" if origins.allow_all else origin
    if request.method == "OPTIONS":
        headers = [
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", MAX_AGE),
            ("Access-Control-Allow-Origin", allow_origin),
        ]
        if not origins.allow_all:
            headers.append(("Vary", PREFLIGHT_VARY))
        return Answer(204, b"", "", headers=tuple(headers))
    exchange.cors = (("Access-Control-Allow-Origin", allow_origin),) + (
        () if origins.allow_all else (("Vary", "Origin"),)
    )
    return None


def host_check(flow: http.HTTPFlow, settings: Settings, endpoint: Endpoint) -> Answer | None:
    """allowedHostsMiddleware: on a loopback listener, 403 for a Host that is not a local name (DNS rebinding).

    Only where the Host names the proxy itself (reverse mode, the drop-in Ollama endpoint). In the
    other modes it names the destination an app asked its HTTP proxy for, which `ollama_hosts`
    decides; a page in a browser that uses the proxy is refused there by `origin_check`."""
    if not fence.is_reverse(flow.client_conn.proxy_mode) or not listens_on_loopback(flow, settings):
        return None
    host = host_name(_host_header(flow))
    if settings.hosts.allows(host):
        return None
    return endpoint.error(403, f"forbidden: host '{shown(host)}' is not allowed (allowed_hosts)")


def shown(text: str, limit: int = 200) -> str:
    """Client text in a message: escaped, and cut (a header may be a megabyte long)."""
    return escape(text if len(text) <= limit else text[:limit] + "…")
