"""§7 Small protocol points.

- `Connection: close` from the client, and HTTP/1.0 without keep-alive, are honoured on every
  route: the answer says `Connection: close` and the proxy closes the connection after it (today
  the translated routes lose the header with the rewritten request and keep the connection open).
- Client-controlled text (a model name, a role) with CR/LF or terminal escape codes cannot forge
  lines or drive the terminal in mitmdump's output or the addon's one-line log.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from hostile.evil import EvilUpstream
from hostile.test_echoed_secrets import body_for
from hostile.tools import UPSTREAM_KEY, Quiet, closes_after, read_answer, request_bytes

pytestmark = pytest.mark.e2e


ROUTES = [
    pytest.param("GET", "/api/version", False, id="GET /api/version"),
    pytest.param("POST", "/api/chat", False, id="POST /api/chat"),
    pytest.param("POST", "/api/chat", True, id="POST /api/chat stream"),
    pytest.param("POST", "/api/generate", False, id="POST /api/generate"),
    pytest.param("POST", "/api/embed", False, id="POST /api/embed"),
    pytest.param("POST", "/v1/chat/completions", False, id="POST /v1/chat/completions"),
    pytest.param("POST", "/v1/chat/completions", True, id="POST /v1/chat/completions stream"),
    pytest.param("GET", "/api/tags", False, id="GET /api/tags"),
]


def send(port: int, method: str, path: str, stream: bool, headers: dict[str, str], version: str = "HTTP/1.1"):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = body_for(path, "m", stream) if method == "POST" else None
    sock.sendall(request_bytes(method, path, body, headers, version=version))
    return sock


@pytest.mark.parametrize(("method", "path", "stream"), ROUTES)
def test_connection_close_is_honoured(shared, evil: EvilUpstream, method: str, path: str, stream: bool) -> None:
    with send(shared.port, method, path, stream, {"Connection": "close"}) as sock:
        answer, rest = read_answer(sock, 10)
        assert answer.status == 200, answer
        assert rest == b"" and closes_after(sock, 1.5), "the proxy kept the connection open after the answer"


@pytest.mark.parametrize(("method", "path", "stream"), ROUTES)
def test_http_1_0_without_keep_alive_is_closed(
    shared, evil: EvilUpstream, method: str, path: str, stream: bool
) -> None:
    """An HTTP/1.0 client delimits the answer by the close (and cannot read a chunked body)."""
    with send(shared.port, method, path, stream, {}, version="HTTP/1.0") as sock:
        answer, _ = read_answer(sock, 5, until_close=True)
        assert answer.status == 200, answer
        assert answer.header("transfer-encoding") is None, "chunked encoding is not HTTP/1.0"
        assert answer.body, answer


def test_keep_alive_still_works_without_close(shared, evil: EvilUpstream) -> None:
    """Guard for the fix: without `Connection: close` one connection serves several requests — and
    with it on the last one, the proxy closes after that answer."""
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        for last in (False, False, True):
            sock.sendall(
                request_bytes(
                    "POST", "/api/chat", body_for("/api/chat", "m", False), {"Connection": "close"} if last else {}
                )
            )
            answer, rest = read_answer(sock, 10)
            assert answer.status == 200 and rest == b""
        assert closes_after(sock, 1.5)


# ---------------------------------------------------------------------------------------------
# Forged log lines

FORGED = "m\r\n[12:00:00.000][127.0.0.1:1] FORGED client connect\n\x1b[2J\x1b]0;pwned\x07\x1b[31mred\x1b[0m\rFORGED-CR"
CASES = [
    ("/api/chat", {"model": FORGED, "messages": [{"role": "user", "content": "hi"}], "stream": False}),
    ("/api/chat", {"model": FORGED, "messages": [{"role": "user", "content": "hi"}], "stream": True}),
    ("/api/generate", {"model": FORGED, "prompt": "hi", "stream": False}),
    ("/api/embed", {"model": FORGED, "input": "hi"}),
    ("/v1/chat/completions", {"model": FORGED, "messages": [{"role": "user", "content": "hi"}]}),
    (
        "/api/chat",
        {"model": "m", "messages": [{"role": FORGED, "content": "hi"}], "stream": False},
    ),  # a 400 that names the role
    (
        "/api/chat",
        {
            "model": "evil:" + FORGED.replace("m\r", "no-such-act\r", 1),
            "messages": [{"role": "user", "content": "hi"}],
            "stream": False,
        },
    ),  # the upstream's 404 repeats the model name
    ("/api/show", {"model": FORGED}),
]


@pytest.fixture(scope="module")
def forged_runs(evil: EvilUpstream, sentinel, tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    folder = tmp_path_factory.mktemp("forged")
    dumps = {
        level: Quiet(
            folder,
            f"reverse:http://127.0.0.1:{sentinel.port}",
            f"openai_base_url={evil.base_url}",
            f"openai_api_key={UPSTREAM_KEY}",
            f"flow_detail={level}",
        )
        for level in (0, 1, 3)
    }
    try:

        def run(dump: Quiet) -> None:
            for path, body in CASES:
                with socket.create_connection(("127.0.0.1", dump.port), timeout=10) as sock:
                    sock.sendall(request_bytes("POST", path, body))
                    read_answer(sock, 10)

        with ThreadPoolExecutor(len(dumps)) as pool:
            list(pool.map(run, dumps.values()))
    finally:
        for dump in dumps.values():
            dump.stop()
    return {level: dump.log() for level, dump in dumps.items()}


@pytest.mark.parametrize("flow_detail", [0, 1, 3])
def test_client_text_cannot_forge_output_lines(forged_runs: dict[int, str], flow_detail: int) -> None:
    log = forged_runs[flow_detail]
    assert "m\\r\\n" in log or "FORGED" in log, "the model name was logged at all (else this test proves nothing)"
    for control in ("\x1b", "\x07", "\r"):
        assert control not in log, (
            f"{control!r} reached mitmdump's output: …{log[max(log.find(control) - 200, 0) : log.find(control) + 80]!r}…"
        )
    forged = [line for line in log.split("\n") if line.lstrip().startswith(("[12:00:00.000]", "FORGED"))]
    assert not forged, f"forged lines: {forged[:5]}"
