"""mitmproxy's hook dispatch replaced (`fast_hook_dispatch`, addon/dispatch.py), on the class, and put back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager

from addon.mitm_internals.checks import Feature, available

# mitmproxy's own trigger_event while the fast path serves (on the class: a reloaded script finds it)
_ORIGINAL_DISPATCH = "_ollama_proxy_original_trigger_event"


def replace_dispatch(trigger_event: Callable[..., Any] | None) -> bool:
    """`trigger_event` in place of `AddonManager.trigger_event` (None: mitmproxy's own back), only over
    the dispatch it was written for; True if it serves."""
    manager = addonmanager.AddonManager
    if trigger_event is None:
        if (original := getattr(manager, _ORIGINAL_DISPATCH, None)) is not None:
            manager.trigger_event = original  # type: ignore[method-assign]
            delattr(manager, _ORIGINAL_DISPATCH)
        return False
    if getattr(manager, _ORIGINAL_DISPATCH, None) is None:
        if not available(Feature.FAST_DISPATCH):
            return False
        setattr(manager, _ORIGINAL_DISPATCH, manager.trigger_event)
    manager.trigger_event = trigger_event  # type: ignore[method-assign]
    return True


def dispatch_replaced() -> bool:
    return getattr(addonmanager.AddonManager, _ORIGINAL_DISPATCH, None) is not None
