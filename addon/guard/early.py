"""Answering a request from its headers, before its body is read (a 401, 403 or 413).

mitmproxy cannot do this by itself: a response set in `requestheaders` is sent only after the
whole request body has been read (into memory), so five clients declaring 200 MB without a key
would cost a gigabyte before their 401. `answer_now` therefore, for an HTTP/1 request with a
body on a plain-TCP client connection:

1. sets `flow.response` to the answer (what mitmdump's output, mitmweb and saved flows show);
2. writes the answer, with `Connection: close`, to the client's socket itself, through a
   duplicate of its file descriptor (`linger`);
3. kills the flow: mitmproxy then reads no more of the body, sends nothing (a killed flow gets no
   error page) and closes its side of the connection, which closes its descriptor only;
4. `linger` sends the answer, shuts down the write side (the client sees the end of the answer),
   and reads and discards what the client still sends for at most `LINGER_SECONDS` or
   `LINGER_BYTES` before closing: nginx's lingering close. Closing a socket with unread data at
   once makes the kernel send a reset, which can destroy the answer before the client reads it.

A request without a body gets its answer the ordinary way (mitmproxy sends `flow.response` right
after the empty body, and the connection is kept alive). To a client that speaks TLS to the proxy
(a `reverse:https://` listener, an intercepted Ollama host in regular mode) the answer is written
as TLS records of mitmproxy's own session of that connection (`fence.encrypt_for_client`). Where no
HTTP/1 answer can be written at all (an HTTP/2 stream, a connection whose TLS session cannot take
it), the flow is killed without an answer: an HTTP/2 client sees its stream reset. A body is never
read before its head was admitted, whatever the transport (issue 21 §2).

The mitmproxy internals used (the client's StreamWriter; `flow.kill()` at `requestheaders` ending
the stream without writing to the client, and mitmproxy closing the client connection then) are
reached through, and checked at load by, the fence (`addon.mitm_internals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from mitmproxy import http
from mitmproxy.connection import Connection

from addon import mitm_internals as fence

if TYPE_CHECKING:
    from addon.exchange import Exchange

logger = logging.getLogger("ollama_proxy")

LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20

_lingering: set[asyncio.Task[None]] = set()  # strong references to the running lingers


def has_body(request: http.Request) -> bool:
    """Whether more than the head is coming (a Content-Length above 0, or a chunked body)."""
    try:
        size = fence.expected_body_size(request)
    except ValueError:
        return True
    return size is None or size != 0


def answer_now(flow: http.HTTPFlow, exchange: Exchange) -> None:
    """Send `flow.response` (already set by `exchange.respond`) before the request body is read."""
    response = flow.response
    assert response is not None
    exchange.early = True
    request = flow.request
    try:
        fence.expected_body_size(request)
    except ValueError:
        return  # invalid framing: mitmproxy's HTTP/1 layer answers 400 itself and closes (no second answer)
    if not has_body(request):
        return  # mitmproxy sends it after the empty body
    if request.is_http2 or request.is_http3:
        flow.kill()  # no HTTP/1 answer can be written on this stream: it is reset, its body never read
        return
    response.headers["connection"] = "close"
    data = fence.assemble_response_head(response) if request.method == "HEAD" else fence.assemble_response(response)
    # on a TLS connection: TLS records of the client's own session (mitmproxy's)
    wire = fence.encrypt_for_client(flow, data) if flow.client_conn.tls else data
    if wire is not None and answer_and_close(fence.client_writer(flow), wire, flow.client_conn, encrypted=True):
        flow.kill()
    elif in_event_loop():
        flow.kill()  # never read an unchecked body: the connection is closed without the answer


def in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # outside mitmproxy's event loop (unit tests)
        return False
    return True


def answer_and_close(writer: object, data: bytes, connection: Connection, encrypted: bool = False) -> bool:
    """Write `data` to the client and close the connection with a lingering close (`linger`); False
    when that is not possible here (TLS unless `data` are its records already, no event loop, no asyncio socket)."""
    if (connection.tls and not encrypted) or not isinstance(writer, asyncio.StreamWriter) or writer.is_closing():
        return False
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # outside mitmproxy's event loop (unit tests)
        return False
    original = writer.get_extra_info("socket")
    if original is None:
        return False
    try:
        duplicate = socket.socket(fileno=os.dup(original.fileno()))
    except OSError:
        return False
    duplicate.setblocking(False)
    task = loop.create_task(linger(duplicate, data, writer), name="answer and close")
    _lingering.add(task)
    task.add_done_callback(_lingering.discard)
    return True


def close_soon(writer: object) -> None:
    """Make sure mitmproxy's side of a connection it decided to close is closed.

    mitmproxy closes a connection by cancelling its reader task, whose clean-up closes the socket;
    when the cancellation reaches that task while it waits for the connection's event lock (a
    client sending while a hook runs), the clean-up is skipped and the socket stays open for good
    (mitmproxy 12.3.1). Closing the writer again is harmless: it flushes what is buffered, then closes.
    """
    if isinstance(writer, asyncio.StreamWriter):
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_soon(writer.close)


async def linger(sock: socket.socket, data: bytes, writer: asyncio.StreamWriter) -> None:
    """Write the answer, end it, discard what the client still sends (bounded), then close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    try:
        # What mitmproxy still had to write on this connection (the end of the previous answer) goes first.
        while writer.transport.get_write_buffer_size():
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.01)
        await asyncio.wait_for(loop.sock_sendall(sock, data), LINGER_SECONDS)
        sock.shutdown(socket.SHUT_WR)
        discarded = 0
        while discarded < LINGER_BYTES and (remaining := deadline - loop.time()) > 0:
            piece = await asyncio.wait_for(loop.sock_recv(sock, 65536), remaining)
            if not piece:
                break
            discarded += len(piece)
    except (OSError, TimeoutError):
        pass  # the client is gone or keeps sending: close
    finally:
        with contextlib.suppress(OSError):
            sock.close()
        writer.close()  # mitmproxy's own descriptor, in case its clean-up was skipped (`close_soon`)
