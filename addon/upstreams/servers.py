"""Several upstream servers behind one proxy: their configuration and routing.

Pure code (no I/O but reading environment variables once, no mitmproxy but its `OptionsError`):
`addon.upstreams.directory` fetches each server's model list (`fetch.py`) and keeps them
(`listings.py`), `health.py` says which servers are up; the request path, the discovery routes and
the error hook call into what is here.

Configuration, in the model catalog file:

    [servers.vllm]
    base_url = "http://gpu1:8000/v1"
    api_key_env = "VLLM_KEY"        # the NAME of an environment variable; never a key itself
    think_style = "chat_template_kwargs"
    passthrough_options = true
    upstream_timeout = 600
    forward_client_key = false
    responses_passthrough = false
    models = ["meta-llama/*", "Qwen/*"]

    [models."llama3.2"]
    server = "vllm"

The server of `openai_base_url` / `openai_api_key` and the global options is `default`.

Routing, first match wins (`ServerTable.route`):
1. the catalog entry's `server` (a pin: no failover);
2. the servers whose model list has the id;
3. the servers whose `models` patterns match the id;
4. the default server.
Among the candidates of the first rule that has any, the healthy one with the fewest outstanding
requests wins (ties: configuration order, `default` first). With no healthy candidate the answer
is a `RouteRefusal` (503) that names the servers and why they are down. A table of one server
(no `[servers.NAME]` tables: today's configurations) never refuses: there is nothing to fail
over to, and every request is tried as before.

Health: `addon.upstreams.health` (what a request says about its server, and up and down).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from mitmproxy.exceptions import OptionsError

from addon.catalog.models import THINK_STYLES
from addon.catalog.tables import checked_table
from addon.upstreams.health import Health, ServerState, client_reason

logger = logging.getLogger("ollama_proxy")

DEFAULT = "default"  # the name of the server of openai_base_url / openai_api_key
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class BaseURL:
    """A server's base URL, split once (the rules and `Server.url`)."""

    scheme: str
    host: str
    port: int
    prefix: str  # path without trailing slash, e.g. "/v1"

    @classmethod
    def parse(cls, url: str, what: str = "openai_base_url") -> BaseURL:
        """`what` names the setting in the error: `openai_base_url`, or `model_catalog: [servers.x]: base_url`."""
        if not isinstance(url, str):
            raise OptionsError(f"{what} must be a string")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OptionsError(f"{what} must be an http(s) URL such as https://api.openai.com/v1, got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as e:
            raise OptionsError(f"{what} has an invalid port: {url!r}") from e
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    def url(self, route: str) -> str:
        """The full URL of an OpenAI route such as 'chat/completions'."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}/{route}"

    def __str__(self) -> str:
        return self.url("").rstrip("/")


class Defaults(NamedTuple):
    """The global options a server inherits unless its table overrides them."""

    think_style: str = "reasoning_effort"
    passthrough_options: bool = False
    upstream_timeout: int = 300
    forward_client_key: bool = False
    responses_passthrough: bool = False


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One `[servers.NAME]` table, checked, its key read from the environment; overrides not yet applied."""

    name: str
    base_url: BaseURL
    api_key_env: str | None
    api_key: str = field(repr=False, default="")
    think_style: str | None = None
    passthrough_options: bool | None = None
    upstream_timeout: int | None = None
    forward_client_key: bool | None = None
    responses_passthrough: bool | None = None
    models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    """One upstream server with everything the request path needs, the global options applied."""

    name: str
    base_url: BaseURL
    authorization: str | None = field(repr=False)  # "Bearer <key>": this server's key only
    think_style: str
    passthrough_options: bool
    upstream_timeout: int
    forward_client_key: bool
    models: tuple[str, ...] = ()  # shell patterns of upstream ids served here
    key_source: str = ""  # where the key came from, for messages: "openai_api_key", "$VLLM_KEY", ""
    responses_passthrough: bool = False  # POST /v1/responses forwarded to this server's own /responses

    @classmethod
    def default(cls, base_url: str, api_key: str, defaults: Defaults | None = None) -> Server:
        """The server of `openai_base_url` / `openai_api_key` and the global options."""
        defaults = defaults or Defaults()
        return cls(
            name=DEFAULT,
            base_url=BaseURL.parse(base_url, "openai_base_url"),
            authorization=f"Bearer {api_key}" if api_key else None,
            think_style=defaults.think_style,
            passthrough_options=defaults.passthrough_options,
            upstream_timeout=defaults.upstream_timeout,
            forward_client_key=defaults.forward_client_key,
            responses_passthrough=defaults.responses_passthrough,
            key_source="openai_api_key" if api_key else "",
        )

    @classmethod
    def from_spec(cls, spec: ServerSpec, defaults: Defaults | None = None) -> Server:
        def pick(value: Any, default: Any) -> Any:
            return default if value is None else value

        defaults = defaults or Defaults()

        return cls(
            name=spec.name,
            base_url=spec.base_url,
            authorization=f"Bearer {spec.api_key}" if spec.api_key else None,
            think_style=pick(spec.think_style, defaults.think_style),
            passthrough_options=pick(spec.passthrough_options, defaults.passthrough_options),
            upstream_timeout=pick(spec.upstream_timeout, defaults.upstream_timeout),
            forward_client_key=pick(spec.forward_client_key, defaults.forward_client_key),
            responses_passthrough=pick(spec.responses_passthrough, defaults.responses_passthrough),
            models=spec.models,
            key_source=f"${spec.api_key_env}" if spec.api_key_env else "",
        )

    @property
    def key(self) -> str:
        """The bare key (for `addon.guard.secrets.register`), "" without one."""
        return self.authorization.partition(" ")[2] if self.authorization else ""

    def url(self, route: str) -> str:
        return self.base_url.url(route)

    def serves_pattern(self, model_id: str) -> bool:
        """Whether one of this server's `models` patterns matches the upstream id (case-sensitive)."""
        return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in self.models)


# name → the expected type(s), and how the error says it
_SERVER_KEYS: dict[str, tuple[type, str]] = {
    "base_url": (str, "a string"),
    "api_key_env": (str, "a string (the name of an environment variable)"),
    "think_style": (str, "a string"),
    "passthrough_options": (bool, "true or false"),
    "upstream_timeout": (int, "an integer (seconds)"),
    "forward_client_key": (bool, "true or false"),
    "responses_passthrough": (bool, "true or false"),
    "models": (list, "a list of shell patterns"),
}


def parse_servers(
    tables: Any, where: str = "model_catalog", environ: Mapping[str, str] | None = None
) -> dict[str, ServerSpec]:
    """The `[servers.NAME]` tables of the catalog file, in file order; every problem is an
    `OptionsError` naming the server. Keys are read from `environ` (default: `os.environ`) now."""
    environ = os.environ if environ is None else environ
    if not isinstance(tables, dict):
        raise OptionsError(f"{where}: 'servers' must be a table of [servers.NAME] tables")
    specs: dict[str, ServerSpec] = {}
    for name, table in tables.items():
        specs[name] = _server(name, table, f"{where}: [servers.{name}]", environ)
    return specs


def _server(name: str, table: Any, where: str, environ: Mapping[str, str]) -> ServerSpec:
    if not _NAME.fullmatch(name):
        raise OptionsError(f"{where}: invalid server name (letters, digits, '_', '.', '-')")
    if name == DEFAULT:
        raise OptionsError(
            f"{where}: the name 'default' is taken by the server of openai_base_url and openai_api_key "
            "(configure it with those options)"
        )
    table = checked_table(
        table, where, _SERVER_KEYS, refused=("api_key", "key", "authorization", "token"), env_field="api_key_env"
    )
    if "base_url" not in table:
        raise OptionsError(
            f"{where}: base_url is required (the server's OpenAI-compatible base URL, e.g. http://gpu1:8000/v1)"
        )
    base_url = BaseURL.parse(table["base_url"], f"{where}: base_url")
    api_key_env = table.get("api_key_env")
    api_key = ""
    if api_key_env is not None:
        if not _ENV_NAME.fullmatch(api_key_env):
            raise OptionsError(
                f"{where}: api_key_env must be the NAME of an environment variable holding the key "
                "(such as VLLM_KEY), not the key itself"
            )
        api_key = environ.get(api_key_env, "").strip()
        if not api_key:
            raise OptionsError(
                f"{where}: api_key_env names the environment variable {api_key_env}, which is "
                f"{'empty' if api_key_env in environ else 'not set'}: set it before starting the proxy "
                "(or leave api_key_env out for a server without a key)"
            )
    think_style = table.get("think_style")
    if think_style is not None and think_style not in THINK_STYLES:
        raise OptionsError(f"{where}: think_style must be one of {', '.join(THINK_STYLES)}, got {think_style!r}")
    timeout = table.get("upstream_timeout")
    if timeout is not None and timeout < 0:
        raise OptionsError(f"{where}: upstream_timeout must be 0 (no limit) or a positive number of seconds")
    patterns = table.get("models", [])
    if not all(isinstance(p, str) and p.strip() for p in patterns):
        raise OptionsError(f'{where}: models must be a list of non-empty shell patterns such as "meta-llama/*"')
    return ServerSpec(
        name=name,
        base_url=base_url,
        api_key_env=api_key_env,
        api_key=api_key,
        think_style=think_style,
        passthrough_options=table.get("passthrough_options"),
        upstream_timeout=timeout,
        forward_client_key=table.get("forward_client_key"),
        responses_passthrough=table.get("responses_passthrough"),
        models=tuple(p.strip() for p in patterns),
    )


def check_model_servers(
    pins: Mapping[str, str | None], specs: Mapping[str, ServerSpec], where: str = "model_catalog"
) -> None:
    """Every `server = "..."` of a `[models."x"]` entry (model name → server) names a configured server."""
    known = [DEFAULT, *specs]
    for model, server in pins.items():
        if server is not None and server not in known:
            raise OptionsError(
                f'{where}: [models."{model}"]: server {server!r} is not configured '
                f"(known: {', '.join(known)}; add a [servers.{server}] table)"
            )


# ---------------------------------------------------------------------------------------------
# Routing


@dataclass(frozen=True, slots=True)
class RouteRefusal:
    """No healthy server for the model: what the client is told (status, `{"error": message}`)."""

    model: str
    rule: str  # the routing rule that chose the candidates: catalog, listed, pattern, default
    servers: tuple[str, ...]
    message: str
    status: int = 503
    retry_after: int | None = None  # seconds, for a Retry-After header


class Unroutable(Exception):
    """Raised by `Settings.target` for a model no healthy server can take: the proxy answers the
    refusal at once, in the endpoint's error shape, with `Retry-After` (nothing goes upstream)."""

    def __init__(self, refusal: RouteRefusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


RULES = ("catalog", "listed", "pattern", "default")


class ServerTable:
    """The configured servers (the default first, then the catalog's in file order), routing, and their health."""

    def __init__(self, servers: Sequence[Server], health: Health | None = None) -> None:
        if not servers or servers[0].name != DEFAULT:
            raise ValueError("the first server must be the default one")
        self.servers: tuple[Server, ...] = tuple(servers)
        self._by_name = {s.name: s for s in self.servers}
        if len(self._by_name) != len(self.servers):
            raise ValueError("server names must be distinct")
        self.health = health or Health()

    @classmethod
    def build(
        cls,
        default: Server,
        specs: Mapping[str, ServerSpec] | Iterable[ServerSpec],
        defaults: Defaults | None = None,
        health: Health | None = None,
    ) -> ServerTable:
        items = specs.values() if isinstance(specs, Mapping) else specs
        return cls([default, *(Server.from_spec(spec, defaults) for spec in items)], health)

    @property
    def default(self) -> Server:
        return self.servers[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def __getitem__(self, name: str) -> Server:
        return self._by_name[name]

    def get(self, name: str | None) -> Server | None:
        return self._by_name.get(name) if name is not None else None

    def __iter__(self) -> Iterator[Server]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def secrets(self) -> dict[str, str]:
        """Every configured key by a name for `addon.guard.secrets.register` ("servers.vllm" → key)."""
        return {f"servers.{s.name}": s.key for s in self.servers if s.key}

    @property
    def any_forwards_client_key(self) -> bool:
        """Whether the access gate must hold client keys (some server forwards them)."""
        return any(s.forward_client_key for s in self.servers)

    def candidates(
        self, model_id: str, catalog_server: str | None, listed_by: Mapping[str, frozenset[str]]
    ) -> tuple[str, tuple[Server, ...]]:
        """The first routing rule that has candidates, and its candidates in configuration order.

        `listed_by`: server name → the upstream ids in its last good model list (servers
        without a known list are absent or empty).
        """
        if catalog_server is not None:
            return "catalog", (self._by_name[catalog_server],)
        listing = tuple(s for s in self.servers if model_id in listed_by.get(s.name, ()))
        if listing:
            return "listed", listing
        matching = tuple(s for s in self.servers if s.serves_pattern(model_id))
        if matching:
            return "pattern", matching
        return "default", (self.default,)

    def route(
        self,
        model_id: str,
        catalog_server: str | None,
        listed_by: Mapping[str, frozenset[str]],
        *,
        asked: str | None = None,
    ) -> Server | RouteRefusal:
        """The server a request for the upstream id `model_id` goes to, or why none can take it
        (`asked`: the client's name for the model, for the refusal's message)."""
        return self.pick(model_id, catalog_server, listed_by, asked=asked)[1]

    def pick(
        self,
        model_id: str,
        catalog_server: str | None,
        listed_by: Mapping[str, frozenset[str]],
        *,
        asked: str | None = None,
    ) -> tuple[str, Server | RouteRefusal]:
        """`route`, with the rule that decided (catalog, listed, pattern, default)."""
        rule, servers = self.candidates(model_id, catalog_server, listed_by)
        health = self.health
        if len(servers) == 1:  # the common case, without building lists
            only = servers[0]
            if len(self.servers) == 1 or health.is_healthy(only.name):  # one server alone is never refused
                return rule, only
            return rule, self._refusal(asked or model_id, rule, servers)
        best: Server | None = None
        best_load = 0
        for server in servers:
            if health.is_healthy(server.name):
                load = health.outstanding(server.name)
                if best is None or load < best_load:
                    best, best_load = server, load
        return rule, best if best is not None else self._refusal(asked or model_id, rule, servers)

    def _refusal(self, model_id: str, rule: str, servers: tuple[Server, ...]) -> RouteRefusal:
        health = self.health
        now = health.clock()
        states = [health.state(s.name) for s in servers]

        def why(state: ServerState) -> str:
            ago = f", for {now - state.down_since:.0f} s" if state.down_since is not None else ""
            return f"{client_reason(state.reason)}{ago}"

        if rule == "default":
            message = (
                f"model '{model_id}': the default server is down ({why(states[0])}); "
                "the proxy retries it in the background"
            )
        elif len(servers) == 1:
            how = "its catalog entry's server" if rule == "catalog" else "the only server for it"
            message = f"model '{model_id}': {how}, {servers[0].name}, is down ({why(states[0])}); the proxy retries it in the background"
        else:
            each = "; ".join(f"{s.name} ({why(s)})" for s in states)
            message = f"model '{model_id}': every server that serves it is down: {each}; the proxy retries them in the background"
        waits = [s.last_failure + health.retry_after - now for s in states if s.last_failure is not None]
        retry = max(1, math.ceil(min(waits))) if waits else None
        return RouteRefusal(model_id, rule, tuple(s.name for s in servers), message, 503, retry)
