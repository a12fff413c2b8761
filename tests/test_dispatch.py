"""The fast hook dispatch (addon/dispatch.py): the same calls, in the same order, with the same errors as mitmproxy's."""

from __future__ import annotations

import logging
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy.test import taddons

from addon import dispatch
from addon import mitm_internals as fence
from harness import TEST_KEY
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer


@dataclass
class PingHook(hooks.Hook):
    """A hook of this test's own, so that no built-in addon has it."""

    note: str


calls: list[str] = []


class Leaf:
    def __init__(self, name: str) -> None:
        self.name = name


class Sync(Leaf):
    def ping(self, note: str) -> None:
        calls.append(f"{self.name}:{note}")


class Async(Leaf):
    async def ping(self, note: str) -> None:
        calls.append(f"{self.name}:async:{note}")


class Failing(Leaf):
    def ping(self, note: str) -> None:
        calls.append(f"{self.name}:fails")
        raise ValueError(f"{self.name} broke")


class Halting(Leaf):
    def ping(self, note: str) -> None:
        calls.append(f"{self.name}:halts")
        raise exceptions.AddonHalt()


class Parent(Leaf):
    """An addon with children and no hook of its own (as mitmproxy's ScriptLoader)."""

    def __init__(self, name: str, children: list[object]) -> None:
        super().__init__(name)
        self.addons = children


class ModuleNamed(Leaf):
    """An attribute with the hook's name that is a module (`from mitmproxy import log`)."""

    ping = types  # type: ignore[assignment]


class NotCallable(Leaf):
    ping = 42


class Falsy(Leaf):
    ping = None


class BrokenGetattr(Leaf):
    def __getattr__(self, name: str) -> object:
        raise RuntimeError("no attributes here")


def chain() -> list[object]:
    return [
        Leaf("plain"),
        Sync("first"),
        ModuleNamed("module"),
        Falsy("falsy"),
        Parent("scripts", [Leaf("inner-plain"), Async("inner"), Parent("nested", [Sync("deep")])]),
        Failing("failing"),
        Sync("after-failure"),
        NotCallable("not-callable"),
        BrokenGetattr("broken"),
        Parent("failing-parent", [Failing("child-fails"), Sync("child-skipped")]),
        Sync("before-halt"),
        Halting("halt"),
        Sync("never"),
    ]


@pytest.fixture
def original() -> Iterator[None]:
    dispatch.uninstall()
    yield
    dispatch.uninstall()


async def _run(fast: bool, caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    calls.clear()
    caplog.clear()
    with taddons.context() as tctx:
        manager = tctx.master.addons
        manager.chain = chain()
        manager.lookup = {}
        if fast:
            assert dispatch.install(True)
        try:
            with caplog.at_level(logging.ERROR):
                await manager.trigger_event(PingHook("hi"))
        finally:
            dispatch.uninstall()
    errors = [re.sub(r" at 0x[0-9a-f]+", "", r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    return list(calls), errors


async def test_same_calls_order_and_errors_as_mitmproxy(original: None, caplog: pytest.LogCaptureFixture) -> None:
    slow = await _run(False, caplog)
    fast = await _run(True, caplog)
    assert fast == slow
    called, errors = fast
    assert called == [
        "first:hi",
        "inner:async:hi",
        "deep:hi",
        "failing:fails",
        "after-failure:hi",
        "child-fails:fails",
        "before-halt:hi",
        "halt:halts",
    ]
    assert any("failing broke" in e for e in errors)
    assert any("not callable" in e for e in errors)
    assert any("no attributes here" in e for e in errors)


async def test_skips_the_addons_without_the_hook(original: None) -> None:
    visited: list[str] = []
    real_invoke = addonmanager.AddonManager.invoke_addon

    async def counting(self: addonmanager.AddonManager, addon: object, event: hooks.Hook) -> None:
        visited.append(type(addon).__name__)
        await real_invoke(self, addon, event)

    with taddons.context() as tctx, pytest.MonkeyPatch.context() as mp:
        mp.setattr(addonmanager.AddonManager, "invoke_addon", counting)
        manager = tctx.master.addons
        manager.chain = [Leaf("a"), Sync("b"), Leaf("c"), Parent("d", [Leaf("e")])]
        calls.clear()
        assert dispatch.install(True)
        try:
            await manager.trigger_event(PingHook("x"))
        finally:
            dispatch.uninstall()
    assert calls == ["b:x"]
    assert visited == ["Sync", "Parent"]  # mitmproxy's path for the addon with the hook, and for children


def test_install_checks_mitmproxys_source(original: None, monkeypatch: pytest.MonkeyPatch) -> None:
    mitmproxys = addonmanager.AddonManager.trigger_event
    assert fence.verify() == [], "mitmproxy's hook dispatch changed: review dispatch.py"
    assert dispatch.install(True) and dispatch.installed()
    assert addonmanager.AddonManager.trigger_event is dispatch.trigger_event
    assert dispatch.install(True)  # again: still the fast path, mitmproxy's kept once
    assert dispatch.install(False) is False and not dispatch.installed()
    assert addonmanager.AddonManager.trigger_event is mitmproxys

    def _iter_hooks(self, addon, event):  # another mitmproxy's
        yield from ()

    monkeypatch.setattr(addonmanager.AddonManager, "_iter_hooks", _iter_hooks)
    try:
        (warning,) = fence.verify()
        assert "switched off: fast_hook_dispatch" in warning and "_iter_hooks" in warning
        assert dispatch.install(True) is False
        assert addonmanager.AddonManager.trigger_event is mitmproxys
    finally:
        monkeypatch.undo()
        fence.verify()


@pytest.mark.e2e
@pytest.mark.parametrize("fast", ["true", "false"])
def test_both_dispatches_serve(fast: str, upstream: UpstreamServer, tmp_path: Path) -> None:
    dump = Mitmdump(
        tmp_path,
        "reverse",
        f"openai_base_url={upstream.base_url}",
        f"openai_api_key={TEST_KEY}",
        f"fast_hook_dispatch={fast}",
    )
    try:
        for stream in (False, True):
            answer = httpx.post(
                dump.url + "/api/chat",
                json={"model": "llama3.2", "messages": [{"role": "user", "content": "hello there"}], "stream": stream},
                timeout=20,
            )
            assert answer.status_code == 200
            assert "echo: hello there" in "".join(
                line.get("message", {}).get("content", "")
                for line in (httpx.Response(200, content=part).json() for part in answer.content.splitlines())
            )
        assert httpx.get(dump.url + "/api/tags", headers={"origin": "https://evil.example"}).status_code == 403
    finally:
        dump.stop()
