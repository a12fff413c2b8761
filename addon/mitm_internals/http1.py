"""Patches of mitmproxy's HTTP/1 layer: the error page, trailers refused, the server layer's bounded buffer."""

from __future__ import annotations

from collections.abc import Callable, Generator
from types import FunctionType
from typing import TYPE_CHECKING, Any

from addon.mitm_internals import private
from addon.mitm_internals.checks import Feature, available
from addon.mitm_internals.failures import TRAILERS

if TYPE_CHECKING:
    from addon.guard.client_buffer import BufferPolicy, Phase, Refusal


_saved: dict[str, Any] = {}


def install_error_page(make: Callable[[int, str], bytes]) -> None:
    if "error_page" not in _saved:
        _saved["error_page"] = private._http1.make_error_response
        private._http1.make_error_response = make  # type: ignore[assignment]


def install_trailer_refusal() -> None:
    if "body_reader" not in _saved and available(Feature.TRAILER_REFUSAL):
        original = _saved["body_reader"] = private._http1.make_body_reader
        read_chunk = private.ChunkedReader.__call__
        end_of_message = read_chunk.__globals__["EndOfMessage"]  # (h11's, as its reader names it)

        def refusing_end(*, headers: Any = None) -> Any:
            if headers:  # (h11 reads a chunked body's trailers into the EndOfMessage that ends it)
                raise private.h11.RemoteProtocolError(TRAILERS)
            return end_of_message() if headers is None else end_of_message(headers=headers)

        class NoTrailersReader(private.ChunkedReader):
            # h11's own reader, its one `EndOfMessage` refusing trailers: the same code with that one name
            # changed in its globals, so a piece of a chunked answer costs no frame of ours (once per piece).
            __call__ = FunctionType(
                read_chunk.__code__,
                {**read_chunk.__globals__, "EndOfMessage": refusing_end},
                read_chunk.__name__,
                read_chunk.__defaults__,
                read_chunk.__closure__,
            )

        def body_reader(expected_size: int | None) -> Any:
            return NoTrailersReader() if expected_size is None else original(expected_size)

        private._http1.make_body_reader = body_reader


def uninstall_patches() -> None:
    if (page := _saved.pop("error_page", None)) is not None:
        private._http1.make_error_response = page
    if (reader := _saved.pop("body_reader", None)) is not None:
        private._http1.make_body_reader = reader
    if _saved.pop("handle_event", None) is not None:
        del private._http1.Http1Server._handle_event  # back to Http1Connection's


_policy: BufferPolicy | None = None
_PHASES: tuple[Phase, ...] = ("read_headers", "read_body", "wait")  # the states in which bytes wait unparsed: a `Phase`


_passed: tuple[Any, Any] = (None, None)  # (ResponseData, Http1Connection._handle_event), bound at install


def _bounded_handle_event(self: Any, event: Any) -> Generator[Any, Any, None]:
    response_data, handle_event = _passed  # (once per piece of every answer: no module look-ups)
    if type(event) is response_data:  # a piece of the answer going out (it only makes data to send): as it is
        return handle_event(self, event)  # type: ignore[no-any-return]
    return _guarded_handle_event(self, event)


def _guarded_handle_event(self: Any, event: Any) -> Generator[Any, Any, None]:
    policy = _policy
    for command in private._http1.Http1Connection._handle_event(self, event):
        if (
            policy is not None
            and isinstance(command, private.ReceiveHttp)
            and isinstance(command.event, private.RequestData)
        ):
            if self.request is not None and (refusal := policy.body_data(self.request, len(command.event.data))):
                yield from _refuse(self, policy, refusal)
                return
        yield command
        if policy is not None and type(command) is private.commands.CloseConnection and command.connection is self.conn:
            policy.closing(self.conn)
    if policy is None or not isinstance(event, private.events.DataReceived):
        return
    phase = next((name for name in _PHASES if self.state == getattr(self, name)), None)
    if phase is not None and (refusal := policy.unparsed(phase, len(self.buf), self.conn.peername)):
        yield from _refuse(self, policy, refusal)


def _refuse(self: Any, policy: BufferPolicy, refusal: Refusal) -> Generator[Any, Any, None]:
    self.buf = type(self.buf)()  # what was buffered is dropped at once
    if refusal.answer is not None and not policy.answer_and_close(self.conn, refusal.answer):
        yield private.commands.SendData(self.conn, refusal.answer)
    yield private.commands.CloseConnection(self.conn)
    if refusal.answer is None:
        policy.closing(self.conn)
    if refusal.fail_request and self.stream_id is not None and (refusal.too_large or not self.request_done):
        code = private.ErrorCode.REQUEST_TOO_LARGE if refusal.too_large else private.ErrorCode.GENERIC_CLIENT_ERROR
        yield private.ReceiveHttp(private.RequestProtocolError(self.stream_id, refusal.message, code=code))
    self.state = self.done


def install_buffer_policy(policy: BufferPolicy) -> None:
    global _policy, _passed
    _policy = policy
    _passed = (private.ResponseData, private._http1.Http1Connection._handle_event)
    if "handle_event" not in _saved:
        _saved["handle_event"] = True
        private._http1.Http1Server._handle_event = _bounded_handle_event  # type: ignore[method-assign]
