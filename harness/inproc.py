"""The addon in process, with mitmproxy's test helpers (no sockets): `client_flow` makes a client's
request as it arrives on the proxy's reverse listener, `run_request` runs it through the request
hooks as mitmproxy would (requestheaders, then request), and `configured_proxy` yields an
`OllamaProxy` configured in a `taddons` context from a catalog's TOML text."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.mode_specs import ProxyMode  # noqa: TID251 (test code, as tests/**: a test flow's listener mode)
from mitmproxy.test import taddons, tflow, tutils

from addon.proxy import OllamaProxy

REVERSE = "reverse:http://127.0.0.1:11434"  # the proxy's listener, as the tests start it
UPSTREAM = "https://api.example.com/v1"  # where configured_proxy sends by default: nothing listens
DEFAULTS: dict[str, Any] = {"openai_base_url": UPSTREAM, "openai_api_key": "sk-unit", "list_upstream_models": False}


def client_flow(
    path: str,
    body: object = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
    mode: str = REVERSE,
    host: str = "127.0.0.1",
    port: int = 11434,
) -> http.HTTPFlow:
    """A client's request with no response yet: `body` bytes as they are, None as no body, anything else
    as its JSON; `headers` after Content-Type (None: no Content-Type), names with `_` or `-` alike."""
    content = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    named = ({"content_type": content_type} if content_type is not None else {}) | (headers or {})
    fields = http.Headers()
    for name, value in named.items():  # (as http.Headers(**named) would: `_` read as `-`)
        fields[name.replace("_", "-")] = value
    request = tutils.treq(
        method=method.encode(), path=path.encode(), host=host, port=port, headers=fields, content=content
    )
    flow = tflow.tflow(req=request)
    flow.client_conn.proxy_mode = ProxyMode.parse(mode)
    return flow


def run_request(proxy: OllamaProxy, flow: http.HTTPFlow) -> http.Response | None:
    """The request hooks of a synchronous route; the proxy's own answer, or None when it goes upstream."""
    proxy.requestheaders(flow)
    proxy.request(flow)
    return flow.response


@contextmanager
def configured_proxy(catalog: str | None = None, **options: Any) -> Iterator[tuple[OllamaProxy, taddons.context]]:
    """A proxy and its context, configured with `DEFAULTS` updated by `options`; `catalog`, when given,
    is written to a models.toml of its own (removed at the end) and named by `model_catalog`."""
    with tempfile.TemporaryDirectory(prefix="inproc-") as directory:
        if catalog is not None:
            path = Path(directory) / "models.toml"
            path.write_text(catalog)
            options = {"model_catalog": str(path), **options}
        proxy = OllamaProxy()
        with taddons.context(proxy) as tctx:
            tctx.configure(proxy, **{**DEFAULTS, **options})
            yield proxy, tctx
