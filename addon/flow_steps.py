"""The long steps of a flow, called by the hooks of addon/proxy.py, which keep their order.

Admitting a request's head, a failure answered as a 500 in the route's shape, the upstream's head
and whole answer, and what a failed flow leaves behind. Each step takes what it works on (the flow,
its `Exchange`, the `Settings`, the upstream watch and the servers' health); none keeps any state.
"""

from __future__ import annotations

import functools
import logging

from mitmproxy import http

from addon import endpoints
from addon import mitm_internals as fence
from addon.endpoints.base import Endpoint
from addon.exchange import (
    Exchange,
    finish_head,
    finish_stream,
    keep_upstream_body,
    keep_upstream_head,
    local_response,
    replace_answer,
    respond,
    start_stream,
)
from addon.guard import access, browser, client_buffer, errorpage, request_size, secrets, timeouts, upstream
from addon.mitm_internals import FailureKind
from addon.reply import Answer
from addon.settings import Settings
from addon.upstreams.health import Health, passive_verdict

logger = logging.getLogger("ollama_proxy")


def log_internal_error(exchange: Exchange, error: Exception) -> None:
    """A bug (or an input no check foresaw) after the request went upstream: one warning, the traceback in debug."""
    logger.warning("%s %s: internal proxy error: %s: %s", exchange.route, exchange.model, type(error).__name__, error)
    logger.debug("internal proxy error", exc_info=True)


def error_answer(method: str, exchange: Exchange, endpoint: Endpoint, status: int, message: str) -> bytes:
    """mitmproxy's error answer for a flow of the proxy's (`errorpage.shape`): the family's error, its headers."""
    response = local_response(method, exchange, endpoint.error(status, message))
    response.headers["connection"] = "close"  # mitmproxy closes the connection after its error answer
    return bytes(fence.assemble_response(response))


def admit(flow: http.HTTPFlow, exchange: Exchange, settings: Settings) -> Answer | None:
    """Everything decided from the request's head, in Ollama's order: a refusal, a preflight, or None."""
    assert exchange.endpoint is not None
    endpoint = exchange.endpoint
    access.take_client_key(flow, exchange)  # before any view shows the flow
    return (
        browser.origin_check(flow, exchange, settings, endpoint)  # 403, or a preflight's 204
        or browser.host_check(flow, settings, endpoint)  # 403 (DNS rebinding)
        or endpoints.unknown_path(exchange.route)  # 404 as Ollama, key or not (a probe: HEAD /api/hello)
        or access.refusal(exchange, settings, endpoint)  # 401
        or request_size.declared_too_large(flow.request, settings.request_body_limit, endpoint)  # 413
    )


def limit_chunked_body(flow: http.HTTPFlow, exchange: Exchange, settings: Settings) -> None:
    """A body without a declared length gets its 413 the moment it crosses request_body_limit."""
    assert exchange.endpoint is not None
    if not (limit := settings.request_body_limit):
        return
    answer = request_size.chunked_refusal(exchange.endpoint, limit)
    response = local_response(flow.request.method, exchange, answer)
    response.headers["connection"] = "close"
    data = fence.assemble_response(response)
    client_buffer.limit_body(flow.request, client_buffer.BodyLimit(limit, data, answer.error or ""))


def internal_error(flow: http.HTTPFlow, exchange: Exchange, error: Exception, watch: timeouts.UpstreamWatch) -> None:
    """A bug (or an input no check foresaw) while handling a request: a 500 in the route's shape.
    Nothing goes upstream, and nothing untranslated to mitmproxy's reverse target."""
    message = f"internal proxy error: {type(error).__name__}"
    try:
        logger.warning("%s %s: %s: %s", exchange.route, exchange.model, message, exchange.hidden(str(error))[:300])
        logger.debug("internal proxy error", exc_info=True)
        watch.forget(flow, exchange)
        exchange.upstream_route = None  # nothing went upstream
        exchange.relay = None
        secrets.forget(flow, exchange)  # an upstream key the rewrite may have put into the flow
        respond(flow, exchange, (exchange.endpoint or endpoints.FALLBACK).error(500, message))
        exchange.publish(flow)
    except Exception:
        logger.debug("cannot answer the internal error", exc_info=True)
        flow.kill()


def upstream_head(flow: http.HTTPFlow, exchange: Exchange, settings: Settings, watch: timeouts.UpstreamWatch) -> None:
    """The upstream's head: cleaned, reported to the servers' health, refused, or the start of a stream."""
    response = flow.response
    assert response is not None and exchange.endpoint is not None
    try:
        secrets.forget(flow, exchange)
        upstream.clean_head(response)  # before any view, the dumper or a saved flow sees it
        if exchange.server is not None:
            settings.models.report(exchange.server, passive_verdict(response.status_code))  # passive health
        keep_upstream_head(flow, exchange, settings)
        sse = response.status_code == 200 and "text/event-stream" in response.headers.get("content-type", "")
        # a compressed stream is decoded piece by piece (an encoding the proxy cannot decode: gathered, refused)
        decoder = (
            upstream.stream_decoder(response, settings.sse_event_limit or settings.upstream_body_limit) if sse else None
        )
        streamable = sse and (decoder is not None or not upstream.compressed(response))
        converter = exchange.endpoint.stream(exchange) if streamable else None
        if refused := upstream.refusal(response, converter is not None, settings.upstream_body_limit):
            message, unread = refused
            if unread:
                watch.cut(flow, exchange, 502, message)
            else:
                exchange.failure = (502, message)
            return
        if converter is not None:
            start_stream(flow, exchange, converter, settings, lambda: stream_aborted(flow, exchange, watch), decoder)
        finish_head(response, exchange)
    except Exception as e:  # noqa: BLE001 - logged, and the flow's answer is the proxy's 500
        log_internal_error(exchange, e)
        exchange.failure = (500, f"internal proxy error: {type(e).__name__}")


def stream_aborted(flow: http.HTTPFlow, exchange: Exchange, watch: timeouts.UpstreamWatch) -> None:
    """The converter (sse_event_limit) or the stream's decoder (a bomb, bad data) gave up on the
    upstream's stream: stop reading it."""
    refused = exchange.relay.decoder.refused if exchange.relay is not None and exchange.relay.decoder else None
    watch.cut(flow, exchange, 502, refused or "the upstream sent an SSE event larger than sse_event_limit")


def answer(flow: http.HTTPFlow, exchange: Exchange, endpoint: Endpoint, settings: Settings) -> None:
    """The client's answer to the upstream's whole answer (or the end of a stream)."""
    response = flow.response
    assert response is not None
    if exchange.relay is not None and exchange.relay.called:
        finish_stream(flow, exchange, exchange.relay)
        return
    if exchange.failure is not None:
        replace_answer(flow, exchange, endpoint.error(*exchange.failure))
    else:
        try:
            upstream.decoded_body(response, settings.upstream_body_limit)
        except upstream.Refused as e:
            replace_answer(flow, exchange, endpoint.error(502, str(e)))
        else:
            secrets.scrub_answer(flow, exchange)
            body = response.raw_content or b""
            keep_upstream_body(flow, exchange, body, settings)
            if converted := endpoint.convert(exchange, response, body):
                replace_answer(flow, exchange, converted)
    if flow.response is not None:
        finish_head(flow.response, exchange)


def record_failure(
    flow: http.HTTPFlow,
    exchange: Exchange,
    kind: FailureKind,
    settings: Settings | None,
    watch: timeouts.UpstreamWatch,
    health: Health,
) -> None:
    """A flow that failed (mitmproxy's error hook): its error text, what it says about the server, and
    the shape of the error answer mitmproxy writes next."""
    try:
        if flow.error is not None:  # mitmproxy's text may quote the upstream's bytes (saved flows, mitmweb)
            flow.error.msg = errorpage.describe(flow.error.msg)
        if exchange.forwarded:
            watch.end_failed(flow, exchange)
        if exchange.error is None:
            exchange.error = flow.error.msg if flow.error else "failed"
        if exchange.forwarded:
            health.end(flow.id)
            if settings is not None and exchange.server is not None:  # what it says about the server
                cut = exchange.failure is not None  # the proxy ended it (a limit, a refused answer)
                verdict = passive_verdict(failure=kind, expired=exchange.expired, cut=cut)
                settings.models.report(exchange.server, verdict)
        if exchange.endpoint is not None and exchange.relay is None:
            # nothing was sent yet: mitmproxy writes its error answer next (if the client is still there)
            errorpage.shape(functools.partial(error_answer, flow.request.method, exchange, exchange.endpoint))
    except Exception as e:  # noqa: BLE001 - logged; the flow ends as it failed
        log_internal_error(exchange, e)
