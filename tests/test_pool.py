"""The upstream connection pool (addon/pool/): HAProxy beside mitmproxy reuses TLS upstream connections.

Against a TLS upstream on loopback with a CA made here: requests on new client connections share
warm upstream connections; certificates are verified (a wrong CA fails closed with a clear 502),
ssl_insecure is honoured; no key reaches the sidecar's configuration or log; the flows keep the
real upstream URL; HAProxy stops with the proxy.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from addon import pool
from harness import ROOT, TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

HAPROXY = pool.find_haproxy()


def needs_haproxy() -> None:
    if HAPROXY is None:
        message = "haproxy is needed: apt-get install haproxy (.ci/run does)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def make_ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A CA, a server certificate for 127.0.0.1 it signed, and another CA that signed nothing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("pool-tls")
    ca, ca_key = make_ca("pool test CA")
    other, _ = make_ca("another CA")
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = SimpleNamespace(
        ca=folder / "ca.pem", other_ca=folder / "other-ca.pem", cert=folder / "cert.pem", key=folder / "key.pem"
    )
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.other_ca.write_bytes(other.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def tls_upstream(certs: SimpleNamespace) -> Iterator[UpstreamServer]:
    with UpstreamServer(tls=(str(certs.cert), str(certs.key))) as server:
        yield server


def chat(url: str, text: str, stream: bool = False) -> tuple[int, bytes]:
    """One /api/chat request on a new client connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": text}], "stream": stream}
        connection.request("POST", "/api/chat", body=json.dumps(body), headers={"content-type": "application/json"})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# ---------------------------------------------------------------------------------------------
# Through a real mitmdump and HAProxy


@pytest.mark.e2e
def test_new_client_connections_share_warm_upstream_connections(
    spawn, tls_upstream: UpstreamServer, certs, tmp_path: Path
) -> None:
    needs_haproxy()
    flows = tmp_path / "flows.mitm"
    dump: Mitmdump = spawn(
        "reverse",
        f"openai_base_url={tls_upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        "upstream_pool=https",
        f"ssl_verify_upstream_trusted_ca={certs.ca}",
        "flow_detail=4",
        f"save_stream_file={flows}",
    )
    before = tls_upstream.accepted
    answers = [chat(dump.url, f"n{n}", stream=n % 2 == 1) for n in range(20)]
    assert all(status == 200 for status, _ in answers), answers
    assert json.loads(answers[0][1])["message"]["content"] == "echo: n0"
    assert b"echo:" in answers[1][1] and answers[1][1].count(b"\n") > 2  # streamed as NDJSON
    # Every route that goes upstream takes the pool: /v1 and embeddings too.
    import httpx

    v1 = httpx.post(
        dump.url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "v1"}]}
    )
    assert v1.status_code == 200 and v1.json()["choices"][0]["message"]["content"] == "echo: v1"
    embed = httpx.post(dump.url + "/api/embed", json={"model": "m", "input": ["abc"]})
    assert embed.status_code == 200 and embed.json()["embeddings"]
    upstream_connections = tls_upstream.accepted - before
    assert upstream_connections <= 3, f"22 client connections opened {upstream_connections} upstream connections"
    # The upstream saw the real Host and the key; the flows show the real upstream URL, not the pool.
    assert tls_upstream.fake.requests[-1].headers["host"] == f"127.0.0.1:{tls_upstream.port}"
    assert tls_upstream.fake.requests[-1].headers["authorization"] == f"Bearer {TEST_KEY}"
    haproxy = [pid for pid in children(dump.process.pid) if "haproxy" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(haproxy) == 1
    log = dump.log()
    assert "upstream pool: https://127.0.0.1:" in log and "(TLS verified," in log
    dump.stop()
    assert not alive(haproxy[0]), "HAProxy stops with the proxy"
    assert TEST_KEY not in dump.log()

    from mitmproxy import io

    with flows.open("rb") as f:
        saved = list(io.FlowReader(f).stream())
    assert len(saved) == 22
    for flow in saved:
        assert flow.request.url in (f"{tls_upstream.base_url}/chat/completions", f"{tls_upstream.base_url}/embeddings")
        assert flow.metadata[pool.POOL_META]["origin"] == f"https://127.0.0.1:{tls_upstream.port}"
        assert flow.metadata[pool.POOL_META]["via"].startswith("127.0.0.1:")
        assert pool.TOKEN_HEADER not in flow.request.headers, "the pool's token is on the wire only"


@pytest.mark.e2e
def test_a_wrong_ca_fails_closed_with_a_clear_502(spawn, tls_upstream: UpstreamServer, certs) -> None:
    needs_haproxy()
    dump = spawn(
        "reverse",
        f"openai_base_url={tls_upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        "upstream_pool=https",
        f"ssl_verify_upstream_trusted_ca={certs.other_ca}",
    )
    for stream in (False, True):
        status, body = chat(dump.url, "secret question", stream)
        assert status == 502
        message = json.loads(body)["error"]
        assert message.startswith(
            f"cannot reach the upstream https://127.0.0.1:{tls_upstream.port} through the connection pool: "
        )
        assert "SSL handshake failure" in message
    assert tls_upstream.fake.requests == [], "no request reached an upstream whose certificate is not trusted"
    assert "SSL handshake failure" in dump.log() and TEST_KEY not in dump.log()


@pytest.mark.e2e
def test_ssl_insecure_is_honoured(spawn, tls_upstream: UpstreamServer) -> None:
    needs_haproxy()
    dump = spawn("reverse", f"openai_base_url={tls_upstream.base_url}", "upstream_pool=https", "ssl_insecure=true")
    status, body = chat(dump.url, "insecure")  # the test CA is not trusted, and not checked
    assert status == 200 and json.loads(body)["message"]["content"] == "echo: insecure"
    assert "(TLS not verified (ssl_insecure)," in dump.log()


@pytest.mark.e2e
def test_no_key_in_the_sidecar_log(spawn, tls_upstream: UpstreamServer, certs) -> None:
    """Failed requests are the only ones HAProxy logs: an upstream 500 and 401 show no key."""
    needs_haproxy()
    dump = spawn(
        "reverse",
        f"openai_base_url={tls_upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        "upstream_pool=https",
        f"ssl_verify_upstream_trusted_ca={certs.ca}",
        "flow_detail=4",
    )
    for fault in ("500", "401"):
        connection = http.client.HTTPConnection("127.0.0.1", dump.port, timeout=20)
        connection.request(
            "POST",
            "/api/chat",
            body=json.dumps(
                {"model": f"fault:{fault}", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
            ),
        )
        assert connection.getresponse().status == int(fault)
        connection.close()
    time.sleep(0.3)  # the sidecar's log lines reach the proxy's log asynchronously
    log = dump.log()
    assert "upstream pool: pool0 500" in log
    assert TEST_KEY not in log and "Bearer" not in log.split("upstream pool: pool0 500")[1].splitlines()[0]


@pytest.mark.e2e
def test_regular_proxy_mode_and_a_pooled_plain_http_upstream(spawn, upstream: UpstreamServer) -> None:
    """HTTP_PROXY mode works through the pool too; upstream_pool=all pools a plain-HTTP upstream."""
    import httpx
    import ollama

    needs_haproxy()
    dump = spawn("regular", f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", "upstream_pool=all")
    before = upstream.accepted
    for n in range(5):
        proxied = ollama.Client(host="http://ollama.internal:11434", proxy=dump.url, timeout=10)
        assert (
            proxied.chat(model="m", messages=[{"role": "user", "content": f"via {n}"}]).message.content
            == f"echo: via {n}"
        )
        proxied._client.close()
    assert upstream.accepted - before == 1
    assert upstream.fake.requests[-1].path == "/v1/chat/completions"
    # Traffic for another host passes through untouched, not through the pool.
    other = httpx.post(upstream.base_url + "/models", proxy=dump.url)
    assert other.status_code == 200 and upstream.accepted - before == 2


@pytest.mark.e2e
def test_through_the_pool_a_client_gone_or_a_silent_upstream_still_stops_the_upstream(
    spawn, upstream: UpstreamServer
) -> None:
    """The pool passes connection closes on: the upstream stops generating (and billing)."""
    import httpx
    import ollama

    needs_haproxy()
    dump = spawn("reverse", f"openai_base_url={upstream.base_url}", "upstream_pool=all", "upstream_timeout=1")
    upstream.fake.pause_after = 2
    try:
        with httpx.stream(
            "POST", dump.url + "/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "a b c"}]}
        ) as response:
            assert json.loads(next(response.iter_lines()))["message"]["content"] == "echo:"
        wait_until(lambda: upstream.fake.aborted == 1, "the client's close reached the upstream")
        upstream.fake.queue(200, {"never": "sent"}, hang=15)
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=dump.url, timeout=20).chat(model="m", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 504
        wait_until(lambda: upstream.fake.aborted == 2, "upstream_timeout closed the upstream connection")
    finally:
        upstream.fake.pause_after = None
    assert upstream.fake.completed == 0


def wait_until(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The sidecar's configuration


def options(**changes) -> SimpleNamespace:
    values = {
        "upstream_pool": "https",
        "upstream_pool_max_idle": 32,
        "upstream_pool_idle": 30,
        "openai_base_url": "https://api.example.com/v1",
        "openai_api_key": TEST_KEY,
        "ssl_insecure": False,
        "ssl_verify_upstream_trusted_ca": None,
        "ssl_verify_upstream_trusted_confdir": None,
        "client_certs": None,
        "tls_version_server_min": "TLS1_2",
        "tls_version_server_max": "UNBOUNDED",
        "ciphers_server": None,
    }
    values.update(changes)
    return SimpleNamespace(**values)


def config(tmp_path: Path, origins: list[pool.Origin] | None = None, **changes) -> str:
    opts = options(**changes)
    origins = origins if origins is not None else pool.pooled_origins(opts)
    listeners = list(zip(origins, range(41000, 41000 + len(origins)), strict=False))
    return pool.haproxy_config(
        listeners,
        pool.TLSSettings.from_options(opts, tmp_path),
        opts.upstream_pool_max_idle,
        opts.upstream_pool_idle,
        "test-token-0123456789abcdef0123456789",
    )


def test_config_verifies_the_upstream_by_default_and_binds_loopback_only(tmp_path: Path) -> None:
    import certifi

    text = config(tmp_path)
    server = next(line for line in text.splitlines() if line.strip().startswith("server "))
    assert "api.example.com:443 " in server and " ssl verify required " in server
    assert f'ca-file "{certifi.where()}"' in server  # mitmproxy's own default trust store
    assert 'verifyhost "api.example.com"' in server and "sni str(api.example.com)" in server
    assert "ssl-min-ver TLSv1.2" in server and "pool-max-conn 32" in server and "pool-purge-delay 30s" in server
    assert "resolvers system" in server  # DNS changes of the upstream are followed
    binds = [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind ")]
    assert binds == ["127.0.0.1:41000"]
    assert "http-reuse always" in text and "ssl-server-verify required" in text


def test_config_follows_mitmproxys_tls_options(tmp_path: Path, certs) -> None:
    insecure = config(tmp_path, ssl_insecure=True)
    assert "verify none" in insecure and "verify required" not in insecure
    trusted = config(tmp_path, ssl_verify_upstream_trusted_ca=str(certs.ca))
    assert f'ca-file "{certs.ca}"' in trusted
    confdir = tmp_path / "cas"
    confdir.mkdir()
    shutil.copy(certs.ca, confdir / "a.pem")
    shutil.copy(certs.other_ca, confdir / "b.pem")
    bundled = config(tmp_path, ssl_verify_upstream_trusted_confdir=str(confdir))
    assert f'ca-file "{tmp_path / "trusted-ca.pem"}"' in bundled
    assert (tmp_path / "trusted-ca.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    client = tmp_path / "client.pem"
    client.write_text("cert and key")
    assert f'crt "{client}"' in config(tmp_path, client_certs=str(client))
    per_host = tmp_path / "client-certs"
    per_host.mkdir()
    (per_host / "api.example.com.pem").write_text("cert and key")
    assert f'crt "{per_host / "api.example.com.pem"}"' in config(tmp_path, client_certs=str(per_host))
    assert "ssl-max-ver TLSv1.3" in config(tmp_path, tls_version_server_max="TLS1_3")
    assert 'ciphers "ECDHE-RSA-AES128-GCM-SHA256"' in config(tmp_path, ciphers_server="ECDHE-RSA-AES128-GCM-SHA256")


def test_config_for_several_upstreams(tmp_path: Path) -> None:
    """One loopback listener per upstream origin (issue 15: several upstreams)."""
    origins = [
        pool.Origin("https", "api.openai.com", 443),
        pool.Origin("https", "openrouter.ai", 443),
        pool.Origin("http", "10.0.0.5", 8000),
    ]
    text = config(tmp_path, origins)
    assert [line.split()[1] for line in text.splitlines() if line.strip().startswith("bind ")] == [
        "127.0.0.1:41000",
        "127.0.0.1:41001",
        "127.0.0.1:41002",
    ]
    servers = [line for line in text.splitlines() if line.strip().startswith("server ")]
    assert "openrouter.ai:443 " in servers[1] and " ssl " in servers[1] and "sni str(openrouter.ai)" in servers[1]
    assert " ssl" not in servers[2] and "resolvers" not in servers[2]  # a plain-HTTP upstream by address


def test_which_upstreams_are_pooled() -> None:
    assert pool.pooled_origins(options()) == [pool.Origin("https", "api.example.com", 443)]
    assert pool.pooled_origins(options(openai_base_url="http://127.0.0.1:8000/v1")) == []
    assert pool.pooled_origins(options(openai_base_url="http://10.1.2.3:8000/v1", upstream_pool="all")) == [
        pool.Origin("http", "10.1.2.3", 8000)
    ]
    assert pool.pooled_origins(options(upstream_pool="off")) == []


def test_no_key_in_the_config(tmp_path: Path, certs) -> None:
    for changes in ({}, {"ssl_insecure": True}, {"ssl_verify_upstream_trusted_ca": str(certs.ca)}):
        text = config(tmp_path, **changes)
        assert TEST_KEY not in text and "bearer" not in text.lower()
    assert "%[req.hdr" not in text and "capture request" not in text and "%hr" not in text  # the log shows no header


def test_options_are_documented() -> None:
    table = (ROOT / "docs" / "options.md").read_text()
    for name, *_ in pool.POOL_OPTIONS:
        assert f"| `{name}` |" in table, f"option {name} is missing from docs/options.md's table"


def test_a_missing_haproxy_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    monkeypatch.setattr(pool, "find_haproxy", lambda: None)
    addon = pool.UpstreamPool()
    with taddons.context(addon) as tctx:
        tctx.options.add_option("openai_base_url", str, "https://api.example.com/v1", "")
        with pytest.raises(exceptions.OptionsError, match="apt-get install haproxy"):
            tctx.configure(addon, upstream_pool="https")
        tctx.configure(addon, upstream_pool="off")  # without the pool it runs
        with pytest.raises(exceptions.OptionsError, match="off, https or all"):
            tctx.configure(addon, upstream_pool="yes")


def test_an_option_change_restarts_the_sidecar_and_a_bad_one_keeps_it(certs) -> None:
    """Changed TLS options take effect at once (mitmweb's options editor); a bad one is refused."""
    from mitmproxy import exceptions
    from mitmproxy.addons import tlsconfig
    from mitmproxy.test import taddons

    needs_haproxy()
    addon = pool.UpstreamPool()
    with taddons.context(addon, tlsconfig.TlsConfig()) as tctx:
        tctx.options.add_option("openai_base_url", str, "https://127.0.0.1:9/v1", "")
        tctx.configure(addon, upstream_pool="https")
        addon.running()
        try:
            first = addon.sidecar
            assert first is not None and first.process.poll() is None
            assert 'ca-file "' + str(certs.ca) not in first.config
            tctx.configure(addon, ssl_verify_upstream_trusted_ca=str(certs.ca))
            second = addon.sidecar
            assert second is not first and f'ca-file "{certs.ca}"' in second.config
            assert list(addon.routes.values()) == list(second.routes.values())
            with pytest.raises(exceptions.OptionsError, match="does not exist"):
                tctx.configure(addon, ssl_verify_upstream_trusted_ca="/nonexistent/ca.pem")
            assert addon.sidecar is second and second.process.poll() is None
            tctx.configure(addon, upstream_pool="off")
            assert addon.sidecar is None and addon.routes == {}
        finally:
            addon.done()
        for sidecar in (first, second):
            assert sidecar.process.wait(10) is not None
            assert not sidecar.folder.exists()


def test_the_connector_is_in_the_chain_only_while_the_pool_serves() -> None:
    """With the pool off, no addon of it takes part in a flow's hooks (each would cost every hook its dispatch)."""
    from mitmproxy.addons import tlsconfig
    from mitmproxy.test import taddons

    def connectors(tctx) -> list[int]:
        return [i for i, a in enumerate(tctx.master.addons.chain) if isinstance(a, pool.PoolConnector)]

    addon = pool.UpstreamPool()
    with taddons.context(addon, tlsconfig.TlsConfig()) as tctx:
        tctx.options.add_option("openai_base_url", str, "https://127.0.0.1:9/v1", "")
        tctx.configure(addon, upstream_pool="off")
        addon.running()
        try:
            assert connectors(tctx) == []
            if pool.find_haproxy() is None:
                return
            tctx.configure(addon, upstream_pool="https")
            assert connectors(tctx) == [len(tctx.master.addons.chain) - 1]  # the last addon of the chain
            tctx.configure(addon, upstream_pool="off")
            assert connectors(tctx) == []
        finally:
            addon.done()


@pytest.mark.e2e
def test_make_run_with_the_pool_keeps_client_and_upstream_connections_warm(
    tls_upstream: UpstreamServer, certs, tmp_path: Path
) -> None:
    """What `make run` starts for an https upstream: HAProxy in front of one worker (scripts/workers.py)
    and the worker's pool: 12 requests on 12 client connections reach the worker and the upstream
    over a few warm connections."""
    from harness import script_module
    from harness.mitmdump import free_block

    needs_haproxy()
    workers = script_module(ROOT / "scripts" / "workers.py")

    port = free_block(2)  # HAProxy's port, and the worker's next to it
    processes = workers.start(
        1,
        "127.0.0.1",
        port,
        [
            "--set",
            f"openai_base_url={tls_upstream.base_url}",
            "--set",
            f"openai_api_key={TEST_KEY}",
            "--set",
            "upstream_pool=https",
            "--set",
            f"ssl_verify_upstream_trusted_ca={certs.ca}",
        ],
        tmp_path,
        log_files=True,
    )
    try:
        before = tls_upstream.accepted
        answers = [chat(f"http://127.0.0.1:{port}", f"w{n}", stream=n == 5) for n in range(12)]
    finally:
        workers.stop(processes)
    assert all(status == 200 for status, _ in answers), answers
    assert tls_upstream.accepted - before <= 2
    log = (tmp_path / "worker-1.log").read_text()
    # The start-up probe, then HAProxy's connections: a streamed answer ends its connection (Connection: close).
    assert log.count("client connect") <= 4, log  # without HAProxy in front: 13
    assert TEST_KEY not in log


# ---------------------------------------------------------------------------------------------
# Several upstreams (addon/upstreams/): every server's https origin is pooled


def test_every_servers_https_origin_is_pooled() -> None:
    urls = [
        "https://api.openai.com/v1",
        "https://openrouter.ai/api/v1",
        "http://gpu1:8000/v1",
        "https://api.openai.com/x",
    ]
    assert pool.pooled_origins(options(), urls) == [
        pool.Origin("https", "api.openai.com", 443),
        pool.Origin("https", "openrouter.ai", 443),
    ]
    assert pool.Origin("http", "gpu1", 8000) in pool.pooled_origins(options(upstream_pool="all"), urls)


def test_the_proxy_tells_the_pool_its_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mitmproxy import exceptions
    from mitmproxy.test import taddons

    from addon.proxy import OllamaProxy

    monkeypatch.setattr(pool, "find_haproxy", lambda: None)
    catalog = tmp_path / "models.toml"
    catalog.write_text('[servers.router]\nbase_url = "https://router.example/api/v1"\n')
    upstream_pool = pool.UpstreamPool()
    proxy = OllamaProxy(upstream_pool)
    with taddons.context(upstream_pool, proxy) as tctx:
        tctx.configure(proxy, openai_base_url="http://127.0.0.1:8000/v1", upstream_pool="https")
        assert upstream_pool.urls == ("http://127.0.0.1:8000/v1",)
        with pytest.raises(exceptions.OptionsError, match="apt-get install haproxy"):
            tctx.configure(proxy, model_catalog=str(catalog))  # an https server and no HAProxy: refused
        assert upstream_pool.urls == ("http://127.0.0.1:8000/v1",) and len(proxy.settings.servers) == 1
        tctx.configure(upstream_pool, upstream_pool="off")
        tctx.configure(proxy, model_catalog=str(catalog))
        assert upstream_pool.urls == ("http://127.0.0.1:8000/v1", "https://router.example:443/api/v1")


@pytest.mark.e2e
def test_several_tls_upstreams_each_through_the_pool(spawn, certs, tmp_path: Path) -> None:
    needs_haproxy()
    other_key = "sk-second-0123456789abcdef"
    with (
        UpstreamServer(tls=(str(certs.cert), str(certs.key))) as first,
        UpstreamServer(tls=(str(certs.cert), str(certs.key))) as second,
    ):
        second.fake.models = [{"id": "second-model", "object": "model", "created": 1}]
        catalog = tmp_path / "models.toml"
        catalog.write_text(
            f'[servers.second]\nbase_url = "{second.base_url}"\napi_key_env = "SECOND_KEY"\n'
            '[models."pinned"]\nserver = "second"\nupstream = "second-model"\n'
        )
        dump: Mitmdump = spawn(
            "reverse",
            f"openai_base_url={first.base_url}",
            f"openai_api_key={TEST_KEY}",
            f"model_catalog={catalog}",
            "upstream_pool=https",
            f"ssl_verify_upstream_trusted_ca={certs.ca}",
            environment={"SECOND_KEY": other_key},
        )
        before = (first.accepted, second.accepted)
        for n in range(6):
            body = {"model": "pinned" if n % 2 else "m", "messages": [{"role": "user", "content": f"n{n}"}]}
            connection = http.client.HTTPConnection("127.0.0.1", dump.port, timeout=20)
            connection.request("POST", "/api/chat", body=json.dumps({**body, "stream": False}))
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["message"]["content"] == f"echo: n{n}"
            connection.close()
        assert [r.body["model"] for r in second.fake.requests if r.method == "POST"] == ["second-model"] * 3
        assert {r.headers["authorization"] for r in second.fake.requests if r.method == "POST"} == {
            f"Bearer {other_key}"
        }
        assert {r.headers["authorization"] for r in first.fake.requests if r.method == "POST"} == {f"Bearer {TEST_KEY}"}
        assert first.accepted - before[0] <= 2 and second.accepted - before[1] <= 2, "warm connections, per server"
        log = dump.log()
        for server in (first, second):
            assert f"upstream pool: https://127.0.0.1:{server.port} is served through HAProxy" in log
        assert other_key not in log and TEST_KEY not in log


def test_the_config_serves_only_requests_with_the_token(tmp_path: Path) -> None:
    """Issue 21 §9: other local processes get 403 before the upstream is contacted; no slot is held
    without a request head; only a failed connect is retried."""
    text = config(tmp_path)
    assert "http-request deny deny_status 403 unless { req.hdr(x-ollama-pool) -m str test-token-0123456789" in text
    assert "http-request del-header x-ollama-pool" in text  # the upstream never sees it
    assert "timeout http-request 10s" in text
    assert "retry-on conn-failure" in text and "empty-response" not in text
