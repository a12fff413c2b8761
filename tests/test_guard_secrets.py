"""Keys stay secret (addon/guard/secrets.py, access.py): not in log lines, not in error answers, not in saved flows, not in what
mitmweb shows of flows. Each place is checked with the keys of every kind: the upstream key
(openai_api_key), the proxy's client key (ollama_api_key) and a forwarded client key."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import ollama
import pytest
from mitmproxy import http, io
from mitmproxy.addons.view import View
from mitmproxy.net.http import http1
from mitmproxy.test import taddons, tutils

from addon.guard import secrets as redact
from addon.proxy import OllamaProxy
from harness.inproc import client_flow
from harness.mitmdump import MITMDUMP, Mitmdump
from harness.upstream import UpstreamServer

UPSTREAM_KEY = "sk-upstream-secret-1a2b3c4d5e"
CLIENT_KEY = "ollama-proxy-secret-9z8y7x"
HELLO = [{"role": "user", "content": "hello"}]


def secret_free(data: bytes | str, *keys: str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for key in keys:
        assert key not in text, f"key {key[:6]}… leaked: …{text[max(text.find(key) - 300, 0) : text.find(key) + 100]}…"


# ---------------------------------------------------------------------------------------------
# Units


def test_scrub() -> None:
    redact.register("test", "sk-abcdef123456")
    try:
        assert redact.scrub("key sk-abcdef123456 here") == "key [redacted] here"
        assert redact.scrub("other sk-zz", ("sk-zz",)) == "other [redacted]"
        assert redact.scrub("other abc", ("abc",)) == "other abc"  # too short to be a key
        assert (
            redact.scrub_keylike("Incorrect API key provided: sk-abc***wxyz.")
            == "Incorrect API key provided: [redacted]."
        )
        assert (
            redact.scrub_keylike("Incorrect API key provided: whatever-it-is")
            == "Incorrect API key provided: [redacted]"
        )
    finally:
        redact.register("test", "")
    assert redact.scrub("key sk-abcdef123456") == "key sk-abcdef123456"


def test_log_scrubber_covers_every_handler() -> None:
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Collect()
    logging.getLogger().addHandler(handler)
    redact.register("test", UPSTREAM_KEY)
    try:
        redact.install_log_scrubber()
        logging.getLogger("mitmproxy.something").warning("header %s sent", f"Bearer {UPSTREAM_KEY}")
        logging.getLogger("ollama_proxy").warning(f"raw {UPSTREAM_KEY}")
    finally:
        redact.register("test", "")
        redact.uninstall_log_scrubber()
        logging.getLogger().removeHandler(handler)
    assert records == ["header Bearer [redacted] sent", "raw [redacted]"]


async def test_views_never_see_the_key_but_the_wire_does() -> None:
    """The addon chain as mitmweb has it: script addons, then View, then the injector at the very end.

    Every state the view stores or broadcasts is captured; the request mitmproxy sends has the key.
    """
    proxy = OllamaProxy()
    view = View()
    seen: list[str] = []

    def record(flow: http.HTTPFlow) -> None:  # (signals hold their receivers weakly: keep a name)
        seen.append(json.dumps(flow.get_state(), default=repr))

    view.sig_view_add.connect(record)
    view.sig_view_update.connect(record)
    with taddons.context(proxy, view) as tctx:
        tctx.configure(
            proxy, openai_base_url="http://127.0.0.1:9/v1", openai_api_key=UPSTREAM_KEY, ollama_api_key=CLIENT_KEY
        )
        await proxy.running()  # appends the injector to the end of the chain
        assert type(tctx.master.addons.chain[-1]).__name__ == "KeyInjector"
        flow = client_flow(
            "/api/chat", {"model": "m", "messages": HELLO}, headers={"authorization": f"Bearer {CLIENT_KEY}"}
        )
        await tctx.master.addons.handle_lifecycle(_hook("requestheaders", flow))
        await tctx.master.addons.handle_lifecycle(_hook("request", flow))
        # What is sent upstream has the key; what anything reads of the flow does not.
        assert flow.request.headers["authorization"] == "Bearer [redacted]"
        assert f"authorization: Bearer {UPSTREAM_KEY}\r\n".encode() in http1.assemble_request_head(flow.request)
        secret_free(json.dumps(flow.get_state(), default=repr), UPSTREAM_KEY, CLIENT_KEY)
        # The answer: from its headers on, the key is gone from the flow again.
        flow.response = tutils.tresp(
            headers=http.Headers(content_type="application/json"),
            content=json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode(),
        )
        await tctx.master.addons.handle_lifecycle(_hook("responseheaders", flow))
        assert flow.request.headers["authorization"] == "Bearer [redacted]"
        await tctx.master.addons.handle_lifecycle(_hook("response", flow))
        view.update([flow])
    assert len(seen) >= 3
    for state in seen:
        secret_free(state, UPSTREAM_KEY, CLIENT_KEY)
    secret_free(json.dumps(flow.get_state(), default=repr), UPSTREAM_KEY, CLIENT_KEY)


def _hook(name: str, flow: http.HTTPFlow):
    from mitmproxy.proxy.layers.http import (
        HttpRequestHeadersHook,
        HttpRequestHook,
        HttpResponseHeadersHook,
        HttpResponseHook,
    )

    return {
        "requestheaders": HttpRequestHeadersHook,
        "request": HttpRequestHook,
        "responseheaders": HttpResponseHeadersHook,
        "response": HttpResponseHook,
    }[name](flow)


# ---------------------------------------------------------------------------------------------
# End to end: logs, errors, saved flows, mitmweb


def traffic(url: str, upstream: UpstreamServer, forwarded: str) -> None:
    """Requests of every kind: good, streamed, local, upstream errors, proxy 401s, broken streams."""
    good = ollama.Client(host=url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20)
    good.chat(model="m", messages=HELLO)
    list(good.chat(model="m", messages=HELLO, stream=True))
    good.generate(model="m", prompt="x")
    good._client.get("/api/version")
    upstream.fake.queue(
        401,
        json.dumps({"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY} / {forwarded}"}}),
        {"content-type": "application/json"},
    )
    with pytest.raises(ollama.ResponseError) as caught:
        good.chat(model="m", messages=HELLO)
    secret_free(caught.value.error, UPSTREAM_KEY, CLIENT_KEY, forwarded)
    upstream.fake.queue(500, f"internal error, key was {UPSTREAM_KEY}", {"content-type": "text/plain"})
    with pytest.raises(ollama.ResponseError) as caught:
        good.chat(model="m", messages=HELLO)
    secret_free(caught.value.error, UPSTREAM_KEY)
    with pytest.raises(ollama.ResponseError):
        list(good.chat(model="fault:reset", messages=HELLO, stream=True))
    for wrong in ("Bearer nope", f"Bearer {CLIENT_KEY[:-1]}"):
        with pytest.raises(ollama.ResponseError) as caught:
            ollama.Client(host=url, headers={"Authorization": wrong}, timeout=20).chat(model="m", messages=HELLO)
        secret_free(caught.value.error, CLIENT_KEY[:-1])


@pytest.mark.e2e
@pytest.mark.parametrize("forward", [False, True])
def test_no_key_in_logs_errors_or_saved_flows(spawn, upstream: UpstreamServer, tmp_path, forward: bool) -> None:
    saved = tmp_path / "all.flow"
    dump = spawn(
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={UPSTREAM_KEY}",
        f"ollama_api_key={CLIENT_KEY}",
        f"forward_client_key={str(forward).lower()}",
        f"save_stream_file={saved}",
        "flow_detail=4",
        "store_streamed_bodies=true",
    )
    traffic(dump.url, upstream, CLIENT_KEY)
    if forward:
        assert upstream.fake.requests[0].headers["authorization"] == f"Bearer {CLIENT_KEY}"
    else:
        sent = next(r for r in upstream.fake.requests if r.path.endswith("/chat/completions"))
        assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    time.sleep(0.3)
    dump.stop()
    log = dump.log()
    assert "authorization: Bearer [redacted]" in log.lower() or "Bearer [redacted]" in log, (
        "flow_detail=4 printed the headers"
    )
    secret_free(log, UPSTREAM_KEY, CLIENT_KEY)
    data = saved.read_bytes()
    flows = list(io.FlowReader(open(saved, "rb")).stream())
    assert len(flows) >= 8
    secret_free(data, UPSTREAM_KEY, CLIENT_KEY)


@pytest.mark.e2e
def test_no_key_in_saved_flows_of_failed_requests(spawn, tmp_path) -> None:
    """Flows that end in mitmproxy's `error` (unreachable upstream, timeout) are saved without the key too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = tmp_path / "failed.flow"
    dump = spawn(
        "reverse",
        f"openai_base_url=http://127.0.0.1:{port}/v1",
        f"openai_api_key={UPSTREAM_KEY}",
        f"save_stream_file={saved}",
        "flow_detail=4",
    )
    client = ollama.Client(host=dump.url, timeout=20)
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError):
            list(client.chat(model="m", messages=HELLO, stream=True)) if stream else client.chat(
                model="m", messages=HELLO
            )
    time.sleep(0.3)
    dump.stop()
    flows = list(io.FlowReader(open(saved, "rb")).stream())
    assert len(flows) == 2 and all(f.error for f in flows)
    secret_free(saved.read_bytes(), UPSTREAM_KEY)
    secret_free(dump.log(), UPSTREAM_KEY)


@pytest.mark.e2e
def test_mitmweb_flows_show_no_key(upstream: UpstreamServer, tmp_path) -> None:
    web_port = _free_port()
    web = Mitmdump(
        tmp_path,
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"ollama_api_key={CLIENT_KEY}",
        "web_password=test-web-pw",
        "web_open_browser=false",
        "store_streamed_bodies=true",
        program=MITMDUMP.parent / "mitmweb",
        extra=("--web-host", "127.0.0.1", "--web-port", str(web_port)),
        environment={"OPENAI_API_KEY": UPSTREAM_KEY},
    )
    try:
        traffic(web.url, upstream, CLIENT_KEY)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{web_port}", headers={"Authorization": "Bearer test-web-pw"}, timeout=10
        )
        # While a request waits for the upstream, mitmweb's flow API shows it without the key.
        upstream.fake.queue(
            200, {"choices": [{"message": {"role": "assistant", "content": "late"}, "finish_reason": "stop"}]}, hang=1.5
        )
        waiting = threading.Thread(
            target=lambda: ollama.Client(
                host=web.url, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20
            ).chat(model="m", messages=HELLO)
        )
        waiting.start()
        deadline = time.monotonic() + 5
        seen_in_flight = False
        while waiting.is_alive() and time.monotonic() < deadline:
            listing = api.get("/flows")
            secret_free(listing.content, UPSTREAM_KEY, CLIENT_KEY)
            seen_in_flight |= any(f.get("response") is None for f in listing.json())
            time.sleep(0.05)
        waiting.join(20)
        assert seen_in_flight, "a flow was looked at while it waited for the upstream"
        flows = api.get("/flows")
        assert flows.status_code == 200 and len(flows.json()) >= 8
        secret_free(flows.content, UPSTREAM_KEY, CLIENT_KEY)
        assert any(h == ["authorization", "Bearer [redacted]"] for f in flows.json() for h in f["request"]["headers"])
        for flow in flows.json():
            for part in ("request", "response"):
                if not (flow.get(part) or {}).get("contentLength"):
                    continue  # (mitmweb itself fails on content it does not have)
                content = api.get(f"/flows/{flow['id']}/{part}/content.data")
                secret_free(content.content, UPSTREAM_KEY, CLIENT_KEY)
        dump = api.get("/flows/dump")
        assert dump.status_code == 200
        secret_free(dump.content, UPSTREAM_KEY, CLIENT_KEY)
        # The upstream key from $OPENAI_API_KEY is no option value: the Options page does not show it.
        # (ollama_api_key, set as an option, is shown there: mitmweb shows every option's value.)
        options = api.get("/options")
        assert options.status_code == 200 and options.json()["openai_api_key"]["value"] == ""
        secret_free(options.content, UPSTREAM_KEY)
        sent = next(r for r in upstream.fake.requests if r.path.endswith("/chat/completions"))
        assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    finally:
        web.stop()
    secret_free(web.log(), UPSTREAM_KEY, CLIENT_KEY)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_reloaded_script_rebinds_the_injector() -> None:
    first, second = OllamaProxy(), OllamaProxy()
    with taddons.context(first) as tctx:
        tctx.configure(first)
        await first.running()
        await second.running()  # as after mitmproxy reloads the script: a new proxy, the same injector
        injectors = [a for a in tctx.master.addons.chain if type(a).__name__ == "KeyInjector"]
        assert len(injectors) == 1 and injectors[0].exchange_of == second.exchanges.get


def test_the_request_head_is_written_from_bytes_of_the_headers() -> None:
    """WireHeaders relies on mitmproxy writing an HTTP/1 request head as bytes(request.headers)."""
    import inspect

    from mitmproxy.net.http.http1 import assemble
    from mitmproxy.proxy.layers.http import _http1

    assert "bytes(request_data.headers)" in inspect.getsource(assemble._assemble_request_headers)
    assert "assemble_request_head(" in inspect.getsource(_http1.Http1Client.send)
    wire = redact.WireHeaders(
        http.Headers(host="h", authorization="Bearer [redacted]").fields, f"Bearer {UPSTREAM_KEY}"
    )
    request = tutils.treq(headers=wire)
    assert f"Bearer {UPSTREAM_KEY}".encode() in http1.assemble_request_head(request)
    secret_free(json.dumps(request.get_state(), default=repr), UPSTREAM_KEY)


# ---------------------------------------------------------------------------------------------
# Issue 13: every encoding, per-flow keys, HTTP/1.1 upstream


def test_every_form_of_a_configured_key_is_scrubbed() -> None:
    import base64
    from urllib.parse import quote, quote_plus

    key = "sk-hostile/Up+stream=7f3a9c1e5b2d4a6f"
    redact.register("test", key)
    try:
        header = f"Bearer {key}".encode()
        for shown in (
            key,
            key.replace("/", "\\/"),
            quote(key, safe=""),
            quote(key, safe="").replace("%2F", "%2f").replace("%2B", "%2b").replace("%3D", "%3d"),
            quote_plus(key),
            key.encode().hex(),
            *(base64.b64encode(pad + header).decode() for pad in (b"", b"a", b"ab")),
            *(base64.urlsafe_b64encode(pad + header).decode() for pad in (b"", b"a", b"ab")),
        ):
            text = f"echo: {shown} ."
            assert redact.shows_secret(text.encode()), shown
            clean = redact.scrub(text)
            assert "[redacted]" in clean and key not in clean and shown not in clean, (shown, clean)
            assert redact.scrub_bytes(text.encode()) == clean.encode()
        assert redact.scrub("nothing to see") == "nothing to see"
        assert not redact.shows_secret(b'{"choices": [{"message": {"content": "fine"}}]}')
    finally:
        redact.register("test", "")
    assert not redact.shows_secret(key.encode())


def test_a_forwarded_key_is_its_own_flows_secret_only() -> None:
    """A client key that is a common word hides nothing in other flows, nor in any answer (no global list)."""
    assert redact.scrub('{"choices": []}') == '{"choices": []}'
    assert redact.scrub('{"choices": []} key choices', ("choices",)) == '{"[redacted]": []} key [redacted]'
    assert not redact.shows_secret(b'{"choices": []}')
    assert redact.scrub("abc", ("abc",)) == "abc"  # too short to be scanned for


def test_the_log_scrubber_replaces_mitmproxy_quoting_upstream_bytes() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "Unexpected data from server: %r", (b"x-echo: 7f3a",), None)
    assert redact.LogScrubber().filter(record)
    assert "7f3a" not in record.getMessage() and "not shown" in record.getMessage()


def test_http2_requests_go_upstream_as_http1_with_wire_only_headers() -> None:
    """mitmproxy converts an HTTP/2 request for an HTTP/1 server through a copy (which would lose
    WireHeaders), and tlsconfig offers an upstream the client's ALPNs unless an addon set them."""
    import inspect

    from mitmproxy.addons import tlsconfig
    from mitmproxy.proxy.layers.http import _http1

    send = inspect.getsource(_http1.Http1Client.send)
    assert "request.is_http2 or request.is_http3" in send and "request.copy()" in send
    assert "if not server.alpn_offers:" in inspect.getsource(tlsconfig.TlsConfig.tls_start_server)
    request = tutils.treq(http_version=b"HTTP/2.0")
    request.headers = redact.WireHeaders(http.Headers(authorization="Bearer [redacted]").fields, "Bearer k")
    assert not isinstance(request.copy().headers, redact.WireHeaders)  # why send_upstream makes it HTTP/1.1
