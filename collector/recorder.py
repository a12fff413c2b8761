"""A mitmproxy addon script, loaded after addon/proxy.py, that saves each upstream exchange as a `.flow` file.

The saved flow holds the OpenAI request exactly as the proxy sent it upstream (without any key),
the upstream's own answer (status, headers, and the raw body: the SSE text of a stream), and in
its metadata the client's Ollama request (`ollama_request`) and the Ollama answer the client
received (`ollama_response`, `ollama_status`). Replayed with `--server-replay`, it gives the addon
the upstream answer it had, with no upstream running.

    mitmdump -s addon/proxy.py -s collector/recorder.py --set record_dir=flows/NAME ...

A client names each exchange with an `X-Scenario` header; that is the file's name.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from mitmproxy import ctx, http, io
from mitmproxy.addonmanager import Loader

logger = logging.getLogger("ollama_proxy.recorder")

SCENARIO_HEADER = "x-scenario"
WHOLE_BODIES = 100_000_000
SECRET_HEADERS = (
    "authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
    "openai-organization",
    "openai-project",
)


def upstream_keys(option: str) -> list[str]:
    """The option's key, and $OPENAI_API_KEY (how `make record` passes it: never on the command line)."""
    return [key for key in (option.strip(), os.environ.get("OPENAI_API_KEY", "").strip()) if key]


class KeyLeak(RuntimeError):
    """A configured key was found in a flow about to be written."""


def redact(flow: http.HTTPFlow, secrets: list[str]) -> http.HTTPFlow:
    """The upstream exchange of a translated flow, with every secret header removed."""
    recorded: http.HTTPFlow = flow.copy()
    for name in SECRET_HEADERS:
        recorded.request.headers.pop(name, None)
    assert recorded.response is not None
    headers = flow.metadata.get("upstream_headers") or []
    recorded.response.headers = http.Headers(
        [(k.encode(), v.encode()) for k, v in headers if k.lower() not in SECRET_HEADERS]
    )
    recorded.response.status_code = flow.metadata["ollama"].get("upstream_status", recorded.response.status_code)
    recorded.response.reason = ""
    recorded.response.content = flow.metadata.get("upstream_response") or b""
    recorded.metadata["ollama_response"] = flow.response.content if flow.response else b""
    recorded.metadata["ollama_status"] = flow.response.status_code if flow.response else 0
    recorded.metadata.pop("upstream_response", None)
    recorded.metadata.pop("upstream_headers", None)
    check_no_secrets(recorded, secrets)
    return recorded


def check_no_secrets(flow: http.HTTPFlow, secrets: list[str]) -> None:
    data = repr(flow.get_state()).encode()
    for secret in secrets:
        if secret and secret.encode() in data:
            raise KeyLeak("a key would have been written into a saved flow; nothing was written")


class Recorder:
    def load(self, loader: Loader) -> None:
        loader.add_option("record_dir", str, "", "Folder where each upstream exchange is saved as <scenario>.flow.")

    def configure(self, updated: set[str]) -> None:
        # A recording needs whole bodies: the proxy keeps them in the flow only up to body_view_limit.
        if ctx.options.record_dir and ctx.options.body_view_limit < WHOLE_BODIES:
            ctx.options.body_view_limit = WHOLE_BODIES

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if name := flow.request.headers.get(SCENARIO_HEADER):
            flow.metadata["scenario"] = re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def response(self, flow: http.HTTPFlow) -> None:
        meta = flow.metadata.get("ollama")
        if not ctx.options.record_dir or not meta or "upstream_status" not in meta:
            return
        secrets = upstream_keys(ctx.options.openai_api_key)
        try:
            recorded = redact(flow, secrets)
        except KeyLeak as e:
            logger.error("not recorded: %s", e)
            return
        folder = Path(ctx.options.record_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{flow.metadata.get('scenario') or flow.id}.flow"
        with path.open("wb") as file:
            io.FlowWriter(file).add(recorded)


addons = [Recorder()]
