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

The fence (`addon.mitm_internals`) puts it in place, only over the dispatch it was written for (the
source of the functions it stands in for is checked against the known 12.3.1 text); otherwise
mitmproxy's is left in place, with one warning at load.
"""

from __future__ import annotations

import types

from mitmproxy import addonmanager, exceptions, hooks

from addon import mitm_internals as fence


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
    return fence.replace_dispatch(trigger_event if enabled else None)


def uninstall() -> None:
    """mitmproxy's own dispatch back."""
    fence.replace_dispatch(None)


def installed() -> bool:
    return fence.dispatch_replaced()
