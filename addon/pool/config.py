"""The pool sidecar's HAProxy configuration: which upstream origins are pooled, mitmproxy's upstream TLS
options as HAProxy applies them, and the configuration text (one loopback listener per origin,
serving only requests that carry the sidecar's token)."""

from __future__ import annotations

import ipaddress
import os
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import exceptions

TOKEN_HEADER = "x-ollama-pool"  # the sidecar's token: every request to it must carry it (on the wire only)
TLS_VERSIONS = {"SSL3": "SSLv3", "TLS1": "TLSv1.0", "TLS1_1": "TLSv1.1", "TLS1_2": "TLSv1.2", "TLS1_3": "TLSv1.3"}


@dataclass(frozen=True, slots=True, order=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return Origin(parts.scheme, parts.hostname, port)


def pooled_origins(options: Any, urls: Sequence[str] | None = None) -> list[Origin]:
    """The upstream origins that go through the pool: every configured upstream server's (`urls`,
    their base URLs, which the proxy gives: the default server's and each `[servers.NAME]`'s),
    else `openai_base_url`'s."""
    mode = options.upstream_pool
    if mode == "off":
        return []
    if urls is None:
        urls = [options.openai_base_url]
    origins = {o for o in map(origin_of, urls) if o is not None and (mode == "all" or o.scheme == "https")}
    return sorted(origins)


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """mitmproxy's upstream TLS options, as the sidecar applies them."""

    insecure: bool
    ca_file: str  # a PEM bundle: the trusted CA file, the confdir's certificates, or certifi's
    client_certs: str  # a file, or a directory of <host>.pem; "" for none
    min_version: str
    max_version: str
    ciphers: str

    @classmethod
    def from_options(cls, options: Any, folder: Path) -> TLSSettings:
        ca_file = options.ssl_verify_upstream_trusted_ca or ""
        confdir = options.ssl_verify_upstream_trusted_confdir or ""
        for path, what in (
            (ca_file, "ssl_verify_upstream_trusted_ca"),
            (confdir, "ssl_verify_upstream_trusted_confdir"),
        ):
            if path and not os.path.exists(os.path.expanduser(path)):
                raise exceptions.OptionsError(f"{what}: {path} does not exist")
        if confdir:  # HAProxy takes one CA file: the confdir's certificates (public ones) in one bundle
            bundle = folder / "trusted-ca.pem"
            parts = [Path(os.path.expanduser(ca_file)).read_bytes()] if ca_file else []
            for entry in sorted(Path(os.path.expanduser(confdir)).iterdir()):
                if entry.is_file():
                    data = entry.read_bytes()
                    if b"-----BEGIN CERTIFICATE-----" in data:
                        parts.append(data)
            bundle.write_bytes(b"\n".join(parts))
            ca_file = str(bundle)
        elif not ca_file:
            import certifi  # mitmproxy's own default trust store (net/tls.py)

            ca_file = certifi.where()
        return cls(
            insecure=bool(options.ssl_insecure),
            ca_file=os.path.expanduser(ca_file),
            client_certs=os.path.expanduser(options.client_certs or ""),
            min_version=options.tls_version_server_min,
            max_version=options.tls_version_server_max,
            ciphers=options.ciphers_server or "",
        )

    def client_cert_for(self, host: str) -> str | None:
        if not self.client_certs:
            return None
        if os.path.isfile(self.client_certs):
            return self.client_certs
        candidate = os.path.join(self.client_certs, f"{host}.pem")
        return candidate if os.path.isfile(candidate) else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _quote(value: str) -> str:
    """A value for HAProxy's configuration, quoted and escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


HAPROXY_GLOBAL = """\
# The upstream connection pool of the Ollama-OpenAI proxy (addon/pool/). Written anew at every
# start into a private temporary folder, removed once HAProxy has read it; it holds no key (the
# Authorization header passes through).
global
    maxconn {maxconn}
    nbthread 1
    hard-stop-after {drain}s
    log stderr format raw local0 info
    ssl-server-verify {verify_default}

defaults
    mode http
    log global
    # One line per failed request only, without headers, URL or body.
    option dontlog-normal
    option dontlognull
    log-format "%b %ST %tsc %[bc_err_str] Tc=%Tc Tr=%Tr Ta=%Ta"
    timeout connect 10s
    # A request head must arrive within 10 s: no local process can hold a slot longer without one.
    timeout http-request 10s
    # How long the upstream may stay silent is the addon's upstream_timeout to judge.
    timeout client 24h
    timeout server 24h
    timeout http-keep-alive 300s
    timeout queue 30s
    # A closed client connection (the client went away, or the addon's upstream_timeout closed it)
    # closes the upstream connection too: the upstream stops generating, and billing.
    option abortonclose
    http-reuse always
    # A request is sent again only when it provably never reached the upstream (the connect failed),
    # never a POST the upstream may have processed (a warm connection closed as it was reused: 502).
    retries 1
    retry-on conn-failure
{resolvers}"""

HAPROXY_ORIGIN = """
frontend pool{n}
    bind 127.0.0.1:{port}
{only_the_proxy}    default_backend pool{n}

backend pool{n}
    # {origin}
{errors}    http-after-response set-status 502 if {{ res.hdr(x-ollama-proxy-pool) -m found }}
    server up{n} {address} {server_options}
"""


def haproxy_config(
    listeners: Sequence[tuple[Origin, int]], tls: TLSSettings, max_idle: int, idle_seconds: int, token: str | None
) -> str:
    """HAProxy's configuration for a pool listener per origin (127.0.0.1:port → origin), serving only
    requests that carry `token` (None: any, for the benchmark's HAProxy alone; the sidecar always has one)."""
    only_the_proxy = (
        "    # Only the proxy: any other local process gets 403, and nothing reaches the upstream.\n"
        f"    http-request deny deny_status 403 unless {{ req.hdr({TOKEN_HEADER}) -m str {token} }}\n"
        f"    http-request del-header {TOKEN_HEADER}\n"
        if token is not None
        else ""
    )
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = max(256, (open_files - 64) // 2)  # each proxied connection holds two descriptors
    names = [o.host for o, _ in listeners if not _is_ip(o.host)]
    resolvers = ""
    if names:  # follow DNS changes of long-running upstreams (api.openai.com moves between addresses)
        resolvers = (
            "\nresolvers system\n    parse-resolv-conf\n    hold valid 30s\n    hold obsolete 30s\n"
            "    resolve_retries 3\n    timeout resolve 1s\n    timeout retry 1s\n"
        )
    text = HAPROXY_GLOBAL.format(
        maxconn=maxconn, drain=600, verify_default="none" if tls.insecure else "required", resolvers=resolvers
    )
    for n, (origin, port) in enumerate(listeners):
        # The pool's own failures reach the addon as a 502 in OpenAI's error shape, with HAProxy's reason.
        message = (
            f"cannot reach the upstream {origin} through the connection pool: %[bc_err_str,json(utf8s)] "
            "(pool status %ST; after a TLS failure see ssl_verify_upstream_trusted_ca, ssl_insecure)"
        )
        body = f'{{"error": {{"message": "{message}", "type": "upstream_unreachable", "param": null, "code": null}}}}'
        errors = "".join(
            f"    http-error status {status} content-type application/json hdr x-ollama-proxy-pool error lf-string {_quote(body)}\n"
            for status in (502, 503, 504)
        )
        options = [f"pool-max-conn {max_idle}", f"pool-purge-delay {max(idle_seconds, 1)}s"]
        if origin.scheme == "https":
            options.append("ssl")
            if tls.insecure:
                options.append("verify none")
            else:
                options += ["verify required", f"ca-file {_quote(tls.ca_file)}", f"verifyhost {_quote(origin.host)}"]
            if not _is_ip(origin.host):
                options += [f"sni str({origin.host})"]
            if cert := tls.client_cert_for(origin.host):
                options.append(f"crt {_quote(cert)}")
            if tls.min_version in TLS_VERSIONS:
                options.append(f"ssl-min-ver {TLS_VERSIONS[tls.min_version]}")
            if tls.max_version in TLS_VERSIONS:
                options.append(f"ssl-max-ver {TLS_VERSIONS[tls.max_version]}")
            if tls.ciphers:
                options.append(f"ciphers {_quote(tls.ciphers)}")
        if not _is_ip(origin.host):
            options += ["resolvers system", "resolve-prefer ipv4", "init-addr last,libc,none"]
        address = f"[{origin.host}]:{origin.port}" if ":" in origin.host else f"{origin.host}:{origin.port}"
        text += HAPROXY_ORIGIN.format(
            n=n,
            port=port,
            origin=origin,
            errors=errors,
            address=address,
            server_options=" ".join(options),
            only_the_proxy=only_the_proxy,
        )
    return text
