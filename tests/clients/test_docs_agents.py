"""The agents' command blocks of README.md and docs/ (Claude Code, Codex CLI, opencode) run as written, with the
client suite's pinned agents, against a real mitmdump and the fake upstream (issue 22;
harness/doc_commands.py says what is substituted). The other blocks run in tests/test_docs_commands.py.

The blocks run in the agents' usual minimal environment (harness/agents.py): `claude` and `codex` on
PATH are the pinned ones, no retries for Claude Code, and Codex's analytics and plugins are turned
off in its config file (the command line's `-c analytics.enabled=false --disable plugins`), so that
neither reaches anything but loopback. A Codex block runs in a git repository, as `codex exec` wants.
An opencode block reads the page's opencode.json (the ```json block before it) from its config directory
(`XDG_CONFIG_HOME`, as `~/.config/opencode` is a user's), with the switches that keep it on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import TEST_KEY
from harness.agents import CLAUDE, CODEX, OPENCODE, OPENCODE_ENV, quiet_plugin_install
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
    if not CLAUDE.is_file() or not CODEX.is_file() or not OPENCODE.is_file() or node is None:
        pytest.fail("Claude Code, Codex CLI or opencode is not installed: run `make clients-setup`")
    bin_dir = tmp / "agents-bin"
    bin_dir.mkdir()
    (bin_dir / "claude").symlink_to(CLAUDE)
    (bin_dir / "codex").write_text(f'#!/bin/sh\nexec "{node}" "{CODEX}" "$@"\n')
    (bin_dir / "codex").chmod(0o755)
    (bin_dir / "node").symlink_to(node)
    (bin_dir / "opencode").symlink_to(OPENCODE)
    return bin_dir


def agent_of(block: Block) -> str:
    return next(name for name in ("claude", "codex", "opencode") if f"{name} " in block.text)


def opencode_config_dir(block: Block, tmp: Path, ports: Ports, upstream_base: str) -> Path:
    """The page's opencode.json (its last ```json block before this one) in a config directory of its own."""
    text = block.page.read_text()
    before = "\n".join(text.splitlines()[: block.line - 1])
    configs = re.findall(r"^```json\n(.*?)^```", before, re.S | re.M)
    assert configs, f"{block.id}: no opencode.json block before it on its page"
    config = json.loads(substitute(configs[-1], ports, upstream_base))
    directory = tmp / "xdg-config"
    quiet_plugin_install(directory / "opencode")
    (directory / "opencode" / "opencode.json").write_text(json.dumps(config))
    return directory


def test_the_docs_have_agent_blocks() -> None:
    names = {agent_of(b) for b in AGENT_BLOCKS}
    assert names == {"claude", "codex", "opencode"}, "README.md and docs/agents.md show the agents' commands"


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
    ports = Ports(proxy.port, free_port(), free_port())
    if agent_of(block) == "opencode":
        env.update(OPENCODE_ENV, XDG_CONFIG_HOME=str(opencode_config_dir(block, tmp_path, ports, upstream.base_url)))
        upstream.fake.queue_reply("Only hello.py, from the fake upstream.")  # its first request asks for a title
    try:
        outcome = run(
            block,
            tmp_path,
            ports,
            upstream.base_url,
            env=env,
            path=[str(agents_bin(tmp_path))],
            cwd=repo,
            timeout=150,
        )
        stop_group(outcome.pgid)
        assert outcome.returncode == 0, f"{block.id} failed:\n{outcome.stderr[-3000:]}\n{outcome.stdout[-2000:]}"
        assert outcome.stdout.strip() == "Only hello.py, from the fake upstream.", outcome.stdout
        route = {"claude": "/v1/messages", "codex": "/v1/responses", "opencode": "/v1/chat/completions"}[
            agent_of(block)
        ]
        assert f"POST {route} " in proxy.log() and " → /v1/chat/completions " in proxy.log(), proxy.log()[-2000:]
        assert home.is_dir()
    finally:
        proxy.stop()
