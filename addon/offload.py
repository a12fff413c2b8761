"""Large requests are worked on off the event loop, one at a time (issue 21 §4).

mitmproxy runs every hook on one event loop: a request whose body takes a second of CPU to parse,
validate, translate and serialize stalls every other client for that second. A request whose
body is larger than `OFFLOAD_BYTES` therefore has its endpoint's `handle` (parsing, validation,
routing, translation) and the serialization of what goes upstream done in one worker thread
(`prepare`); the event loop serves every other client meanwhile, stalled only by the longest
single step that holds Python's GIL (`json.loads` or `json.dumps` of the body: about 15–20 ms per
MB of the worst shape, a body of millions of tiny objects; 1–2 ms per MB for large strings such as
base64 images). While the worker runs, Python's thread switch interval is 0.5 ms instead of 5 ms:
the event loop, which needs the GIL many times per request it serves, gets it back sooner
(measured on the worst shape: the 99th percentile of another client's latency 0.7 s → 0.2 s).
Smaller requests, nearly all of them, stay on the event loop: a thread hop would cost them more
than their work.

One worker: large requests wait for each other, so their memory at any time is that of one
request being worked on (a few times its body size; up to about 20× for the worst shape) plus
the bodies mitmproxy holds for those waiting (each at most `request_body_limit`).

What runs in the worker reads the settings and the server table (immutable) and the servers'
health (read only); routing starts no background fetch from there (`ServersDirectory.tick` does
nothing outside the event loop: the next request on the loop starts it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mitmproxy import http

from addon.exchange import Exchange
from addon.reply import Answer, Forward, Reply
from addon.upstreams.servers import RouteRefusal, Unroutable
from addon.wire.ollama import dumps_body

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint
    from addon.settings import Settings

OFFLOAD_BYTES = 1 << 20
SWITCH_SECONDS = 0.0005

_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="large request")


def is_large(request: http.Request) -> bool:
    raw = request.raw_content
    return raw is not None and len(raw) > OFFLOAD_BYTES


def refused(endpoint: Endpoint, refusal: RouteRefusal) -> Answer:
    """No healthy server for the model: the endpoint's error, at once, with Retry-After."""
    answer = endpoint.error(refusal.status, refusal.message)
    if refusal.retry_after:
        answer = dataclasses.replace(answer, headers=(*answer.headers, ("Retry-After", str(refusal.retry_after))))
    return answer


def prepare(
    endpoint: Endpoint, exchange: Exchange, request: http.Request, settings: Settings
) -> Reply | Awaitable[Reply]:
    """`handle`, and the upstream body serialized (in the worker thread)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    try:
        reply = endpoint.handle(exchange, request, settings)
        if isinstance(reply, Forward) and reply.content is None:
            reply = dataclasses.replace(reply, body={}, content=dumps_body(reply.body))  # (the structure freed now)
        return reply
    except Unroutable as e:
        return refused(endpoint, e.refusal)
    finally:
        sys.setswitchinterval(interval)


async def handle(endpoint: Endpoint, exchange: Exchange, request: http.Request, settings: Settings) -> Reply:
    """`prepare` in the worker; the event loop serves other clients meanwhile."""
    loop = asyncio.get_running_loop()
    reply = await loop.run_in_executor(_worker, prepare, endpoint, exchange, request, settings)
    return reply if isinstance(reply, Answer | Forward) else await reply
