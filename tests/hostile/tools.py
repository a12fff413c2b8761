"""Helpers of the hostile suite: measuring a mitmdump process, finding a secret in any encoding,
and speaking raw HTTP/1 to the proxy."""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

from harness.mitmdump import Mitmdump

# The upstream key: with characters that URL-encoding and base64 alignment change, so that an
# encoded copy is not simply the plain one.
UPSTREAM_KEY = "sk-hostile/Up+stream=7f3a9c1e5b2d4a6f"
CLIENT_KEY = "ollama-hostile-client-4c8e1a9b"
HELLO = [{"role": "user", "content": "hello"}]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Quiet(Mitmdump):
    """A Mitmdump whose stop() never fails the test (the hostile tests check the log themselves,
    and an xfail test must not turn into an error at teardown)."""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._log.closed:
            self._log.close()

    def mark(self) -> int:
        """A position in the log; `since(mark)` is what was logged after it."""
        return len(self.log())

    def since(self, mark: int) -> str:
        return self.log()[mark:]


# ---------------------------------------------------------------------------------------------
# The process: memory and CPU from /proc


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had (MB)."""
    return status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: `echo 5 > /proc/<pid>/clear_refs`)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process, all threads (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


# ---------------------------------------------------------------------------------------------
# A secret in any encoding


def encodings(secret: str) -> dict[str, bytes]:
    """Byte patterns whose presence shows `secret`: plain, JSON-escaped, URL-encoded, hex, and base64
    (standard and URL-safe) at each of the three alignments it can have inside a longer text."""
    raw = secret.encode()
    found = {
        "plain": raw,
        "json-escaped": secret.replace("/", "\\/").encode(),
        "url-encoded": quote(secret, safe="").encode(),
        "url-encoded (lower)": quote(secret, safe="")
        .replace("%2F", "%2f")
        .replace("%2B", "%2b")
        .replace("%3D", "%3d")
        .encode(),
        "form-encoded": quote_plus(secret).encode(),
        "hex": raw.hex().encode(),
    }
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw)
        start, end = (offset * 8 + 5) // 6, ((offset + len(raw)) * 8) // 6
        found[f"base64@{offset}"] = encoded[start:end]
        found[f"base64url@{offset}"] = base64.urlsafe_b64encode(b"\0" * offset + raw)[start:end]
    distinct: dict[bytes, str] = {}
    for name, pattern in found.items():
        distinct.setdefault(pattern, name)
    return {name: pattern for pattern, name in distinct.items()}


def leaks(data: bytes | str, *secrets: str) -> list[str]:
    """Where each secret shows in `data`, in which encoding, with some context."""
    blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    found = []
    for secret in secrets:
        for name, pattern in encodings(secret).items():
            at = blob.find(pattern)
            if at >= 0:
                found.append(f"{secret[:8]}… as {name}: …{blob[max(at - 160, 0) : at + len(pattern) + 40]!r}…")
    return found


def assert_no_leak(where: str, data: bytes | str, *secrets: str) -> None:
    found = leaks(data, *secrets)
    assert not found, f"{where} shows a secret:\n" + "\n".join(found)


# ---------------------------------------------------------------------------------------------
# JSON as a client must read it


def _refuse(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows")
    return value


def strict_json(data: bytes | str):
    """Parse as a strict JSON decoder (Go's, JavaScript's) would: no NaN, no Infinity, no overflow."""
    return json.loads(data, parse_constant=_refuse, parse_float=_finite)


def error_message(body: bytes) -> str:
    """The message of `{"error": "..."}` (Ollama) or `{"error": {"message": ...}}` (OpenAI)."""
    error = strict_json(body).get("error")
    if isinstance(error, dict):
        error = error.get("message")
    assert isinstance(error, str) and error, f"no error message in {body[:300]!r}"
    return error


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1


def request_bytes(
    method: str,
    path: str,
    body: bytes | dict | None = None,
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.1",
    host: str = "127.0.0.1",
) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    lines = [f"{method} {path} {version}", f"Host: {host}"]
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in all_headers):
        all_headers["Content-Length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class Answer:
    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.raw = b""  # every byte read for this answer: interim answers, framing and trailers included
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers: list[tuple[str, str]] = [
            (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)
        ]
        self.body = body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def __repr__(self) -> str:
        return f"<Answer {self.status_line!r} {self.body[:200]!r}>"


def read_answer(
    sock: socket.socket,
    timeout: float,
    buffered: bytes = b"",
    until_close: bool = False,
    sink: list[bytes] | None = None,
) -> tuple[Answer, bytes]:
    """One HTTP/1 answer from the socket (Content-Length, chunked, or until the close); and what follows it.
    Every byte read is also appended to `sink` (kept when the answer never completes)."""
    deadline = time.monotonic() + timeout
    data = bytearray(buffered)
    raw = [buffered]

    def more() -> bool:
        nonlocal data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete answer within {timeout} s; got {bytes(data[:300])!r}")
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            raise TimeoutError(f"no complete answer within {timeout} s; got {bytes(data[:300])!r}")
        try:
            piece = sock.recv(1 << 20)
        except ConnectionResetError:
            piece = b""
        data += piece
        raw.append(piece)
        if sink is not None:
            sink.append(piece)
        return bool(piece)

    def done(answer: Answer, rest: bytes) -> tuple[Answer, bytes]:
        answer.raw = b"".join(raw)
        return answer, rest

    while b"\r\n\r\n" not in data:
        if not more():
            raise ConnectionError(f"closed before a complete head: {bytes(data[:300])!r}")
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    answer_head = Answer(head, b"")
    if 100 <= answer_head.status < 200:
        answer, after = read_answer(sock, max(deadline - time.monotonic(), 0.1), rest, until_close, sink)
        answer.raw = head + b"\r\n\r\n" + answer.raw
        return answer, after
    length = answer_head.header("content-length")
    if until_close:
        data = bytearray(rest)
        while more():
            pass
        return done(Answer(head, bytes(data)), b"")
    if answer_head.header("transfer-encoding") == "chunked":
        body = bytearray()
        data = bytearray(rest)
        while True:
            while b"\r\n" not in data:
                if not more():
                    raise ConnectionError("closed inside a chunked body")
            line_end = data.find(b"\r\n")
            size = int(bytes(data[:line_end]).split(b";")[0], 16)
            del data[: line_end + 2]
            if size == 0:
                while not (data.startswith(b"\r\n") or b"\r\n\r\n" in data):
                    if not more():
                        break
                rest = bytes(data[2:]) if data.startswith(b"\r\n") else bytes(data).partition(b"\r\n\r\n")[2]
                return done(Answer(head, bytes(body)), rest)
            while len(data) < size + 2:
                if not more():
                    raise ConnectionError("closed inside a chunk")
            body += data[:size]
            del data[: size + 2]
    size = int(length or 0)
    data = bytearray(rest)
    while len(data) < size:
        if not more():
            raise ConnectionError("closed inside the body")
    return done(Answer(head, bytes(data[:size])), bytes(data[size:]))


def exchange(port: int, raw: bytes, timeout: float = 10) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        answer, _ = read_answer(sock, timeout)
        return answer


def closes_after(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes the connection within `seconds` (nothing else arriving)."""
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], remaining)
        if readable:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                return True
            if not piece:
                return True
    return False


class Fetched:
    """What `fetch` got: status, headers, the body's length, its first and last `keep` bytes."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.length = 0
        self.first = bytearray()
        self.last = bytearray()
        self.complete = False  # the whole answer arrived (Content-Length reached or the last chunk)
        self.closed = False  # the proxy closed the connection
        self.aborted = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def __repr__(self) -> str:
        return (
            f"<Fetched {self.status} {self.length} bytes complete={self.complete} closed={self.closed} "
            f"aborted={self.aborted} first={bytes(self.first[:200])!r} last={bytes(self.last[-300:])!r}>"
        )


def fetch(
    port: int,
    raw: bytes,
    keep: int = 1 << 20,
    seconds: float = 120,
    abort=None,
    pause_after: int = 0,
    pause: float = 0.0,
) -> Fetched:
    """Send `raw` and read the answer in linear time whatever its size (Content-Length or chunked),
    keeping only its first and last `keep` bytes. `abort` (a threading.Event) stops reading early;
    `pause` seconds without reading once `pause_after` body bytes came (a client that stops reading)."""
    got = Fetched()
    deadline = time.monotonic() + seconds
    buffer = bytearray()
    paused = False
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(raw)

        def more() -> bool:
            while True:
                if abort is not None and abort.is_set():
                    got.aborted = True
                    return False
                if time.monotonic() > deadline:
                    return False
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable:
                    try:
                        piece = sock.recv(1 << 20)
                    except (ConnectionResetError, OSError):
                        piece = b""
                    if not piece:
                        got.closed = True
                        return False
                    buffer.extend(piece)
                    return True

        def body(data: bytes | bytearray) -> None:
            nonlocal paused
            if len(got.first) < keep:
                got.first.extend(data[: keep - len(got.first)])
            got.last.extend(data)
            if len(got.last) > 2 * keep:
                del got.last[: len(got.last) - keep]
            got.length += len(data)
            if pause and not paused and got.length >= pause_after:
                paused = True
                time.sleep(pause)

        while b"\r\n\r\n" not in buffer:
            if not more():
                return got
        end = buffer.find(b"\r\n\r\n")
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        got.status = int(lines[0].split()[1])
        got.headers = [
            (k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:] if line)
        ]
        if got.header("transfer-encoding") == "chunked":
            while True:
                while b"\r\n" not in buffer:
                    if not more():
                        return got
                line_end = buffer.find(b"\r\n")
                size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
                del buffer[: line_end + 2]
                if size == 0:
                    got.complete = True
                    return got
                while len(buffer) < size + 2:
                    if not more():
                        body(buffer)
                        return got
                body(buffer[:size])
                del buffer[: size + 2]
        length = got.header("content-length")
        if length is None:
            body(buffer)
            buffer.clear()
            while more():
                body(buffer)
                buffer.clear()
            got.complete = got.closed
            return got
        remaining = int(length)
        while True:
            take = buffer[:remaining]
            body(take)
            remaining -= len(take)
            buffer.clear()
            if remaining <= 0:
                got.complete = True
                return got
            if not more():
                return got


def with_cpu_budget(pid: int, budget: float, action, wall: float = 180):
    """Run `action(abort)` in a thread while watching the CPU time of process `pid`; when it spends
    more than `budget` CPU seconds, set `abort`. (the action's result, CPU seconds spent)"""
    import threading

    abort = threading.Event()
    result: list = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(action(abort))
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)

    start = cpu_seconds(pid)
    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + wall
    while thread.is_alive() and time.monotonic() < deadline:
        if cpu_seconds(pid) - start > budget:
            abort.set()
            break
        thread.join(0.1)
    abort.set()
    thread.join(30)
    if errors:
        raise errors[0]
    return (result[0] if result else None), cpu_seconds(pid) - start
