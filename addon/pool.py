"""Pooled upstream connections: HAProxy beside mitmproxy keeps the TLS connections to each upstream warm.

mitmproxy never reuses an upstream connection across client connections: every new client
connection (curl, a script, a pooled client whose idle connection expired) pays a fresh TCP + TLS
handshake to the upstream, two round trips. With `upstream_pool` on, this module starts HAProxy
(Debian's `haproxy`) as a sidecar of the proxy process: one loopback listener per upstream origin
(scheme, host, port), speaking plain HTTP/1.1 to mitmproxy and TLS to the upstream, with
`http-reuse always` so that any request, from any client connection, takes a warm upstream
connection when one is idle. Streams pass through as they come (HAProxy does not buffer them).

The sidecar honours mitmproxy's own upstream TLS options, so it trusts exactly what mitmproxy
would: `ssl_insecure`, `ssl_verify_upstream_trusted_ca` / `..._confdir` (else certifi's bundle,
mitmproxy's default), `client_certs` (a file, or `<dir>/<host>.pem`), `tls_version_server_min`
/ `_max` and `ciphers_server`; it verifies the certificate and host name by default, and sends the
upstream host as SNI. Its configuration holds no key (the Authorization header passes through);
it logs only failed requests, without headers or URLs. It listens on 127.0.0.1 only, is bounded
(`maxconn` from the open-file limit, `upstream_pool_max_idle` idle connections per upstream,
closed after `upstream_pool_idle` seconds), starts with the proxy and stops with it (also when
the proxy is killed: the kernel sends HAProxy SIGTERM when its parent dies).

Other local processes can connect to its loopback port (mitmproxy connects over TCP only, so a
unix socket with 0600 permissions is not possible): every request must carry the sidecar's own
random token (`x-ollama-pool`, made at each start, put only on the wire by
`guard.secrets.put_on_wire`, registered as a secret, removed by HAProxy before the request goes on),
else HAProxy answers 403 without contacting the upstream, so no other process can relay through it
or borrow the proxy's client certificate (`client_certs`). A request head must arrive within
`timeout http-request` (10 s). A request is sent again only when it provably never reached the
upstream (a failed connect); a warm connection that the upstream closed as it was reused fails
that request with 502 rather than risk sending a POST twice (as nginx does for non-idempotent
requests). What stays (docs/security.md): a local process can still hold connection slots, each
for at most 10 s.

The hook point: the flows keep the real upstream URL (what mitmweb and saved flows show).
`PoolConnector`, the very last addon of mitmproxy's chain (there only while the pool serves an
origin: with `upstream_pool=off` it costs the flows nothing), moves a request bound for a pooled
origin to the pool's listener just before mitmproxy opens the connection (after every view has
seen it), by setting `scheme`/`host`/`port` on the request data without touching its Host
header; `PoolRestore`, the first addon of the script, puts the real URL back when the answer's
headers (or an error) arrive, before anything else sees the flow. Nothing else in the addon knows
about the pool but the proxy, which tells it every upstream server's base URL (`servers`):
`pooled_origins` decides which origins are pooled, and each gets a listener of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import resource
import secrets as token_maker
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.flow import Flow

from addon.guard import secrets

logger = logging.getLogger("ollama_proxy")

META = "ollama"  # the addon's flow metadata key: requests going upstream carry "upstream_route"
POOL_META = "ollama_pool"  # set on a pooled flow: {"origin": "https://host:443", "via": "127.0.0.1:port"}
TOKEN_HEADER = "x-ollama-pool"  # the sidecar's token: every request to it must carry it (on the wire only)

POOL_OPTIONS: list[tuple[str, type, Any, str]] = [
    (
        "upstream_pool",
        str,
        "off",
        "Keep upstream connections warm across client connections in an HAProxy sidecar on loopback "
        "(Debian's haproxy): 'https' pools TLS upstreams (where it pays: no TCP + TLS handshake per "
        "new client connection), 'all' plain-HTTP upstreams too, 'off' none. make run sets 'https' (POOL=0: off).",
    ),
    (
        "upstream_pool_max_idle",
        int,
        32,
        "Idle connections the pool keeps per upstream (busy ones are not limited by this).",
    ),
    (
        "upstream_pool_idle",
        int,
        30,
        "Seconds after which the pool starts closing idle upstream connections (half of them each period).",
    ),
]
POOL_OPTION_NAMES = frozenset(name for name, *_ in POOL_OPTIONS)
# mitmproxy's options the sidecar's configuration follows.
TLS_OPTION_NAMES = frozenset(
    {
        "ssl_insecure",
        "ssl_verify_upstream_trusted_ca",
        "ssl_verify_upstream_trusted_confdir",
        "client_certs",
        "tls_version_server_min",
        "tls_version_server_max",
        "ciphers_server",
        "openai_base_url",
    }
)

START_SECONDS = 10.0
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
# The upstream connection pool of the Ollama-OpenAI proxy (addon/pool.py). Written anew at every
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


def find_haproxy() -> str | None:
    """HAProxy on PATH, or where Debian puts it (/usr/sbin is not on a normal user's PATH)."""
    found = shutil.which("haproxy")
    if found is None:
        found = next((p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
    return found


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """The kernel sends HAProxy SIGTERM when the proxy process dies, however it dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):  # no prctl: not Linux
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()  # its own session: a Ctrl-C at the terminal reaches the proxy, which stops it


class Sidecar:
    """One HAProxy process serving a pool listener per origin."""

    def __init__(self, origins: Sequence[Origin], options: Any, haproxy: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ollama-proxy-pool-"))  # mode 0700
        self.listeners = list(zip(origins, free_ports(len(origins)), strict=False))
        self.routes = {origin: ("127.0.0.1", port) for origin, port in self.listeners}
        self.config_path = self.folder / "haproxy.cfg"
        self.haproxy = haproxy
        self.process: subprocess.Popen[bytes] | None = None
        self._partial = b""
        self.token = token_maker.token_hex(32)  # (hex: nothing HAProxy's parser treats specially, no leading "-")
        self.wire = (f"{TOKEN_HEADER}: {self.token}\r\n".encode(),)  # the header line, for the wire only
        try:
            self.config = haproxy_config(
                self.listeners,
                TLSSettings.from_options(options, self.folder),
                options.upstream_pool_max_idle,
                options.upstream_pool_idle,
                self.token,
            )
            fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as config:
                config.write(self.config)
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def check(self) -> None:
        """HAProxy's own check of the configuration (a missing CA or client certificate file, ...)."""
        out = subprocess.run(
            [self.haproxy, "-c", "-q", "-f", str(self.config_path)], capture_output=True, text=True, timeout=30
        )
        if out.returncode != 0:
            raise exceptions.OptionsError(
                f"upstream_pool: HAProxy refuses its configuration: {(out.stderr or out.stdout).strip()[-1500:]}"
            )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.haproxy, "-db", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        deadline = time.monotonic() + START_SECONDS
        pending = {port for _, port in self.listeners}
        while pending and time.monotonic() < deadline and self.process.poll() is None:
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending:
                time.sleep(0.02)
        if pending:
            error = ""
            if self.process.poll() is not None and self.process.stderr is not None:
                error = self.process.stderr.read().decode("utf-8", "replace").strip()
            self.stop()
            raise RuntimeError(f"HAProxy did not start: {error[-1500:] or f'no listener after {START_SECONDS} s'}")
        assert self.process.stderr is not None  # started with stderr=PIPE
        os.set_blocking(self.process.stderr.fileno(), False)
        # HAProxy has read its files: none stays on disk, even if the proxy is killed.
        shutil.rmtree(self.folder, ignore_errors=True)

    def read_log(self) -> list[str]:
        """The complete lines HAProxy wrote to its stderr since the last call."""
        if self.process is None or self.process.stderr is None:
            return []
        try:
            data = self.process.stderr.read()
        except (BlockingIOError, ValueError, OSError):
            return []
        if not data:
            return []
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace").strip() for line in lines if line.strip()]

    def stop(self, graceful: bool = False) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            if graceful:  # finish the requests under way (bounded by hard-stop-after), then exit
                process.send_signal(signal.SIGUSR1)
            else:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if not graceful:
            shutil.rmtree(self.folder, ignore_errors=True)
            if process is not None and process.stderr is not None:
                process.stderr.close()


class UpstreamPool:
    """The first addon of the script: owns the sidecar, and puts the real upstream URL back on flows."""

    def __init__(self) -> None:
        self.sidecar: Sidecar | None = None
        self.draining: list[Sidecar] = []
        self.routes: dict[Origin, tuple[str, int]] = {}
        self.wanted: tuple[object, ...] | None = None
        self.is_running = False
        self.urls: tuple[str, ...] | None = None  # every upstream server's base URL (set by the proxy)

    def servers(self, urls: Sequence[str]) -> None:
        """The upstream servers' base URLs (several upstreams, addon/upstreams/): each https origin
        is pooled. Called by the proxy whenever it (re)builds its servers; a sidecar that cannot
        serve them refuses the option change that made them."""
        urls = tuple(urls)
        if urls == self.urls:
            return
        previous, self.urls = self.urls, urls
        if pooled_origins(ctx.options, urls) and find_haproxy() is None:
            self.urls = previous
            raise exceptions.OptionsError(
                "upstream_pool needs HAProxy, which is not installed: apt-get install haproxy "
                "(or run without the pool: make run POOL=0, or --set upstream_pool=off)"
            )
        if self.is_running:
            try:
                self.apply()
            except RuntimeError as e:
                self.urls = previous
                raise exceptions.OptionsError(f"upstream pool: {e}") from None

    # -- options and the sidecar's life ----------------------------------------------------

    def load(self, loader: Any) -> None:
        for name, typespec, default, help_text in POOL_OPTIONS:
            if name not in ctx.options:
                loader.add_option(name, typespec, default, help_text)

    def configure(self, updated: set[str]) -> None:
        if not updated & (POOL_OPTION_NAMES | TLS_OPTION_NAMES):
            return
        if ctx.options.upstream_pool not in ("off", "https", "all"):
            raise exceptions.OptionsError(f"upstream_pool must be off, https or all, got {ctx.options.upstream_pool!r}")
        if ctx.options.upstream_pool_max_idle < 1 or ctx.options.upstream_pool_idle < 1:
            raise exceptions.OptionsError("upstream_pool_max_idle and upstream_pool_idle must be at least 1")
        origins = pooled_origins(ctx.options, self.urls)
        if origins and find_haproxy() is None:
            raise exceptions.OptionsError(
                "upstream_pool needs HAProxy, which is not installed: apt-get install haproxy "
                "(or run without the pool: make run POOL=0, or --set upstream_pool=off)"
            )
        if self.is_running:
            self.apply()

    def running(self) -> None:
        self.is_running = True
        try:
            self.apply()
        except (RuntimeError, exceptions.OptionsError) as e:
            logger.error("upstream pool: %s; stopping (run without it: --set upstream_pool=off, make run POOL=0)", e)
            ctx.master.shutdown()

    def apply(self) -> None:
        """Start, restart or stop the sidecar so that it serves what the options say."""
        origins = pooled_origins(ctx.options, self.urls)
        wanted = (
            tuple(origins),
            *(getattr(ctx.options, name) for name in sorted(POOL_OPTION_NAMES | TLS_OPTION_NAMES)),
        )
        if wanted == self.wanted:
            return
        sidecar = None
        if origins:  # the new one first: if it cannot start, the running one stays (the option change is refused)
            haproxy = find_haproxy()
            assert haproxy is not None  # configure checked
            sidecar = Sidecar(origins, ctx.options, haproxy)
            try:
                sidecar.check()
                sidecar.start()
            except BaseException:
                sidecar.stop()
                raise
            self._watch(sidecar)
            for origin, (host, port) in sidecar.routes.items():
                tls = (
                    "none (plain HTTP)"
                    if origin.scheme != "https"
                    else "not verified (ssl_insecure)"
                    if ctx.options.ssl_insecure
                    else "verified"
                )
                logger.info(
                    "upstream pool: %s is served through HAProxy on %s:%d (TLS %s, up to %d idle connections "
                    "kept, idle close after %d s)",
                    origin,
                    host,
                    port,
                    tls,
                    ctx.options.upstream_pool_max_idle,
                    ctx.options.upstream_pool_idle,
                )
        old = self.sidecar
        self.sidecar, self.routes, self.wanted = sidecar, dict(sidecar.routes) if sidecar else {}, wanted
        secrets.register(TOKEN_HEADER, sidecar.token if sidecar else "")  # hidden wherever it could show
        self._place_connector()
        if old is not None:
            self._unwatch(old)
            old.stop(graceful=True)  # requests under way finish on the old one
            self.draining.append(old)
        for done in [s for s in self.draining if s.process is None or s.process.poll() is not None]:
            done.stop()  # releases its pipe
            self.draining.remove(done)

    def _watch(self, sidecar: Sidecar) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        assert sidecar.process is not None and sidecar.process.stderr is not None
        loop.add_reader(sidecar.process.stderr.fileno(), self._relay_log, sidecar)

    def _unwatch(self, sidecar: Sidecar) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if sidecar.process is not None and sidecar.process.stderr is not None and not sidecar.process.stderr.closed:
            loop.remove_reader(sidecar.process.stderr.fileno())

    def _relay_log(self, sidecar: Sidecar) -> None:
        lines = sidecar.read_log()
        for line in lines:
            logger.warning("upstream pool: %s", line)
        if not lines and sidecar.process is not None and sidecar.process.poll() is not None:
            self._unwatch(sidecar)
            if sidecar is self.sidecar:
                logger.error(
                    "upstream pool: HAProxy stopped (exit status %s); requests now go straight to the "
                    "upstream, each new client connection with its own TLS handshake",
                    sidecar.process.returncode,
                )
                self.sidecar, self.routes, self.wanted = None, {}, None
                secrets.register(TOKEN_HEADER, "")
                self._place_connector()

    def _place_connector(self) -> None:
        """The connector is in mitmproxy's chain only while the pool serves an origin: an addon with
        nothing to do would still cost every hook of every flow its dispatch."""
        addons = ctx.master.addons
        existing = addons.get(PoolConnector.name)
        if self.routes and existing is None:
            addons.add(PoolConnector(self))  # at the end of the chain, after every view
        elif self.routes:  # the script was reloaded: the connector stays at the end of the chain, serving this pool
            existing.pool = self
        elif existing is not None:
            addons.remove(existing)

    def done(self) -> None:
        for sidecar in (self.sidecar, *self.draining):
            if sidecar is not None:
                self._unwatch(sidecar)
                sidecar.stop()
        self.sidecar, self.draining, self.routes, self.wanted = None, [], {}, None
        secrets.register(TOKEN_HEADER, "")
        self.is_running = False

    # -- flows: the real URL back before anything else sees the answer ---------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        restore(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        restore(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        restore(flow)


def restore(flow: http.HTTPFlow) -> None:
    pooled = flow.metadata.get(POOL_META)
    if pooled is not None and "real" in pooled:
        scheme, host, port = pooled.pop("real")
        flow.request.scheme = scheme  # sets no header
        flow.request.data.host, flow.request.data.port = host, port  # the setters would rewrite the Host header


class PoolConnector:
    """The last addon of mitmproxy's chain: sends a request bound for a pooled origin to the pool.

    mitmproxy runs every addon's `update` hook after the `request` hooks (that is when mitmweb's
    view shows the flow) and then connects to `request.scheme/host/port`: this changes only those,
    for the connection, and leaves the Host header naming the real upstream.
    """

    name = "ollamapoolconnector"

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def update(self, flows: Sequence[Flow]) -> None:
        routes = self.pool.routes
        if not routes:
            return
        for flow in flows:
            if (
                not isinstance(flow, http.HTTPFlow)
                or flow.response is not None
                or flow.error is not None
                or POOL_META in flow.metadata
                or "upstream_route" not in flow.metadata.get(META, {})
            ):
                continue
            request = flow.request
            target = routes.get(Origin(request.scheme, request.host, request.port))
            if target is None:
                continue
            flow.metadata[POOL_META] = {
                "origin": str(Origin(request.scheme, request.host, request.port)),
                "via": f"{target[0]}:{target[1]}",
                "real": (request.scheme, request.host, request.port),
            }
            # request.data, not request.host: the Host header keeps naming the upstream.
            request.scheme = "http"
            request.data.host, request.data.port = target
            if (sidecar := self.pool.sidecar) is not None:
                secrets.put_on_wire(request, extra=sidecar.wire)  # the pool's token: on the wire only
