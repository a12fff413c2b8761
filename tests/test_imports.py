"""The addon's own imports: all at the top of a module, and no cycle among them.

An import of the addon's own modules inside a function hides a cycle (it runs once the cycle's
other module has loaded) and costs a lookup on every call; `if TYPE_CHECKING:` imports are for
readers and type checkers only and do not count. Read from the source with `ast`, as it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

ADDON = Path(__file__).resolve().parent.parent / "addon"


def module_name(path: Path) -> str:
    parts = path.relative_to(ADDON.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def addon_imports(node: ast.AST, module: str) -> list[tuple[str, int]]:
    """The addon modules an import statement names (`from addon.x import y` may name the module `addon.x.y`)."""
    if isinstance(node, ast.Import):
        return [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "addon"]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package
            package = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
            base = ".".join([*package, base] if base else package)
        if base.split(".")[0] != "addon":
            return []
        return [(base, node.lineno)] + [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return []


def top_level_imports(tree: ast.Module, module: str) -> list[tuple[str, int]]:
    """The run-time imports at a module's top (those under `if TYPE_CHECKING:` left out)."""
    out: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Try | ast.If | ast.With):
            for child in ast.walk(node):
                out += addon_imports(child, module)
        out += addon_imports(node, module)
    return out


def sources() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(ADDON.rglob("*.py"))}


def inner_imports(tree: ast.Module, module: str) -> list[int]:
    """The lines of imports of the addon's own modules below a module's top (in functions, classes);
    one in a top-level `try` or `with` (run as the module loads: `contextlib.suppress(ImportError)`) is at the top."""
    top = {id(n) for n in tree.body} | {
        id(child)
        for node in tree.body
        if isinstance(node, ast.Try | ast.With)
        for child in node.body
        if isinstance(child, ast.Import | ast.ImportFrom)
    }
    type_checking = {
        id(child)
        for node in tree.body
        if isinstance(node, ast.If) and _is_type_checking(node)
        for child in ast.walk(node)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if id(node) not in top
        and id(node) not in type_checking
        and isinstance(node, ast.Import | ast.ImportFrom)
        and addon_imports(node, module)
    ]


def test_the_addons_own_modules_are_imported_at_the_top() -> None:
    found = [f"{module}:{line}" for module, tree in sources().items() for line in inner_imports(tree, module)]
    assert found == [], f"imports of the addon's own modules inside functions or classes: {found}"


def test_no_import_cycle_among_the_addons_modules() -> None:
    trees = sources()
    graph = {
        module: sorted({name for name, _ in top_level_imports(tree, module) if name in trees and name != module})
        for module, tree in trees.items()
    }
    # A package's __init__ imported on the way to its module is no edge of the module's own.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if module.startswith(f"{target}."):  # a module importing its own package (its __init__)
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if state.get(target) is None and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in graph:
        if state.get(module) is None and (cycle := visit(module)):
            raise AssertionError(f"an import cycle: {' → '.join(cycle)}")


def test_the_checks_see_what_they_look_for() -> None:
    """An import inside a function is found, one under TYPE_CHECKING or of another package is not."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import json\n"
        "from addon.wire import sse\n"
        "if TYPE_CHECKING:\n    from addon.exchange import Exchange\n"
        "def f():\n    import os\n    from addon.reply import Answer\n    return Answer\n"
    )
    assert inner_imports(tree, "addon.x") == [8]
    assert [name for name, _ in top_level_imports(tree, "addon.x")] == ["addon.wire", "addon.wire.sse"]
