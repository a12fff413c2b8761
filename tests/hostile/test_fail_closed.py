"""§5 Fail closed: whatever goes wrong, the client gets a clear Ollama-style error, and nothing
untranslated or invalid leaves the proxy.

- Any exception while handling a request ends in a 400/500 `{"error"}` answer: mitmproxy must
  never forward the untranslated request to the reverse target (here the `sentinel`, which counts
  connections: it must get none).
- Numbers that overflow (`1e400`), `NaN`/`Infinity`, and integers beyond int64 from the client: 400
  (as Ollama's Go decoder refuses them); never sent upstream.
- From the upstream: non-finite numbers: 502 (no client ever gets invalid JSON); on the Ollama routes
  usage counts that are not integers in [0, 2^63): 502; a 200 with `{}` or `{"error": ...}`: 502
  with the upstream's message; interim (1xx) answers, redirects and HTTP/1 trailers: 502, never a hang.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from hostile.evil import EvilUpstream, Tarpit
from hostile.tools import HELLO, error_message, strict_json

pytestmark = pytest.mark.e2e

CHAT = '{"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}], "options": {"OPTION": VALUE}}'
V1_CHAT = '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "OPTION": VALUE}'


def chat_with(option: str, value: str) -> tuple[str, bytes]:
    return "/api/chat", CHAT.replace("OPTION", option).replace("VALUE", value).encode()


CLIENT_NUMBERS = [
    pytest.param(*chat_with("num_predict", "1e400"), id="chat num_predict 1e400"),
    pytest.param(*chat_with("num_ctx", "1e999"), id="chat num_ctx 1e999"),
    pytest.param(*chat_with("seed", "-1e400"), id="chat seed -1e400"),
    pytest.param(*chat_with("temperature", "1e400"), id="chat temperature 1e400"),
    pytest.param(*chat_with("top_p", "-1e400"), id="chat top_p -1e400"),
    pytest.param(*chat_with("num_predict", "1e30"), id="chat num_predict 1e30"),
    pytest.param(*chat_with("num_predict", "9223372036854775808"), id="chat num_predict 2^63"),
    pytest.param(*chat_with("seed", "-9223372036854775809"), id="chat seed -2^63-1"),
    pytest.param(*chat_with("temperature", "NaN"), id="chat temperature NaN"),
    pytest.param(*chat_with("temperature", "Infinity"), id="chat temperature Infinity"),
    pytest.param(
        "/api/chat",
        b'{"model": "m", "stream": false, "keep_alive": 1e400, "messages": [{"role": "user", "content": "hi"}]}',
        id="chat keep_alive 1e400",
    ),
    pytest.param(
        "/api/generate",
        b'{"model": "m", "prompt": "hi", "stream": false, "options": {"num_predict": 1e400}}',
        id="generate num_predict 1e400",
    ),
    pytest.param("/api/embed", b'{"model": "m", "input": "hi", "dimensions": 1e400}', id="embed dimensions 1e400"),
    pytest.param(
        "/v1/chat/completions",
        V1_CHAT.replace("OPTION", "temperature").replace("VALUE", "1e400").encode(),
        id="v1 temperature 1e400",
    ),
    pytest.param(
        "/v1/chat/completions",
        V1_CHAT.replace("OPTION", "max_tokens").replace("VALUE", "1e400").encode(),
        id="v1 max_tokens 1e400",
    ),
    pytest.param(
        "/v1/chat/completions",
        V1_CHAT.replace("OPTION", "temperature").replace("VALUE", "NaN").encode(),
        id="v1 temperature NaN",
    ),
    pytest.param(
        "/v1/chat/completions",
        V1_CHAT.replace("OPTION", "seed").replace("VALUE", "-Infinity").encode(),
        id="v1 seed -Infinity",
    ),
    pytest.param(
        "/v1/embeddings", b'{"model": "m", "input": "hi", "dimensions": 1e400}', id="v1 embeddings dimensions 1e400"
    ),
]


@pytest.mark.parametrize(("path", "body"), CLIENT_NUMBERS)
def test_client_numbers_that_are_not_numbers_are_refused(
    shared, evil: EvilUpstream, sentinel: Tarpit, path: str, body: bytes
) -> None:
    before, mark = sentinel.connections, shared.mark()
    try:  # (forwarded to the sentinel, the request would never be answered)
        response = httpx.post(shared.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=3)
    except httpx.ReadTimeout:
        pytest.fail(f"no answer; the sentinel (reverse target) got {sentinel.connections - before} connection(s)")
    assert response.status_code == 400, (response.status_code, response.text[:300])
    error_message(response.content)
    assert evil.answered() == [], f"went upstream: {evil.answered()[0].raw[:300]!r}"
    assert sentinel.connections == before, "forwarded untranslated to the reverse target"
    log = shared.since(mark)
    assert "Traceback" not in log and "Addon error" not in log, log[-2000:]


ODD_VALUES = [
    "1e400",
    "-1e400",
    "1e30",
    "9223372036854775808",
    "true",
    "[]",
    "{}",
    '"x"',
    "null",
    "[1e400]",
    '{"a": 1e400}',
]
FIELDS = {
    "/api/chat": (
        '{"model": "m", "stream": false, "messages": [{"role": "user", "content": "hi"}], FIELD}',
        [
            '"options": {"num_predict": V}',
            '"options": {"temperature": V}',
            '"options": {"stop": V}',
            '"options": V',
            '"keep_alive": V',
            '"format": V',
            '"think": V',
            '"tools": V',
            '"tools": [{"type": "function", "function": {"name": "f", "parameters": V}}]',
            '"logprobs": V',
            '"top_logprobs": V',
        ],
    ),
    "/api/generate": (
        '{"model": "m", "stream": false, "prompt": "hi", FIELD}',
        [
            '"options": {"num_predict": V}',
            '"options": {"seed": V}',
            '"suffix": V',
            '"context": V',
            '"raw": V',
            '"system": V',
        ],
    ),
    "/api/embed": (
        '{"model": "m", "input": "hi", FIELD}',
        ['"dimensions": V', '"truncate": V', '"options": {"num_ctx": V}'],
    ),
    "/v1/chat/completions": (
        '{"model": "m", "messages": [{"role": "user", "content": "hi"}], FIELD}',
        ['"temperature": V', '"max_tokens": V', '"n": V', '"stop": V', '"logit_bias": {"1": V}'],
    ),
}


def test_odd_values_in_every_field_fail_closed(shared, evil: EvilUpstream, sentinel: Tarpit) -> None:
    """Every field of the translated routes with values of every odd kind: each answer is a 200 or a
    4xx with an error, nothing untranslated is forwarded, and what goes upstream is strict JSON."""
    before, mark = sentinel.connections, shared.mark()
    cases = [
        (path, template.replace("FIELD", field.replace("V", value)))
        for path, (template, fields) in FIELDS.items()
        for field in fields
        for value in ODD_VALUES
    ]

    def send(case: tuple[str, str]) -> httpx.Response | Exception:
        try:
            return httpx.post(
                shared.url + case[0], content=case[1].encode(), headers={"Content-Type": "application/json"}, timeout=3
            )
        except httpx.HTTPError as e:
            return e

    with ThreadPoolExecutor(16) as pool:  # (the ones forwarded to the sentinel wait 3 s each)
        answers = list(pool.map(send, cases))
    problems = []
    for (path, body), response in zip(cases, answers, strict=False):
        if isinstance(response, Exception):
            problems.append(f"{path} {body}: no answer ({response!r})")
        elif response.status_code != 200 and not (400 <= response.status_code < 500):
            problems.append(f"{path} {body}: {response.status_code} {response.text[:200]}")
        elif response.status_code != 200:
            error_message(response.content)
    for seen in evil.answered():
        try:
            strict_json(seen.raw)
        except ValueError as e:
            problems.append(f"went upstream as invalid JSON ({e}): {seen.raw[:200]!r}")
    assert sentinel.connections == before, "a request was forwarded untranslated to the reverse target"
    log = shared.since(mark)
    assert not problems, "\n".join(problems[:30])
    assert "Traceback" not in log and "Addon error" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------------
# From the upstream


def post(url: str, path: str, model: str, stream: bool = False, timeout: float = 15) -> httpx.Response:
    if "embed" in path:
        body = {"model": model, "input": "hi"} if path != "/api/embeddings" else {"model": model, "prompt": "hi"}
    elif path in ("/api/generate", "/v1/completions"):
        body = {"model": model, "prompt": "hi", "stream": stream}
    else:
        body = {"model": model, "messages": HELLO, "stream": stream}
    return httpx.post(url + path, json=body, timeout=timeout)


@pytest.mark.parametrize(
    ("act", "path"),
    [
        pytest.param("emb-nan", "/api/embed"),
        pytest.param("emb-inf", "/api/embed"),
        pytest.param("emb-overflow", "/api/embed"),
        pytest.param("emb-nan", "/api/embeddings"),
        pytest.param("emb-overflow", "/api/embeddings"),
        pytest.param("emb-nan", "/v1/embeddings"),
        pytest.param("emb-overflow", "/v1/embeddings"),
        pytest.param("created-nan", "/v1/chat/completions"),
        pytest.param("usage-nan", "/v1/chat/completions"),
        pytest.param("usage-nan", "/api/chat"),
    ],
)
def test_upstream_numbers_that_are_not_numbers_are_a_502(shared, evil: EvilUpstream, act: str, path: str) -> None:
    mark = shared.mark()
    response = post(shared.url, path, f"evil:{act}")
    assert response.status_code == 502, (response.status_code, response.text[:300])
    assert "upstream" in error_message(response.content)
    assert "Traceback" not in shared.since(mark)


def test_a_huge_but_finite_number_is_a_number(shared, evil: EvilUpstream) -> None:
    """10^30 in an embedding is valid JSON and a valid float: served, normalised (guard for the fix)."""
    response = post(shared.url, "/api/embed", "evil:emb-bigint")
    assert response.status_code == 200 and strict_json(response.content)["embeddings"][0][1] == pytest.approx(1.0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("act", ["usage-string", "usage-list", "usage-huge", "usage-bigint", "usage-negative"])
def test_invalid_usage_counts_are_a_502_on_ollama_routes(shared, evil: EvilUpstream, act: str, stream: bool) -> None:
    """Ollama's counts are Go ints: a count that is not an integer in [0, 2^63) is the upstream's fault."""
    mark = shared.mark()
    response = post(shared.url, "/api/chat", f"evil:{act}", stream)
    if stream:  # the content went out already: the last line says what is wrong
        lines = [strict_json(line) for line in response.content.splitlines() if line.strip()]
        assert response.status_code in (200, 502) and "usage" in lines[-1].get("error", ""), lines[-1]
        assert not any(line.get("done") for line in lines)
    else:
        assert response.status_code == 502 and "usage" in error_message(response.content), response.text[:300]
    log = shared.since(mark)
    assert "Traceback" not in log and "Addon error" not in log, log[-2000:]


@pytest.mark.parametrize("act", ["usage-string", "usage-list", "usage-bigint", "usage-negative"])
def test_odd_usage_passes_through_v1_without_an_error(shared, evil: EvilUpstream, act: str) -> None:
    """/v1 answers are the upstream's: valid JSON passes unchanged; the proxy only must not fail on it."""
    mark = shared.mark()
    response = post(shared.url, "/v1/chat/completions", f"evil:{act}")
    assert response.status_code == 200 and strict_json(response.content)["choices"][0]["message"]["content"] == "fine"
    log = shared.since(mark)
    assert "Traceback" not in log and "Addon error" not in log, log[-2000:]


ANSWERLESS_ROUTES = [
    ("/api/chat", False),
    ("/api/chat", True),
    ("/api/generate", False),
    ("/api/embed", False),
    ("/api/embeddings", False),
    ("/v1/chat/completions", False),
    ("/v1/embeddings", False),
]


@pytest.mark.parametrize(
    ("act", "path", "stream"),
    [
        (act, path, stream)
        for act in ("empty-object", "error-object", "error-string")
        for path, stream in ANSWERLESS_ROUTES
    ],
)
def test_upstream_200_without_an_answer_is_a_502(shared, evil: EvilUpstream, act: str, path: str, stream: bool) -> None:
    response = post(shared.url, path, f"evil:{act}", stream)
    assert response.status_code == 502, (response.status_code, response.text[:300])
    message = error_message(response.content)
    if act != "empty-object":
        assert "quota exceeded" in message, message


# ---------------------------------------------------------------------------------------------
# Answers mitmproxy itself cannot read: no hang, a 502


def concurrently(url: str, calls: list[tuple[str, bool]], act: str, timeout: float = 8) -> list:
    def one(call):
        try:
            return post(url, call[0], f"evil:{act}", call[1], timeout)
        except httpx.HTTPError as e:
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


def test_upstream_trailers_do_not_hang_the_client(shared, evil: EvilUpstream) -> None:
    """A complete chunked answer with a trailer: a 502 at once (default upstream_timeout, 300 s)."""
    results = concurrently(
        shared.url, [("/api/chat", False), ("/v1/chat/completions", False), ("/api/embed", False)], "echo-trailers", 5
    )
    for result in results:
        assert isinstance(result, httpx.Response), f"no answer: {result!r}"
        assert result.status_code == 502 and error_message(result.content), result.text[:300]


def test_upstream_interim_answer_is_a_502(shared, evil: EvilUpstream) -> None:
    for result in concurrently(
        shared.url,
        [("/api/chat", False), ("/v1/chat/completions", False), ("/v1/embeddings", False)],
        "echo-early-hints",
        timeout=4,
    ):
        assert isinstance(result, httpx.Response), f"no answer: {result!r}"
        assert result.status_code == 502 and error_message(result.content), result.text[:300]


def test_upstream_redirect_is_a_502(shared, evil: EvilUpstream) -> None:
    for path in ("/api/chat", "/v1/chat/completions", "/v1/embeddings"):
        response = post(shared.url, path, "evil:echo-redirect")
        assert response.status_code == 502 and "location" not in response.headers, (
            path,
            response.status_code,
            response.headers,
        )
        assert "redirect" in error_message(response.content).lower() or "307" in error_message(response.content)
