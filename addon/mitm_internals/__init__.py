"""The fence: the one package that touches mitmproxy's private internals, each checked once at load.

Everything else in the addon uses mitmproxy's public addon API (hooks, flows, options, `ctx`) and
this package's surface below; ruff's banned-api rule and tests/test_mitm_internals.py keep private
modules and attributes out of the other modules. `verify()` (run by `OllamaProxy.load`) checks every
touch against the running mitmproxy: where security depends on it the addon refuses to start
(`MitmproxyChanged`, one error naming each missing piece), where it is safe the feature is switched
off with one warning (`available`). docs/mitmproxy-internals.md is the ledger: every touch, why,
what happens when it is gone. mitmproxy's failure texts become a `FailureKind` here, nowhere else.

Its modules, by what they touch: `private` (the imports of mitmproxy's private modules), `checks`
(`verify`, `TOUCHES`), `failures` (`FailureKind`), `http1` (patches of the HTTP/1 layer),
`connections` (live connections, listeners, TLS), `dispatch` (the hook dispatch).
"""

from __future__ import annotations

import contextlib

from addon.mitm_internals.checks import TOUCHES, Feature, MitmproxyChanged, available, verify
from addon.mitm_internals.connections import (
    abort_upstream,
    answer_and_close_raw,
    body_last_seen,
    cancel_upstream,
    client_writer,
    encrypt_for_client,
    is_reverse,
    mark_upstream_closed,
    open_upstreams,
    plain_reverse_tls,
    rebind_listeners,
    writer_of,
)
from addon.mitm_internals.dispatch import dispatch_replaced, replace_dispatch
from addon.mitm_internals.failures import MITMPROXY_TEXTS, TRAILERS, FailureKind, failure_kind
from addon.mitm_internals.http1 import (
    install_buffer_policy,
    install_error_page,
    install_trailer_refusal,
    uninstall_patches,
)

# mitmproxy's helpers under the addon's names (absent when mitmproxy changed: `verify` says so)
with contextlib.suppress(ImportError):
    from addon.mitm_internals.private import (
        REASONS,
        NextLayer,
        ServerHookData,
        assemble_response,
        assemble_response_head,
        connection_close,
        expected_body_size,
        format_address,
        hostport,
        parse_size,
        parse_url,
        pretty_size,
    )

__all__ = [
    "MITMPROXY_TEXTS",
    "REASONS",
    "TOUCHES",
    "TRAILERS",
    "FailureKind",
    "Feature",
    "MitmproxyChanged",
    "NextLayer",
    "ServerHookData",
    "abort_upstream",
    "answer_and_close_raw",
    "assemble_response",
    "assemble_response_head",
    "available",
    "body_last_seen",
    "cancel_upstream",
    "client_writer",
    "connection_close",
    "dispatch_replaced",
    "encrypt_for_client",
    "expected_body_size",
    "failure_kind",
    "format_address",
    "hostport",
    "install_buffer_policy",
    "install_error_page",
    "install_trailer_refusal",
    "is_reverse",
    "mark_upstream_closed",
    "open_upstreams",
    "parse_size",
    "parse_url",
    "plain_reverse_tls",
    "pretty_size",
    "rebind_listeners",
    "replace_dispatch",
    "uninstall_patches",
    "verify",
    "writer_of",
]
