"""`mitmdump -s /path/to/addon/proxy.py` runs the addon of that path, whatever is installed.

mitmproxy loads the script as `__mitmproxy_script__.proxy`, so the script must bind `addon` to
its own directory itself: with a mitmproxy that has no install of this project (pipx, a user's
venv) and with one that has an editable install of another checkout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from harness import ROOT
from harness.mitmdump import Mitmdump, free_port

pytestmark = pytest.mark.e2e


def version_of(dump: Mitmdump) -> str:
    with urllib.request.urlopen(f"{dump.url}/api/version", timeout=10) as answer:
        return json.load(answer)["version"]


def test_runs_with_a_mitmproxy_that_has_no_install_of_the_project(tmp_path: Path) -> None:
    # A venv that sees the runtime dependencies but not the project: its site-packages is added by
    # a path line, which does not run the editable install's own .pth/finder files found there.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run(
        [venv / "bin" / "python", "-c", "import addon"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "No module named 'addon'" in probe.stderr, "the venv must not see the project"
    launcher = tmp_path / "mitmdump"
    launcher.write_text(f"#!{venv / 'bin' / 'python'}\nfrom mitmproxy.tools.main import mitmdump\nmitmdump()\n")
    launcher.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dump = Mitmdump(elsewhere, "reverse", program=launcher, port=free_port())
    try:
        assert version_of(dump)
    finally:
        dump.stop()


def test_a_second_checkout_runs_its_own_code(tmp_path: Path) -> None:
    # The project venv has an editable install of ROOT; a copy of the addon elsewhere must still run itself.
    other = tmp_path / "other-checkout"
    shutil.copytree(ROOT / "addon", other / "addon", ignore=shutil.ignore_patterns("__pycache__"))
    options = other / "addon" / "settings.py"
    options.write_text(options.read_text().replace('DEFAULT_OLLAMA_VERSION = "', 'DEFAULT_OLLAMA_VERSION = "9', 1))
    dump = Mitmdump(tmp_path, "reverse", script=other / "addon" / "proxy.py")
    try:
        assert version_of(dump).startswith("9")
    finally:
        dump.stop()
