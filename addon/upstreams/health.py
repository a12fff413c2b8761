"""Server health: whether a server is up, from what requests and probes say about the server itself.

    up  --mark_failed-->  down
    down --mark_failed-->  down (the reason and the time of the last failure change)
    down --mark_ok-->  up
    down, and nothing has failed for `retry_after` seconds  -->  "trial": routed to again, so that
        a server nothing probes is not down forever; the next failure makes it plain down again.

A shared server's health must not follow what one client asks of it (issue 21, §8). As nginx's
`max_fails` counts only failures to reach a server, and Envoy's outlier detection and HAProxy's
`observe layer7` confirm with health checks, a request marks its server down only when the server
could not be reached at all: connection refused, unknown host, TLS failure, no connect or TLS
handshake within `upstream_timeout` (`passive_verdict`: `DOWN`). What may be the request's doing
(any 5xx answer, an answer that outlasts `upstream_timeout`, a malformed answer) only makes the
server suspect: at `suspect_limit` (3) such failures in a row, with no success between them, the
directory probes the server (`GET /models`, `ServersDirectory.confirm`, at most once a second per
server), and only a failed probe marks it down. A connection closed, reset or broken off
mid-answer (`BROKEN`: a server that died looks like this) is probed at once, with the same limit. What the proxy cut itself (a limit, a refused answer) or a client that left says nothing.
The trade-off: a server whose model list answers while every generation fails stays up; its
answers (errors) pass through to the clients.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from addon.mitm_internals import FailureKind, failure_kind

logger = logging.getLogger("ollama_proxy")


class Passive(enum.Enum):
    """What one finished request says about its server."""

    OK = "ok"  # the server answered (below 500)
    NOTHING = "nothing"  # the client left, or the proxy cut the answer
    SUSPECT = "suspect"  # the server, or the request: a probe decides after a few in a row
    BROKEN = "broken"  # the connection itself failed: a probe decides at once
    DOWN = "down"  # the server cannot be reached


_UNREACHABLE = {
    FailureKind.REFUSED: "connection refused",
    FailureKind.UNKNOWN_HOST: "unknown host",
    FailureKind.TLS: "TLS handshake failed",
}
# The connection closed or reset under a request: as likely a server that died as one that dropped
# this request, so a probe asks the server at once rather than after `suspect_limit` of them.
_BROKEN = frozenset({FailureKind.SERVER_CLOSED, FailureKind.HEAD_CUT, FailureKind.BROKE_OFF, FailureKind.RESET})
_SAYS_NOTHING = frozenset(
    {
        FailureKind.CLIENT_GONE,
        FailureKind.KILLED,
        FailureKind.BODY_SIZE_LIMIT,
        FailureKind.REQUEST_TOO_LARGE,
        FailureKind.TRAILERS,
    }
)


def passive_verdict(
    status: int | None = None, failure: FailureKind | None = None, *, expired: str = "", cut: bool = False
) -> tuple[Passive, str]:
    """What a finished request says about its server, and why.

    `status`: the upstream's answer status, if one came; `failure`: the kind of mitmproxy's error;
    `expired`: what `upstream_timeout` cut ("connect", "handshake", "open", or "" for none); `cut`:
    the proxy ended the upstream's part itself (a limit, an answer it refuses).
    """
    if cut:
        return Passive.NOTHING, "cut by the proxy"
    if expired in ("connect", "handshake"):
        return Passive.DOWN, f"no {'TLS handshake' if expired == 'handshake' else 'connection'} within upstream_timeout"
    if expired:
        return Passive.SUSPECT, "no answer within upstream_timeout"
    if failure is not None:
        if failure in _UNREACHABLE:
            return Passive.DOWN, _UNREACHABLE[failure]
        if failure in _SAYS_NOTHING:
            return Passive.NOTHING, failure.name.lower()
        if failure in _BROKEN:
            return Passive.BROKEN, failure.name.lower().replace("_", " ")
        return Passive.SUSPECT, failure.name.lower().replace("_", " ")
    if status is not None and status >= 500 and status != 501:  # 501: a route it lacks, not a sick server
        return Passive.SUSPECT, f"answered {status}"
    return (Passive.OK, "") if status is not None else (Passive.NOTHING, "")


# What a client may be told of why a server is down (503 texts, /api/ps): fixed phrases, never the text of
# an error, which names the server's address or base URL (the operator's log keeps it: issue 21 §6).
CLIENT_REASONS = frozenset(
    {
        *_UNREACHABLE.values(),
        "no connection within upstream_timeout",
        "no TLS handshake within upstream_timeout",
        "no answer within upstream_timeout",
        *(kind.name.lower().replace("_", " ") for kind in FailureKind),
        "cannot connect",
        "unreachable",
        "timed out",
        "timed out connecting",
        "closed the connection without answering",
        "the connection broke off mid-answer",
        "the connection was reset",
    }
)
_ANSWERED = re.compile(r"\banswered (\d{3})\b")
_REPEATED = re.compile(r" \(\d+ times in a row\)$")


def client_reason(reason: str | None) -> str:
    """`reason` in the words a client may read: a fixed phrase, an upstream status, or "unreachable"."""
    if not reason:
        return "down"
    repeated = _REPEATED.search(reason)
    return _client_phrase(reason[: repeated.start()] if repeated else reason) + (repeated.group() if repeated else "")


def _client_phrase(reason: str) -> str:
    if reason in CLIENT_REASONS:
        return reason
    if (answered := _ANSWERED.search(reason)) is not None:
        return f"answered {answered.group(1)}"
    kind = failure_kind(reason)
    if kind in _UNREACHABLE:
        return _UNREACHABLE[kind]
    if kind is not FailureKind.OTHER:
        return kind.name.lower().replace("_", " ")
    return "cannot connect" if "connect" in reason.lower() else "unreachable"


@dataclass(frozen=True, slots=True)
class ServerState:
    """A snapshot of one server's health."""

    name: str
    status: str  # "up", "down" or "trial"
    outstanding: int
    reason: str | None = None  # why it is (or was last) down
    down_since: float | None = None  # clock time it went down
    last_failure: float | None = None  # clock time of the last failure
    suspicions: int = 0  # failures in a row that may be the request's, while up (`suspect`)

    @property
    def healthy(self) -> bool:
        return self.status != "down"


class Health:
    """Per-server health and outstanding requests. `clock` is injected (tests); default time.monotonic."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        retry_after: float = 30.0,
        suspect_limit: int = 3,
        log: logging.Logger | None = logger,
    ) -> None:
        self.clock = clock
        self.retry_after = retry_after  # down and unprobed this long: tried again ("trial")
        self.suspect_limit = max(suspect_limit, 1)
        self.log = log
        self._down: dict[str, tuple[float, float, str]] = {}  # server → (down_since, last_failure, reason)
        self._suspicions: dict[str, int] = {}  # server → suspect failures in a row while up
        self._requests: dict[str, str] = {}  # request id → server
        self._outstanding: dict[str, int] = {}

    # -- outstanding requests --------------------------------------------------------------------

    def begin(self, server: str, request_id: str) -> None:
        """A request went to `server`. Beginning an id twice moves it (a re-routed request)."""
        self.end(request_id)
        self._requests[request_id] = server
        self._outstanding[server] = self._outstanding.get(server, 0) + 1

    def end(self, request_id: str) -> str | None:
        """The request finished (or failed): idempotent; returns its server, None if unknown or ended."""
        server = self._requests.pop(request_id, None)
        if server is not None:
            self._outstanding[server] -= 1
        return server

    def outstanding(self, server: str) -> int:
        return self._outstanding.get(server, 0)

    # -- state --------------------------------------------------------------------------------------

    def mark_failed(self, server: str, reason: str) -> bool:
        """The server cannot be reached (a passive connect failure, or a failed probe); True when it
        made the server go down."""
        now = self.clock()
        if server in self._down:
            since, _, _ = self._down[server]
            self._down[server] = (since, now, reason)
            return False
        self._suspicions.pop(server, None)
        self._down[server] = (now, now, reason)
        if self.log:
            self.log.warning(
                "server %s is down: %s; requests go to its twins, if any, until it answers again", server, reason
            )
        return True

    def suspect(self, server: str) -> bool:
        """A failure that may be the request's rather than the server's; True at the `suspect_limit`-th
        in a row (the count starts again): time to ask the server itself (a probe)."""
        if server in self._down:
            return False
        count = self._suspicions[server] = self._suspicions.get(server, 0) + 1
        if count < self.suspect_limit:
            return False
        del self._suspicions[server]
        return True

    def mark_ok(self, server: str) -> bool:
        """The server answered (a model list, or any answer below 500); True when it came back up."""
        self._suspicions.pop(server, None)
        down = self._down.pop(server, None)
        if down is None:
            return False
        if self.log:
            self.log.warning("server %s is up again (down for %.0f s: %s)", server, self.clock() - down[0], down[2])
        return True

    def is_healthy(self, server: str) -> bool:
        """Up, or down long enough without news that it is tried again."""
        down = self._down.get(server)
        return down is None or self.clock() - down[1] >= self.retry_after

    def is_down(self, server: str) -> bool:
        """Marked down (in trial or not): the directory keeps probing it."""
        return server in self._down

    def state(self, server: str) -> ServerState:
        down = self._down.get(server)
        if down is None:
            return ServerState(server, "up", self.outstanding(server), suspicions=self._suspicions.get(server, 0))
        status = "trial" if self.is_healthy(server) else "down"
        return ServerState(server, status, self.outstanding(server), down[2], down[0], down[1])

    def status_line(self, servers: Iterable[str]) -> str:
        """`servers: default up (2 running) · vllm down for 12 s (connection refused)` — for the log."""
        now = self.clock()
        parts = []
        for name in servers:
            s = self.state(name)
            text = f"{name} {s.status}"
            if s.status != "up" and s.down_since is not None:
                text += f" for {now - s.down_since:.0f} s ({s.reason})"
            if s.outstanding:
                text += f" ({s.outstanding} running)"
            parts.append(text)
        return "servers: " + " · ".join(parts)
