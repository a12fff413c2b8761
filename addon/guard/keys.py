"""Named client keys: the catalog's `[keys.NAME]` tables, which key a request carries, which models
it may use, and its per-minute limits.

```toml
[keys.alice]
key_env = "ALICE_KEY"          # the environment variable holding the key (never the key itself)
models = ["gpt-4o*", "fast"]   # optional: the model names (shell patterns) this key may use
requests_per_minute = 60       # optional limits, per proxy process
tokens_per_minute = 100000
```

With any `[keys]` table (or `ollama_api_key`, a key named `ollama_api_key` without limits) every
request needs one of the keys: `guard.access.refusal` calls `ClientKeys.identify` (a SHA-256 digest
looked up, then compared in constant time) and answers 401 without one. The key's name, never its
value, goes into the flow's record, comment, log line and the metrics. `ClientKey.allows` decides
the models (the proxy answers 403 for any other, and the discovery routes list only these), and
`ClientKey.admit` the limits: token buckets refilled continuously (a minute's worth at most), a
request over either limit gets 429 with `Retry-After`. Tokens are charged once an answer's usage
is known (`ClientKey.charge`, from `addon.accounting`), so one answer may take the tokens budget
below zero: the next request then waits until it is refilled. The buckets live in the process:
under `make run WORKERS=N`, or on several hosts, each process has its own (docs/keys.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy.exceptions import OptionsError

from addon.catalog.models import ModelInfo, full_name, has_tag
from addon.catalog.tables import checked_table
from addon.reply import Answer, Reply

if TYPE_CHECKING:
    from addon.endpoints.base import Endpoint

OLLAMA_API_KEY = "ollama_api_key"  # the name the ollama_api_key option's key goes by
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYS: dict[str, tuple[type, str]] = {
    "key_env": (str, "the name of an environment variable"),
    "models": (list, "a list of model name patterns"),
    "requests_per_minute": (int, "a positive integer"),
    "tokens_per_minute": (int, "a positive integer"),
}


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One `[keys.NAME]` table, its key read from the environment."""

    name: str
    key_env: str
    key: str = field(repr=False)
    models: tuple[str, ...] = ()  # empty: every model
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


def parse_keys(
    tables: Any, where: str = "model_catalog", environ: Mapping[str, str] | None = None
) -> dict[str, KeySpec]:
    """The `[keys.NAME]` tables; every problem is an `OptionsError` naming the key's table, never its value."""
    environ = os.environ if environ is None else environ
    if not isinstance(tables, dict):
        raise OptionsError(f"{where}: 'keys' must be a table of [keys.NAME] tables")
    specs: dict[str, KeySpec] = {}
    owners: dict[str, str] = {}  # key value → the name that holds it
    for name, table in tables.items():
        here = f"{where}: [keys.{name}]"
        spec = _key(name, table, here, environ)
        if (other := owners.get(spec.key)) is not None:
            raise OptionsError(f"{here}: holds the same key as [keys.{other}]: every name needs a key of its own")
        owners[spec.key] = name
        specs[name] = spec
    return specs


def _key(name: str, table: Any, where: str, environ: Mapping[str, str]) -> KeySpec:
    if not _NAME.fullmatch(name) or name == OLLAMA_API_KEY:
        raise OptionsError(
            f"{where}: invalid key name (letters, digits, '_', '.', '-', at most 64; '{OLLAMA_API_KEY}' is taken)"
        )
    table = checked_table(table, where, _KEYS, refused=("key", "api_key", "value", "token"), env_field="key_env")
    key_env = table.get("key_env")
    if key_env is None or not _ENV_NAME.fullmatch(key_env):
        raise OptionsError(f"{where}: key_env is required: the NAME of the environment variable holding the key")
    key = environ.get(key_env, "").strip()
    if not key:
        raise OptionsError(
            f"{where}: key_env names the environment variable {key_env}, which is "
            f"{'empty' if key_env in environ else 'not set'}: set it before starting the proxy"
        )
    patterns = table.get("models", [])
    if not all(isinstance(p, str) and p.strip() for p in patterns):
        raise OptionsError(f'{where}: models must be a list of non-empty name patterns such as "gpt-4o*"')
    limits = {item: table.get(item) for item in ("requests_per_minute", "tokens_per_minute")}
    for item, value in limits.items():
        if value is not None and value <= 0:
            raise OptionsError(f"{where}: {item} must be a positive integer")
    return KeySpec(
        name,
        key_env,
        key,
        tuple(p.strip() for p in patterns),
        limits["requests_per_minute"],
        limits["tokens_per_minute"],
    )


class Bucket:
    """A token bucket of `per_minute` tokens, refilled continuously; its level may go below zero."""

    __slots__ = ("level", "per_minute", "rate", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self.level = float(per_minute)
        self.updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.per_minute, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, need: float, now: float) -> float:
        """Seconds until `need` tokens are there (0: now)."""
        self.refill(now)
        return 0.0 if self.level >= need else (need - self.level) / self.rate


class ClientKey:
    """A named key at run time: the models it may use and its limits' buckets."""

    __slots__ = ("clock", "key", "name", "patterns", "requests", "spec", "tokens")

    def __init__(self, spec: KeySpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.name = spec.name
        self.key = spec.key.encode("utf-8", "surrogateescape")
        self.clock = clock
        # A pattern without a tag or wildcard at its end also names the `:latest` form clients send.
        self.patterns = tuple(
            {q for p in spec.models for q in (p, p if has_tag(p) or p.endswith("*") else full_name(p))}
        )
        now = clock()
        self.requests = Bucket(spec.requests_per_minute, now) if spec.requests_per_minute else None
        self.tokens = Bucket(spec.tokens_per_minute, now) if spec.tokens_per_minute else None

    @property
    def restricts_models(self) -> bool:
        return bool(self.patterns)

    def allows(self, model: str) -> bool:
        """Whether this key may use the model (as the client names it)."""
        if not self.patterns:
            return True
        names = (model, full_name(model))
        return any(fnmatch.fnmatchcase(n, p) for p in self.patterns for n in names)

    def admit(self) -> tuple[str, int] | None:
        """Take one request from the limits; when over one: (which limit, whole seconds to wait)."""
        now = self.clock()
        for limit, bucket, need in (
            ("requests_per_minute", self.requests, 1.0),
            ("tokens_per_minute", self.tokens, 1.0),
        ):
            if bucket is not None and (wait := bucket.wait(need, now)) > 0:
                return limit, max(1, math.ceil(wait))
        if self.requests is not None:
            self.requests.level -= 1.0
        return None

    def charge(self, tokens: int) -> None:
        """An answer's tokens (prompt and completion) against tokens_per_minute."""
        if self.tokens is not None and tokens > 0:
            self.tokens.refill(self.clock())
            self.tokens.level -= tokens


class ClientKeys:
    """Every key a client may present, by its SHA-256 digest; empty: no key is required."""

    def __init__(self, keys: Iterable[ClientKey] = ()) -> None:
        self.by_digest = {hashlib.sha256(k.key).digest(): k for k in keys}
        self.by_name = {k.name: k for k in self.by_digest.values()}

    def __bool__(self) -> bool:
        return bool(self.by_digest)

    def __len__(self) -> int:
        return len(self.by_digest)

    @classmethod
    def build(
        cls,
        specs: Mapping[str, KeySpec],
        ollama_api_key: str = "",
        previous: ClientKeys | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ClientKeys:
        """The keys of the catalog and the `ollama_api_key` option; a key whose table did not change
        keeps its buckets (a reconfiguration does not reset the limits)."""
        all_specs = list(specs.values())
        if ollama_api_key:
            if any(s.key == ollama_api_key for s in all_specs):
                raise OptionsError("ollama_api_key: the same key as a [keys.NAME] table of model_catalog")
            all_specs.append(KeySpec(OLLAMA_API_KEY, "", ollama_api_key))
        kept = previous.by_name if previous is not None else {}
        keys = []
        for spec in all_specs:
            old = kept.get(spec.name)
            keys.append(old if old is not None and old.spec == spec else ClientKey(spec, clock))
        return cls(keys)

    def identify(self, token: str | None) -> ClientKey | None:
        """The key a client presented (its bearer token), or None: compared in constant time."""
        if not token:
            return None
        presented = token.encode("utf-8", "surrogateescape")
        key = self.by_digest.get(hashlib.sha256(presented).digest())
        if key is None or not hmac.compare_digest(presented, key.key):
            return None
        return key


def visible(key: ClientKey | None, models: Iterable[ModelInfo]) -> list[ModelInfo]:
    """The models of a listing a client's key may use (all of them without a key or a `models` list)."""
    if key is None or not key.patterns:
        return list(models)
    return [m for m in models if key.allows(m.name)]


def model_refusal(key: ClientKey, model: str | None, reply: Reply, endpoint: Endpoint) -> Reply:
    """A 403 in the endpoint's shape in place of a reply for a model the key may not use (or for no
    model at all, when the reply goes upstream); other replies, and refusals already made, unchanged."""
    if isinstance(reply, Answer) and (reply.status >= 400 or model is None):
        return reply
    if model is not None and key.allows(model):
        return reply
    return endpoint.error(403, f"forbidden: the key {key.name} may not use the model {model or '(none named)'}")
