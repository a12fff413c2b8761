"""mitmproxy's hook dispatch without its no-op work (option `fast_hook_dispatch`, on by default).

mitmproxy 12.3.1 delivers every hook (8 per HTTP request: requestheaders, request, responseheaders,
response, each followed by update) to each of the ~37 addons of its chain in turn, and for each
one creates a coroutine (`invoke_addon`), a generator-based context manager (`safecall`) and two
generators (`_iter_hooks`, `traverse`), whether or not that addon has the hook: about 60 µs per
hook, some 0.45 ms of plain mitmdump's 1.2 ms per request on this project's benchmark machine
(bench/RESULTS.md). `trigger_event` here skips, before any of that, the addons that have neither
the hook nor children: exactly those for which mitmproxy's `_iter_hooks` yields nothing. Every
other addon goes through mitmproxy's own `invoke_addon` inside its own `safecall`, in the chain's
order, so errors, `AddonHalt`, async hooks and nested addons (scripts) behave as before.

The patch is installed only over the dispatch it was written for (the source of the functions it
relies on is checked against the known 12.3.1 text); otherwise mitmproxy's is left in place.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import types

from mitmproxy import addonmanager, exceptions, hooks

logger = logging.getLogger("ollama_proxy")

# sha256 of the source of addonmanager.traverse, AddonManager._iter_hooks and
# AddonManager.trigger_event in mitmproxy 12.3.1 (what the fast path relies on)
KNOWN_SOURCE = "47719ca6708f55cd5d5cbf1e2c9ecdbb158a0970625eeb684a720fbc4208a139"

# mitmproxy's own trigger_event while the fast path serves: kept on the class, so that a reloaded
# script (a new copy of this module) finds it
ORIGINAL = "_ollama_proxy_original_trigger_event"


def source_digest() -> str:
    """The digest of the mitmproxy functions the fast path stands in for."""
    parts = (addonmanager.traverse, addonmanager.AddonManager._iter_hooks, addonmanager.AddonManager.trigger_event)
    return hashlib.sha256("\n".join(inspect.getsource(part) for part in parts).encode()).hexdigest()


async def trigger_event(self: addonmanager.AddonManager, event: hooks.Hook) -> None:
    """`AddonManager.trigger_event`, skipping the addons that have neither this hook nor children."""
    name = event.name
    for addon in self.chain:
        try:
            func = getattr(addon, name, None)
            leaf = not hasattr(addon, "addons")
        except Exception:  # noqa: BLE001 - mitmproxy's own path reports it, inside safecall
            func, leaf = True, False
        if leaf and (not func or isinstance(func, types.ModuleType)):
            continue  # mitmproxy's _iter_hooks would yield nothing for it
        try:
            with addonmanager.safecall():
                await self.invoke_addon(addon, event)
        except exceptions.AddonHalt:
            return


def install(enabled: bool) -> bool:
    """Put the fast path in place (or mitmproxy's back); True if the fast path serves."""
    manager = addonmanager.AddonManager
    if not enabled:
        uninstall()
        return False
    if getattr(manager, ORIGINAL, None) is None:
        try:
            digest = source_digest()
        except (OSError, TypeError):
            digest = ""
        if digest != KNOWN_SOURCE:
            logger.info("fast_hook_dispatch: mitmproxy's hook dispatch is not the one it was written for; left as is")
            return False
        setattr(manager, ORIGINAL, manager.trigger_event)
    manager.trigger_event = trigger_event  # type: ignore[method-assign]
    return True


def uninstall() -> None:
    """mitmproxy's own dispatch back."""
    manager = addonmanager.AddonManager
    if (original := getattr(manager, ORIGINAL, None)) is not None:
        manager.trigger_event = original  # type: ignore[method-assign]
        delattr(manager, ORIGINAL)


def installed() -> bool:
    return getattr(addonmanager.AddonManager, ORIGINAL, None) is not None
