"""The proxy's Prometheus metrics: names, labels, and how a finished flow is counted.

Every series is in one `CollectorRegistry` of the process (none in prometheus_client's global one,
so that a reloaded script starts afresh), exposed by `addon.status_listener` at `GET /metrics` on
`metrics_listen`. Names follow Prometheus' conventions (`ollama_proxy_` prefix, `_total` counters,
`_seconds` histograms, base units):

| series | labels |
|---|---|
| `ollama_proxy_requests_total` | route, model, server, status, key |
| `ollama_proxy_requests_failed_total` (the flows marked failed: an error, a broken stream, ≥ 400) | route, model, server, key |
| `ollama_proxy_input_tokens_total`, `ollama_proxy_output_tokens_total` | model, server, key |
| `ollama_proxy_request_duration_seconds` (histogram: request start to the answer's end) | route, server |
| `ollama_proxy_time_to_first_token_seconds` (histogram: request start to the stream's first piece) | route, server |
| `ollama_proxy_streams_in_progress` | route, server |
| `ollama_proxy_server_up`, `ollama_proxy_server_outstanding_requests` (read at scrape time) | server |
| `ollama_proxy_client_keys` (how many keys are configured) | |

and prometheus_client's `process_*` series (CPU, memory, open files).

Label values are bounded: `route` is a route of `addon.endpoints` (else `other`), `server` a
configured server's name ("" for an answer the proxy made itself), `key` a configured key's name
("" without one), `status` an HTTP status (`error` when the client got none). `model` is the name
the client used (in its `name:tag` form) when the catalog names it or an upstream has answered a
request for it below 400, for at most `MAX_LEARNED_MODELS` such names besides the catalog's;
any other name is `other`, so that no client can grow the series without bound. No key value is
ever a label or a sample; prometheus_client escapes every label value in the exposition.

Cost: a finished flow takes one lookup per label and five or six updates of a child (a few
microseconds); a stream's start and end one gauge update each; nothing is done per piece.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from addon import endpoints
from addon.catalog.models import full_name

OTHER = "other"
MAX_LEARNED_MODELS = 100  # model names learned from upstream answers (the catalog's come on top)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# A server's state, as `Health.state` has it: (status, outstanding requests).
ServerStates = Callable[[], Iterable[tuple[str, str, int]]]


def route_label(route: str) -> str:
    """The route's table entry (`/v1/models/` for `/v1/models/x`), or `other`."""
    if route in endpoints.ROUTES:
        return route
    for prefix in endpoints.PREFIX_ROUTES:
        if route.startswith(prefix) and len(route) > len(prefix):
            return prefix
    return OTHER


class ModelLabels:
    """The `model` label of a client's model name: bounded (see the module's docstring)."""

    def __init__(self, limit: int = MAX_LEARNED_MODELS) -> None:
        self.limit = limit
        self.catalog: frozenset[str] = frozenset()
        self.learned: set[str] = set()

    def label(self, model: str | None, answered: bool) -> str:
        """`answered`: an upstream answered this request below 400 (the name is a real model's)."""
        if not model:
            return ""
        name = full_name(model)
        if name in self.learned or name in self.catalog:
            return name
        if answered and len(self.learned) < self.limit:
            self.learned.add(name)
            return name
        return OTHER


class _Servers(Collector):
    """Each configured server's health and outstanding requests, read when Prometheus scrapes."""

    def __init__(self, states: ServerStates) -> None:
        self.states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "ollama_proxy_server_up",
            "1 when the server takes requests (up, or tried again after a failure)",
            labels=["server"],
        )
        outstanding = GaugeMetricFamily(
            "ollama_proxy_server_outstanding_requests",
            "Requests sent to the server and not finished",
            labels=["server"],
        )
        for name, status, running in self.states():
            up.add_metric([name], 0.0 if status == "down" else 1.0)
            outstanding.add_metric([name], float(running))
        yield up
        yield outstanding


class _Children(NamedTuple):
    requests: Counter
    failed: Counter
    input_tokens: Counter
    output_tokens: Counter
    duration: Histogram
    first_token: Histogram


class Metrics:
    """The registry and its series; `finished` and `stream_started` / `stream_ended` feed them."""

    def __init__(self, servers: ServerStates = lambda: (), key_count: Callable[[], int] = lambda: 0) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.models = ModelLabels()
        self.children: dict[tuple[str, str, str, str, str], _Children] = {}  # bounded as the labels are
        self.requests = Counter(
            "ollama_proxy_requests",
            "Requests the proxy finished, by the client's route and model, the server, the status it answered and the client key",
            ["route", "model", "server", "status", "key"],
            registry=registry,
        )
        self.failed = Counter(
            "ollama_proxy_requests_failed",
            "Requests that failed: answered with an error, cut off, or broken mid-stream",
            ["route", "model", "server", "key"],
            registry=registry,
        )
        self.input_tokens = Counter(
            "ollama_proxy_input_tokens",
            "Prompt tokens the upstream reported",
            ["model", "server", "key"],
            registry=registry,
        )
        self.output_tokens = Counter(
            "ollama_proxy_output_tokens",
            "Completion tokens the upstream reported",
            ["model", "server", "key"],
            registry=registry,
        )
        self.duration = Histogram(
            "ollama_proxy_request_duration_seconds",
            "From the request's start to the end of its answer",
            ["route", "server"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.first_token = Histogram(
            "ollama_proxy_time_to_first_token_seconds",
            "From a streamed request's start to the first piece of its answer",
            ["route", "server"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.streams = Gauge(
            "ollama_proxy_streams_in_progress", "Streamed answers being relayed", ["route", "server"], registry=registry
        )
        keys = Gauge(
            "ollama_proxy_client_keys", "Client keys configured (ollama_api_key and [keys.NAME])", registry=registry
        )
        keys.set_function(lambda: float(key_count()))
        registry.register(_Servers(servers))
        ProcessCollector(registry=registry)

    def stream_started(self, route: str, server: str) -> None:
        self.streams.labels(route_label(route), server).inc()

    def stream_ended(self, route: str, server: str) -> None:
        self.streams.labels(route_label(route), server).dec()

    def finished(
        self,
        record: Mapping[str, Any],
        status: int | None,
        failed: bool,
        duration: float,
        first_piece: float | None = None,
    ) -> None:
        """One finished flow: its record (`Exchange.record()`), the status the client got (None:
        none), whether it failed, and its times in seconds."""
        route = route_label(record.get("route", ""))
        server = (record.get("server") or "") if "upstream_route" in record else ""
        key = record.get("key", "")
        forwarded_ok = bool(server) and status is not None and status < 400 and not failed
        model = self.models.label(record.get("model"), forwarded_ok)
        labels = (route, model, server, str(status) if status is not None else "error", key)
        children = self.children.get(labels) or self.make_children(labels)
        children.requests.inc()
        if failed:
            children.failed.inc()
        if (usage := record.get("usage")) is not None:
            # An upstream may report anything (negative counts pass through /v1): counters only grow.
            if (prompt := usage.get("prompt_tokens")) and prompt > 0:
                children.input_tokens.inc(prompt)
            if (completion := usage.get("completion_tokens")) and completion > 0:
                children.output_tokens.inc(completion)
        children.duration.observe(max(duration, 0.0))
        if first_piece is not None:
            children.first_token.observe(max(first_piece, 0.0))

    def make_children(self, labels: tuple[str, str, str, str, str]) -> _Children:
        """The series one combination of labels updates (prometheus_client's `labels()` costs more than an update)."""
        route, model, server, _, key = labels
        children = self.children[labels] = _Children(
            self.requests.labels(*labels),
            self.failed.labels(route, model, server, key),
            self.input_tokens.labels(model, server, key),
            self.output_tokens.labels(model, server, key),
            self.duration.labels(route, server),
            self.first_token.labels(route, server),
        )
        return children
