"""Plain mitmdump with this project's fast hook dispatch and nothing else (row 2c of `make bench`).

`addon/dispatch.py` makes mitmproxy deliver each hook only to the addons that have it. The addon
installs it by default (option `fast_hook_dispatch`), so this row is the floor the addon's own
per-request cost is read against on equal terms; row 3c is the addon with mitmproxy's dispatch.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon import dispatch


class FastDispatch:
    def running(self) -> None:
        if not dispatch.install(True):
            raise RuntimeError("the fast hook dispatch could not be installed over this mitmproxy")

    def done(self) -> None:
        dispatch.uninstall()


addons = [FastDispatch()]
