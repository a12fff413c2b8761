"""The README is the contract, and docs/ its reference: every option and make target they promise
exists, every option is in docs/options.md, and every page the README's map names is there."""

from __future__ import annotations

import re
from pathlib import Path

from addon.accounting import METRICS_OPTIONS
from addon.pool import POOL_OPTIONS
from addon.settings import OPTIONS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
OPTIONS_DOC = DOCS["options.md"]
README_LINES = 350  # the newcomer's page, read to the end (issue 22)


def test_every_option_is_documented() -> None:
    for name, *_ in [*OPTIONS, *METRICS_OPTIONS]:
        assert f"| `{name}` |" in OPTIONS_DOC, f"option {name} is missing from docs/options.md's table"


def test_every_documented_option_exists() -> None:
    names = {name for name, *_ in [*OPTIONS, *POOL_OPTIONS, *METRICS_OPTIONS]}
    for row in re.findall(r"^\| `([a-z_]+)` \|", OPTIONS_DOC, re.M):
        assert row in names, f"docs/options.md documents {row}, which the addon does not have"


def test_documented_make_targets_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for name, text in [("README.md", README), *((f"docs/{n}", t) for n, t in DOCS.items())]:
        for target in re.findall(r"`make ([a-z-]+)", text):
            assert target in targets, f"{name} mentions make {target}, which the Makefile lacks"


def test_every_make_target_is_in_the_readme() -> None:
    phony = re.search(r"^\.PHONY: (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert phony is not None
    for target in phony.group(1).split():
        assert f"`make {target}`" in README, f"make {target} is missing from README's list of make targets"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in README and "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_is_read_to_the_end() -> None:
    assert len(README.splitlines()) <= README_LINES, (
        f"README.md is longer than {README_LINES} lines: move reference to docs/"
    )


def test_links_to_files_and_sections_resolve() -> None:
    """Every relative link of README.md and docs/*.md names a file that exists, and a section of it that exists."""

    def anchors(text: str) -> set[str]:
        heads = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in heads}

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            assert path.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path.read_text()), f"{page.name} links to {target}: no such section"
