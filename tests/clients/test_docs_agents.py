"""The agents' command blocks of README.md and docs/ (Claude Code, Codex CLI) run as written, with the
client suite's pinned agents, against a real mitmdump and the fake upstream (issue 22;
harness/doc_commands.py says what is substituted). The other blocks run in tests/test_docs_commands.py.

The blocks run in the agents' usual minimal environment (harness/agents.py): `claude` and `codex` on
PATH are the pinned ones, no retries for Claude Code, and Codex's analytics and plugins are turned
off in its config file (the command line's `-c analytics.enabled=false --disable plugins`), so that
neither reaches anything but loopback. A Codex block runs in a git repository, as `codex exec` wants.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness import TEST_KEY
from harness.agents import CLAUDE, CODEX
from harness.doc_commands import Block, Ports, blocks, free_port, run, stop_group, substitute
from harness.mitmdump import Mitmdump
from harness.upstream import UpstreamServer

AGENT_BLOCKS = [b for b in blocks() if b.agent and b.not_run is None]
CODEX_CONFIG = """[analytics]
enabled = false

[features]
plugins = false
"""


def agents_bin(tmp: Path) -> Path:
    node = shutil.which("node")
    if not CLAUDE.is_file() or not CODEX.is_file() or node is None:
        pytest.fail("Claude Code or Codex CLI is not installed: run `make clients-setup`")
    bin_dir = tmp / "agents-bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(CLAUDE)
    (bin_dir / "codex").write_text(f'#!/bin/sh\nexec "{node}" "{CODEX}" "$@"\n')
    (bin_dir / "codex").chmod(0o755)
    (bin_dir / "node").symlink_to(node)
    return bin_dir


def test_the_docs_have_agent_blocks() -> None:
    names = {"claude" if "claude " in b.text else "codex" for b in AGENT_BLOCKS}
    assert names == {"claude", "codex"}, "README.md and docs/agents.md show both agents' commands"


@pytest.mark.parametrize("block", AGENT_BLOCKS, ids=[b.id for b in AGENT_BLOCKS])
def test_agent_block_runs_as_written(block: Block, upstream: UpstreamServer, tmp_path: Path) -> None:
    settings = [f"openai_base_url={upstream.base_url}", f"openai_api_key={TEST_KEY}", "flow_detail=1"]
    if block.catalog is not None:  # the page's models.toml, as `make run ARGS="--set model_catalog=models.toml"`
        (tmp_path / "models.toml").write_text(substitute(block.catalog, Ports(0, 0, 0), upstream.base_url))
        settings.append(f"model_catalog={tmp_path / 'models.toml'}")
    proxy = Mitmdump(tmp_path, "reverse", *settings)
    repo = tmp_path / "repo"  # where the user runs the agent: a git repository with a file in it
    repo.mkdir()
    (repo / "hello.py").write_text('print("hello")\n')
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    home = tmp_path / "home"  # run() makes it; Codex reads its config from CODEX_HOME
    env = {
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
        "CODEX_HOME": str(tmp_path / "codex-home"),
    }
    (tmp_path / "codex-home").mkdir()
    (tmp_path / "codex-home" / "config.toml").write_text(CODEX_CONFIG)
    upstream.fake.queue_reply("Only hello.py, from the fake upstream.")
    try:
        outcome = run(
            block,
            tmp_path,
            Ports(proxy.port, free_port(), free_port()),
            upstream.base_url,
            env=env,
            path=[str(agents_bin(tmp_path))],
            cwd=repo,
            timeout=150,
        )
        stop_group(outcome.pgid)
        assert outcome.returncode == 0, f"{block.id} failed:\n{outcome.stderr[-3000:]}\n{outcome.stdout[-2000:]}"
        assert outcome.stdout.strip() == "Only hello.py, from the fake upstream.", outcome.stdout
        route = "/v1/messages" if "claude " in block.text else "/v1/responses"
        assert f"POST {route} " in proxy.log() and " → /v1/chat/completions " in proxy.log(), proxy.log()[-2000:]
        assert home.is_dir()
    finally:
        proxy.stop()
