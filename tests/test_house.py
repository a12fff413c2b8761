"""House rules about the addon's layout: no module in addon/ over 500 lines (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from harness import ROOT

ADDON = ROOT / "addon"
MAX_LINES = 500


def too_long(paths: list[Path], root: Path = ROOT) -> dict[str, int]:
    """The modules over `MAX_LINES`, with their line counts."""
    counts = {str(path.relative_to(root)): len(path.read_text().splitlines()) for path in paths}
    return {name: count for name, count in counts.items() if count > MAX_LINES}


def test_no_module_in_addon_is_over_500_lines() -> None:
    modules = sorted(ADDON.rglob("*.py"))
    assert len(modules) > 30
    assert too_long(modules) == {}


def test_the_check_sees_a_long_module(tmp_path: Path) -> None:
    long_module, short_module = tmp_path / "long.py", tmp_path / "short.py"
    long_module.write_text('"""A sample."""\n' + "x = 1\n" * MAX_LINES)
    short_module.write_text('"""A sample."""\n' + "x = 1\n" * (MAX_LINES - 1))
    assert too_long([long_module, short_module], tmp_path) == {"long.py": MAX_LINES + 1}
