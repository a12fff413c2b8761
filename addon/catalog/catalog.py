"""The TOML model catalog (`model_catalog`): its `[models."x"]` entries, its `[servers.NAME]` and `[keys.NAME]` tables.

Read once when the options change; every problem is an `OptionsError` naming the entry. The
servers' tables are read by `upstreams.servers.parse_servers`, the client keys' by
`guard.keys.parse_keys`; what a model is lives in
`catalog.models`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import exceptions

from addon.catalog.models import (
    CAPABILITIES,
    LATEST,
    THINK_STYLES,
    ModelInfo,
    full_name,
    infer,
)
from addon.guard.keys import KeySpec, parse_keys
from addon.upstreams.servers import ServerSpec, check_model_servers, parse_servers

_ENTRY_KEYS: dict[str, type | tuple[type, ...]] = {
    "upstream": str,
    "context_length": int,
    "capabilities": list,
    "family": str,
    "parameter_size": str,
    "quantization_level": str,
    "embedding_length": int,
    "description": str,
    "think_style": str,
    "max_output_tokens": int,
    "server": str,
    "stop": list,
}
MAX_STOP_SEQUENCES = 4  # OpenAI's limit: a default every server takes


@dataclass(frozen=True, slots=True)
class Catalog:
    """The models of the `model_catalog` file, by full client name."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    servers: dict[str, ServerSpec] = field(default_factory=dict)  # the [servers.NAME] tables (addon.upstreams.servers)
    keys: dict[str, KeySpec] = field(default_factory=dict)  # the [keys.NAME] tables (addon.guard.keys)

    def get(self, name: str) -> ModelInfo | None:
        return self.models.get(full_name(name))

    @classmethod
    def load(cls, path: str, environ: Mapping[str, str] | None = None) -> Catalog:
        """Read and check the TOML file; every problem is an OptionsError naming the file and key."""
        if not path.strip():
            return cls()
        try:
            with open(path.strip(), "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise exceptions.OptionsError(f"model_catalog: cannot read {path!r}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise exceptions.OptionsError(f"model_catalog: {path!r} is not valid TOML: {e}") from None
        return cls.parse(data, path, environ)

    @classmethod
    def parse(
        cls, data: dict[str, Any], where: str = "model_catalog", environ: Mapping[str, str] | None = None
    ) -> Catalog:
        unknown = set(data) - {"models", "servers", "keys"}
        if unknown:
            raise exceptions.OptionsError(
                f"{where}: unknown top-level keys {sorted(unknown)} "
                '(expected [models."name"], [servers.NAME] and [keys.NAME] tables)'
            )
        tables = data.get("models", {})
        if not isinstance(tables, dict):
            raise exceptions.OptionsError(f"{where}: 'models' must be a table of [models.\"name\"] tables")
        models: dict[str, ModelInfo] = {}
        for name, table in tables.items():
            models[full_name(name)] = _entry(name, table, f'{where}: [models."{name}"]')
        servers = parse_servers(data.get("servers", {}), where, environ)
        check_model_servers({name: table.get("server") for name, table in tables.items()}, servers, where)
        return cls(models, servers, parse_keys(data.get("keys", {}), where, environ))


def _entry(name: str, table: Any, where: str) -> ModelInfo:
    if not isinstance(table, dict):
        raise exceptions.OptionsError(f"{where} must be a table")
    if not name or name != name.strip():
        raise exceptions.OptionsError(f"{where}: invalid model name")
    for key, value in table.items():
        wanted = _ENTRY_KEYS.get(key)
        if wanted is None:
            raise exceptions.OptionsError(f"{where}: unknown key {key!r} (known: {', '.join(_ENTRY_KEYS)})")
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise exceptions.OptionsError(
                f"{where}: {key} must be {'a string' if wanted is str else 'an integer' if wanted is int else 'a list'}"
            )
    upstream = table.get("upstream") or (name[: -len(LATEST)] if name.endswith(LATEST) else name)
    inferred = infer(upstream)
    capabilities = table.get("capabilities")
    if capabilities is not None:
        bad = [c for c in capabilities if c not in CAPABILITIES]
        if bad:
            raise exceptions.OptionsError(f"{where}: unknown capabilities {bad} (known: {', '.join(CAPABILITIES)})")
    think_style = table.get("think_style")
    if think_style is not None and think_style not in THINK_STYLES:
        raise exceptions.OptionsError(f"{where}: think_style must be one of {', '.join(THINK_STYLES)}")
    context = table.get("context_length", inferred.context_length)
    if context <= 0:
        raise exceptions.OptionsError(f"{where}: context_length must be positive")
    limit = table.get("max_output_tokens", inferred.max_output_tokens)
    if limit is not None and limit <= 0:
        raise exceptions.OptionsError(f"{where}: max_output_tokens must be positive")
    stop = table.get("stop", [])
    if len(stop) > MAX_STOP_SEQUENCES or not all(isinstance(s, str) and s for s in stop):
        raise exceptions.OptionsError(f"{where}: stop must be a list of at most {MAX_STOP_SEQUENCES} non-empty strings")
    return ModelInfo(
        name=full_name(name),
        upstream=upstream,
        context_length=context,
        capabilities=tuple(capabilities) if capabilities is not None else inferred.capabilities,
        family=table.get("family", inferred.family),
        parameter_size=table.get("parameter_size", ""),
        quantization_level=table.get("quantization_level", ""),
        embedding_length=table.get("embedding_length", inferred.embedding_length),
        description=table.get("description", ""),
        think_style=think_style,
        in_catalog=True,
        max_output_tokens=limit,
        server=table.get("server"),
        stop=tuple(stop),
    )
