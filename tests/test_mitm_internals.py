"""The fence around mitmproxy's internals (the package addon/mitm_internals/): every touch checked at load, the
addon refusing to start or switching a feature off when one is gone, failures as typed kinds, and no
other module reaching into mitmproxy's private parts."""

from __future__ import annotations

import ast
import time
import types
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.addons import proxyserver
from mitmproxy.proxy import server
from mitmproxy.proxy.layers.http import HttpStream, _http1

from addon import mitm_internals as fence
from addon.mitm_internals import FailureKind, Feature, private
from addon.mitm_internals import checks as fence_checks
from harness import ROOT
from harness.mitmdump import Mitmdump

ADDON = ROOT / "addon"
FENCE = ADDON / "mitm_internals"  # the package, and only it, may touch mitmproxy's internals


@pytest.fixture(autouse=True)
def verified_again() -> Any:
    yield
    fence.verify()  # the real mitmproxy's verdict, for the tests that follow


def test_the_pinned_mitmproxy_passes_every_check() -> None:
    assert fence.verify() == []
    assert all(fence.available(feature) for feature in Feature)


@pytest.mark.parametrize("name", list(fence.TOUCHES))
def test_each_touch_changed_refuses_or_switches_off(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every object a touch checks replaced by one without its source, attributes or parameters."""
    feature, *checks = fence.TOUCHES[name]
    others = {check[0] for other, (_, *more) in fence.TOUCHES.items() if other != name for check in more}
    checked = {check[0] for check in checks} - others  # (what another touch checks too stays)
    assert checked
    real = fence_checks._resolve

    def changed(dotted: str) -> Any:
        if dotted in checked:
            return types.SimpleNamespace(__qualname__=dotted)  # no source, no attributes, no signature
        return real(dotted)

    monkeypatch.setattr(fence_checks, "_resolve", changed)
    if feature is None:
        with pytest.raises(fence.MitmproxyChanged, match="does not start") as refused:
            fence.verify()
        assert name in str(refused.value)
    else:
        (warning,) = fence.verify()
        assert name in warning and f"switched off: {feature.value}" in warning
        assert not fence.available(feature)
        assert all(fence.available(other) for other in Feature if other is not feature)


@pytest.mark.parametrize(
    ("target", "attribute", "refused"),
    [
        (_http1, "make_error_response", True),  # the JSON error page: upstream bytes and keys out of it
        (_http1.Http1Connection, "_handle_event", True),  # bounded client buffers
        (proxyserver.Proxyserver, "__annotations__", True),  # client connections' writers (early answers)
        (HttpStream, "check_killed", True),  # a killed flow writing nothing; the "killed" text
        (_http1, "make_body_reader", False),  # trailers refused
        (server.TimeoutWatchdog, "__annotations__", False),  # last_activity
    ],
)
def test_real_internals_gone(target: Any, attribute: str, refused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if attribute == "__annotations__":
        monkeypatch.setattr(target, attribute, {})
    else:
        monkeypatch.delattr(target, attribute)
    if refused:
        with pytest.raises(fence.MitmproxyChanged, match="does not start"):
            fence.verify()
    else:
        assert len(fence.verify()) == 1


def test_a_changed_failure_text_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fence, "MITMPROXY_TEXTS", (("_http1", "Client went away."),))
    monkeypatch.setitem(fence.TOUCHES, "mitmproxy's failure texts (FailureKind)", (None, *fence.MITMPROXY_TEXTS))
    with pytest.raises(fence.MitmproxyChanged, match="Client went away"):
        fence.verify()


def test_a_missing_module_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(private, "_import_error", ImportError("No module named 'mitmproxy.proxy.layers.http._http1'"))
    with pytest.raises(fence.MitmproxyChanged, match="_http1"):
        fence.verify()


async def test_the_loopback_rebind_fails_loudly() -> None:
    master = types.SimpleNamespace(addons=types.SimpleNamespace(get=lambda name: object()), options=None)
    with pytest.raises(fence.MitmproxyChanged, match="loopback"):
        await fence.rebind_listeners(master)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Client disconnected.", FailureKind.CLIENT_GONE),
        ("killed", FailureKind.KILLED),
        ("[Errno 111] Connect call failed ('127.0.0.1', 9)", FailureKind.REFUSED),
        ("[Errno -2] Name or service not known", FailureKind.UNKNOWN_HOST),
        ("Certificate verify failed: self-signed certificate", FailureKind.TLS),
        ("server closed connection", FailureKind.SERVER_CLOSED),
        ("peer closed connection", FailureKind.BROKE_OFF),
        ("Response body exceeds mitmproxy's body_size_limit.", FailureKind.BODY_SIZE_LIMIT),
        ("Cannot parse HTTP response: Bad HTTP response line: b'HTTP/9'", FailureKind.BAD_STATUS_LINE),
        ("Invalid header line: b'x'", FailureKind.BAD_HEADER_LINE),
        ("unexpected server response: b'HTTP/1.1 200'", FailureKind.HEAD_CUT),
        ("HTTP/1 protocol error: HTTP trailers are not supported", FailureKind.TRAILERS),
        ("something new", FailureKind.OTHER),
        (None, FailureKind.OTHER),
    ],
)
def test_failure_kinds(message: str | None, kind: FailureKind) -> None:
    assert fence.failure_kind(message) is kind


@pytest.mark.parametrize("echo", ["Client disconnected.", "killed", "connection refused", "timed out"])
def test_an_upstream_cannot_choose_the_kind(echo: str) -> None:
    """The bytes mitmproxy quotes from the peer are not read: a hostile upstream's status line says nothing."""
    assert fence.failure_kind(f"Cannot parse HTTP response: Bad HTTP response line: b'{echo}'") is (
        FailureKind.BAD_STATUS_LINE
    )
    assert fence.failure_kind(f'unexpected server response: b"{echo}"') is FailureKind.HEAD_CUT


# -- no other module touches mitmproxy's internals -------------------------------------------------

# Attributes of mitmproxy's objects that only the fence may read or write (mitmproxy's connection
# handlers and layers); any `_private` attribute of anything the module imported from mitmproxy too.
FENCED_ATTRIBUTES = {
    "connections",
    "transports",
    "timeout_watchdog",
    "last_activity",
    "child_layer",
    "make_error_response",
    "make_body_reader",
    "trigger_event",
}
FENCED_STRINGS = {"proxyserver"}  # ctx.master.addons.get("proxyserver"): mitmproxy's connection registry


def fence_breaches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    mitmproxy_names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mitmproxy"):
            mitmproxy_names |= {alias.asname or alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            mitmproxy_names |= {
                (a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("mitmproxy")
            }
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if node.attr in FENCED_ATTRIBUTES or (
                private and isinstance(root, ast.Name) and root.id in mitmproxy_names
            ):
                found.append(f"{where}: .{node.attr}")
            if isinstance(node.ctx, ast.Store) and isinstance(root, ast.Name) and root.id in mitmproxy_names:
                found.append(f"{where}: assigns {ast.unparse(node)} (a monkeypatch)")
        elif isinstance(node, ast.Constant) and node.value in FENCED_STRINGS:
            found.append(f"{where}: {node.value!r}")
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "setattr", "delattr"):
            if (
                len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value) in FENCED_ATTRIBUTES
            ):
                found.append(f"{where}: {ast.unparse(node)}")
        elif isinstance(node, ast.Compare | ast.Call):
            text = ast.unparse(node)
            if "error.msg" in text and ("==" in text or " in " in text or "startswith" in text):
                found.append(f"{where}: mitmproxy's error text matched ({text[:80]})")
    return found


def test_no_module_but_the_fence_touches_mitmproxys_internals() -> None:
    modules = [p for p in ADDON.rglob("*.py") if FENCE not in p.parents]
    assert len(modules) > 30 and not (ADDON / "mitm_internals.py").exists()
    breaches = [breach for path in modules for breach in fence_breaches(path)]
    assert breaches == []


def test_the_scan_finds_a_breach(tmp_path: Path) -> None:
    """The scan above would see each kind of breach."""
    sample = ROOT / "addon" / "_sample_for_the_scan.py"
    sample.write_text(
        "from mitmproxy import ctx\nfrom mitmproxy.proxy.layers.http import _http1\n"
        "h = ctx.master.addons.get('proxyserver').connections\n"
        "_http1.Http1Server._handle_event = None\nx = _http1._private\n"
        "if flow.error.msg == 'Client disconnected.': pass\n"
    )
    try:
        found = "\n".join(fence_breaches(sample))
    finally:
        sample.unlink()
    for expected in ("'proxyserver'", ".connections", "a monkeypatch", "._private", "error text matched"):
        assert expected in found
    fenced = [breach for path in FENCE.rglob("*.py") for breach in fence_breaches(path)]
    assert len(fenced) > 5  # the fence itself is where they are


# -- a real mitmdump ---------------------------------------------------------------------------------

BREAK = """
from mitmproxy.proxy.layers.http import _http1
{change}
"""


@pytest.mark.e2e
def test_mitmdump_refuses_to_start_without_a_security_internal(tmp_path: Path) -> None:
    """mitmdump loads scripts while it starts its listeners: the error makes it exit at once (its errorcheck)."""
    (tmp_path / "sitecustomize.py").write_text(BREAK.format(change="del _http1.make_error_response"))
    try:
        dump = Mitmdump(tmp_path, "reverse", environment={"PYTHONPATH": str(tmp_path)})
    except RuntimeError as e:  # it exited before it listened
        log = str(e)
    else:
        dump.process.wait(20)  # (it exits by itself)
        log = dump.log()
        dump._log.close()
    assert "the proxy does not start" in log and "make_error_response" in log


@pytest.mark.e2e
def test_mitmdump_starts_with_a_feature_switched_off(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(
        BREAK.format(change="_http1.make_body_reader = lambda size: None  # another mitmproxy's")
    )
    dump = Mitmdump(tmp_path, "reverse", environment={"PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.monotonic() + 20
        while "switched off:" not in dump.log():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        log = dump.log()
        assert log.count("switched off:") == 1 and "refusing HTTP/1 trailers" in log
    finally:
        dump.stop()
