"""The README is the contract: every option and make target it promises exists, and vice versa."""

from __future__ import annotations

import re
from pathlib import Path

from addon.settings import OPTIONS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def test_every_option_is_documented() -> None:
    for name, *_ in OPTIONS:
        assert f"| `{name}` |" in README, f"option {name} is missing from the README's options table"


def test_documented_make_targets_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for target in re.findall(r"`make ([a-z-]+)", README):
        assert target in targets, f"README mentions make {target}, which the Makefile lacks"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README and "make test" in (ROOT / ".ci" / "run").read_text()
