"""The addon's mitmproxy options, and the frozen `Settings` the per-request path reads.

`OPTIONS` is the one list that `OllamaProxy.load` declares and README's options table follows.
`Settings.build(options, previous, updated)` turns option values into plain data once per change,
with a precise `OptionsError` for every bad value, and rebuilds only what the changed options
feed: the model directory (and its cached upstream model list) survives a change of, say,
`upstream_timeout`.

Where a model goes is decided in one place, `Settings.target(model)`: the server (the one of
`openai_base_url` / `openai_api_key`, named `default`, or one of the catalog's `[servers.NAME]`
tables, by the routing rules of `addon.upstreams.servers`), the model id from the catalog or the
server's list, and the `think_style` the catalog or the server gives it. The server carries its
own key, `passthrough_options`, `upstream_timeout`, `forward_client_key` and `responses_passthrough`
(the options' values unless its table sets them). A model no healthy server can take raises `Unroutable`.

The servers' health (`Health`) is kept across every rebuild; their model lists (the directory)
across a rebuild that does not change what they are fetched from.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from mitmproxy import exceptions

from addon import mitm_internals as fence
from addon.catalog.catalog import Catalog
from addon.catalog.models import THINK_STYLES
from addon.guard.browser import Hosts, Origins
from addon.guard.keys import ClientKeys
from addon.guard.request_size import parse_limit as parse_request_limit
from addon.upstreams.directory import ServersDirectory
from addon.upstreams.fetch import FETCH_TIMEOUT, HttpFetcher, Trust
from addon.upstreams.health import Health
from addon.upstreams.servers import Defaults, RouteRefusal, Server, ServerTable, Unroutable

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The first Ollama release that serves every route the proxy serves (/v1/audio/transcriptions came
# in 0.20.0, /v1/messages in 0.14.0, /v1/responses in 0.13.3): clients gate features on it
# (Codex CLI refuses < 0.13.4), and a newer number would promise routes the proxy lacks.
DEFAULT_OLLAMA_VERSION = "0.20.0"
MIN_OLLAMA_VERSION = (0, 6, 4)  # VS Code Copilot refuses older versions
VIEWED_BODY_LIMIT = 1_000_000

# name, type, default, help — the single list both `load` and the README table follow.
OPTIONS: list[tuple[str, type, Any, str]] = [
    (
        "openai_base_url",
        str,
        os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
        "Base URL of the OpenAI-compatible upstream, e.g. https://api.openai.com/v1 "
        "or http://127.0.0.1:8000/v1. Defaults to $OPENAI_BASE_URL.",
    ),
    (
        "openai_api_key",
        str,
        "",  # empty: $OPENAI_API_KEY, read in Settings so that no options view (mitmweb) shows it
        "API key sent upstream as 'Authorization: Bearer <key>'. Defaults to $OPENAI_API_KEY.",
    ),
    (
        "ollama_hosts",
        str,
        "*:11434",
        "Comma-separated host:port patterns (shell wildcards) treated as Ollama servers in "
        "regular, transparent and local mode. In reverse mode every request is for the addon.",
    ),
    (
        "ollama_version",
        str,
        DEFAULT_OLLAMA_VERSION,
        "Version reported by GET /api/version (numeric X.Y.Z, at least 0.6.4).",
    ),
    (
        "passthrough_options",
        bool,
        False,
        "Send Ollama sampling options without an OpenAI equivalent (top_k, min_p, "
        "repeat_penalty, typical_p, repeat_last_n, ...) upstream as extra body fields, "
        "for backends that accept them (vLLM, llama.cpp). Otherwise they are dropped with a warning.",
    ),
    (
        "body_view_limit",
        int,
        -1,
        "Bytes of each client request body and raw upstream answer kept in the flow's metadata, "
        "and of each streamed answer kept as the response body, for viewing and saved flows. "
        "-1 (auto): 1 MB when someone can look at flows (mitmweb, the mitmproxy console, or "
        "flows saved with -w), else none. 0 keeps none.",
    ),
    (
        "model_catalog",
        str,
        "",
        'Path of a TOML model catalog: aliases and descriptions of models ([models."name:tag"] tables '
        "with upstream, context_length, capabilities, server, ...) and more upstream servers "
        "([servers.NAME] tables: base_url, api_key_env, ...; see README). Read once when set.",
    ),
    (
        "models_ttl",
        int,
        300,
        "Seconds each upstream server's GET /models list is cached for /api/tags, /api/show, /api/ps, pull, "
        "/v1/models and routing.",
    ),
    (
        "list_upstream_models",
        bool,
        True,
        "List the upstream servers' models in /api/tags, /api/ps and /v1/models next to the catalog's. "
        "When false only catalog models are listed (others can still be used by name).",
    ),
    (
        "think_style",
        str,
        "reasoning_effort",
        "How Ollama's think is sent upstream: reasoning_effort (OpenAI), chat_template_kwargs "
        "(llama.cpp, vLLM: enable_thinking), or none. A server's or a catalog model's think_style overrides it.",
    ),
    (
        "ollama_api_key",
        str,
        "",
        "When set, clients must send 'Authorization: Bearer <this key>' (what the Ollama SDKs send "
        "when OLLAMA_API_KEY is set), else 401. Empty: no client key is required.",
    ),
    (
        "forward_client_key",
        bool,
        False,
        "Send the client's own 'Authorization: Bearer <key>' upstream instead of openai_api_key "
        "(a client without one is forwarded without a key). A server's table may set it for that server.",
    ),
    (
        "system_turns",
        str,
        "user",
        "How POST /v1/messages sends the system turns an agent puts inside the conversation (Claude Code "
        "sends one after the first user message): user (as user messages, which every chat template takes) "
        "or system (kept as system messages, for upstreams that take them anywhere, as OpenAI does).",
    ),
    (
        "responses_passthrough",
        bool,
        False,
        "Forward POST /v1/responses to the upstream's own /responses (only the model name resolved), for "
        "upstreams that serve the Responses API (OpenAI). Otherwise it is translated to chat/completions. "
        "A server's table may set it for that server.",
    ),
    (
        "upstream_timeout",
        int,
        300,
        "Seconds the upstream may stay silent (before its answer starts, or between two pieces of a "
        "stream) before the request fails with a clear error and the upstream connection is closed. 0: no limit. "
        "A server's table may set it for that server.",
    ),
    (
        "sse_event_limit",
        str,
        "16m",
        "Largest SSE event (all its data: lines) or line of an upstream stream (size, as body_size_limit: "
        "16m, 512k); a longer one ends the stream with an error and the upstream connection is closed.",
    ),
    (
        "upstream_body_limit",
        str,
        "256m",
        "Largest non-streamed upstream answer, after decompression (size, as body_size_limit); a larger "
        "Content-Length is refused at its headers, a larger (or decompressing) body is cut: 502 with a message.",
    ),
    (
        "allowed_origins",
        str,
        "",
        "Comma-separated origins of web pages allowed to use the proxy from a browser, added to Ollama's "
        "defaults (localhost, 127.0.0.1, 0.0.0.0 with any port; app://, file://, tauri://, vscode-webview://, "
        "vscode-file://). One * per origin (https://*.example.com); * alone allows every origin. "
        "Other origins get 403.",
    ),
    (
        "allowed_hosts",
        str,
        "",
        "Comma-separated host names (shell wildcards) a proxy listening on loopback answers besides "
        "local names and addresses (DNS-rebinding protection); * turns the check off.",
    ),
    (
        "request_body_limit",
        str,
        "16m",
        "Largest request body a client may send, compressed or decoded (mitmproxy size syntax: 16m, 512k, 1g; "
        "0: no limit). "
        "Larger ones get 413 before their body is read.",
    ),
    (
        "client_header_timeout",
        int,
        60,
        "Seconds a client connection may take to send a complete request head, from its opening and "
        "from the answer to its previous request (an idle kept-alive connection); then it is closed. "
        "0: no limit.",
    ),
    (
        "fast_hook_dispatch",
        bool,
        True,
        "Deliver each mitmproxy hook only to the addons that have it (mitmproxy visits every addon of its "
        "chain for every hook): the same calls in the same order, about 0.45 ms less CPU per request. "
        "false: mitmproxy's own dispatch.",
    ),
]
OPTION_NAMES = frozenset(name for name, *_ in OPTIONS)
# mitmproxy's own options that Settings reads: they decide body_view_limit "auto" (save_stream_file),
# whether the Host check applies (listen_host, addon.guard.browser), and which certificates the
# model lists' fetcher trusts (the same as mitmproxy's requests).
TLS_OPTIONS = frozenset({"ssl_insecure", "ssl_verify_upstream_trusted_ca", "ssl_verify_upstream_trusted_confdir"})
WATCHED_OPTIONS = frozenset({"save_stream_file", "listen_host"}) | TLS_OPTIONS
# The options the model directory (the servers' cached lists) is built from: only their change rebuilds it.
DIRECTORY_OPTIONS = (
    frozenset({"openai_base_url", "openai_api_key", "models_ttl", "model_catalog", "list_upstream_models"})
    | TLS_OPTIONS
)
# The options every server inherits unless its [servers.NAME] table sets them.
SERVER_OPTIONS = frozenset(
    {"think_style", "passthrough_options", "upstream_timeout", "forward_client_key", "responses_passthrough"}
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where one model's requests go: the server (with its key and settings), the model id it
    knows, how it takes `think`, and the routing rule that chose it (catalog, listed, pattern, default)."""

    server: Server
    model: str
    think_style: str
    rule: str = "default"


class HostMatcher:
    """Decides whether a destination host:port is an Ollama server."""

    def __init__(self, spec: str) -> None:
        patterns = [p.strip().lower() for p in spec.split(",") if p.strip()]
        regexes = []
        for pattern in patterns:
            host, sep, port = pattern.rpartition(":")
            if not sep or not host:
                host, port = pattern, "*"
            regexes.append(fnmatch.translate(f"{host}:{port}"))
        self._regex = re.compile("|".join(regexes)) if regexes else None

    def __call__(self, host: str, port: int) -> bool:
        return bool(self._regex and self._regex.match(f"{host.lower()}:{port}"))


def parse_version(version: str) -> str:
    """Validate the reported Ollama version: clients parse it as dotted integers."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", version.strip())
    if not match or tuple(int(g) for g in match.groups()) < MIN_OLLAMA_VERSION:
        raise exceptions.OptionsError(
            f"ollama_version must be a numeric X.Y.Z version of at least 0.6.4, got {version!r}"
        )
    return version.strip()


def parse_think_style(style: str) -> str:
    if style not in THINK_STYLES:
        raise exceptions.OptionsError(f"think_style must be one of {', '.join(THINK_STYLES)}, got {style!r}")
    return style


def parse_limit(name: str, value: str) -> int:
    """A size option in mitmproxy's syntax (`16m`, `512k`, `1g`, bytes): at least 1 KB."""
    try:
        size = fence.parse_size(value)
    except ValueError as e:
        raise exceptions.OptionsError(f"{name} must be a size such as 16m or 512k, got {value!r}") from e
    if size is None or size < 1024:
        raise exceptions.OptionsError(f"{name} must be at least 1k, got {value!r}")
    return size


SYSTEM_TURNS = ("user", "system")


def parse_system_turns(value: str) -> str:
    if value not in SYSTEM_TURNS:
        raise exceptions.OptionsError(f"system_turns must be one of {', '.join(SYSTEM_TURNS)}, got {value!r}")
    return value


def upstream_key(options: Any) -> str:
    """openai_api_key, else $OPENAI_API_KEY (kept out of the option's value, which mitmweb displays)."""
    return str(options.openai_api_key).strip() or os.environ.get("OPENAI_API_KEY", "").strip()


def body_view_limit(options: Any) -> int:
    """The byte cap for kept bodies; "auto" keeps them only where a person or a file will see them."""
    if options.body_view_limit >= 0:
        return int(options.body_view_limit)
    watched = any(name in options for name in ("web_port", "console_layout"))
    saved = "save_stream_file" in options and bool(options.save_stream_file)
    return VIEWED_BODY_LIMIT if watched or saved else 0


def log_flows(options: Any) -> bool:
    """Whether each flow that went well logs its one line at info level: as mitmdump prints its own line
    per flow, not at `flow_detail=0` (failures are logged as warnings either way). mitmweb and the console
    have no flow_detail: they log it."""
    return "flow_detail" not in options or options.flow_detail >= 1


def server_defaults(options: Any) -> Defaults:
    """The options a server inherits unless its table sets them (the default server's values)."""
    return Defaults(
        think_style=parse_think_style(options.think_style),
        passthrough_options=bool(options.passthrough_options),
        upstream_timeout=max(int(options.upstream_timeout), 0),
        forward_client_key=bool(options.forward_client_key),
        responses_passthrough=bool(options.responses_passthrough),
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the per-request path needs, computed once when options change."""

    servers: ServerTable  # the default server first, then the catalog's [servers.NAME]; their health
    is_ollama_host: HostMatcher
    ollama_version: str
    body_view_limit: int
    models: ServersDirectory  # the catalog and every server's cached model list; routing
    client_key: str  # ollama_api_key: "" lets every client in
    keys: ClientKeys  # ollama_api_key and the catalog's [keys.NAME]: empty lets every client in
    sse_event_limit: int  # bytes of one SSE event or line of an upstream stream
    upstream_body_limit: int  # bytes of one non-streamed upstream answer, decoded
    origins: Origins  # allowed_origins with Ollama's defaults
    hosts: Hosts  # allowed_hosts
    request_body_limit: int  # bytes; 0: no limit
    listen_host: str  # mitmproxy's listen_host ("": every interface), for modes that name none
    system_turns: str = "user"  # "user" or "system": /v1/messages' system turns after the start

    @property
    def server(self) -> Server:
        """The default server (`openai_base_url`, `openai_api_key` and the global options)."""
        return self.servers.default

    @classmethod
    def build(
        cls,
        options: Any,
        previous: Settings | None = None,
        updated: Set[str] = frozenset(),
        health: Health | None = None,
    ) -> Settings:
        """Settings from option values. With `previous`, its health is kept, and its model directory
        too unless `updated` feeds it; `health` (else a new one) serves the first build."""
        defaults = server_defaults(options)
        default = Server.default(options.openai_base_url, upstream_key(options), defaults)
        keep = previous is not None and not (updated & DIRECTORY_OPTIONS)
        catalog = previous.models.catalog if previous is not None and keep else Catalog.load(options.model_catalog)
        health = previous.servers.health if previous is not None else health or Health()
        servers = ServerTable.build(default, catalog.servers, defaults, health)
        if previous is not None and keep:
            models = previous.models
            models.retable(servers)
        else:
            models = ServersDirectory(
                servers,
                catalog,
                ttl=options.models_ttl,
                list_upstream=options.list_upstream_models,
                fetch=HttpFetcher(FETCH_TIMEOUT, Trust.from_options(options)),
            )
        return cls(
            servers=servers,
            is_ollama_host=HostMatcher(options.ollama_hosts),
            ollama_version=parse_version(options.ollama_version),
            body_view_limit=body_view_limit(options),
            models=models,
            client_key=options.ollama_api_key.strip(),
            keys=ClientKeys.build(
                catalog.keys, options.ollama_api_key.strip(), previous.keys if previous is not None else None
            ),
            sse_event_limit=parse_limit("sse_event_limit", options.sse_event_limit),
            upstream_body_limit=parse_limit("upstream_body_limit", options.upstream_body_limit),
            origins=Origins.parse(options.allowed_origins),
            hosts=Hosts.parse(options.allowed_hosts),
            request_body_limit=parse_request_limit(options.request_body_limit),
            listen_host=str(options.listen_host) if "listen_host" in options else "",
            system_turns=parse_system_turns(options.system_turns),
        )

    def target(self, model: str) -> Target:
        """Where a client's model name goes: the server, the upstream model id, its think style and
        the rule that chose the server. Raises `Unroutable` when every server for it is down."""
        routed = self.models.route(model)
        if isinstance(routed, RouteRefusal):
            raise Unroutable(routed)
        return Target(routed.server, routed.model_id, routed.think_style, routed.rule)
