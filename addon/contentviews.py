"""A mitmproxy script with only the content views, to look at saved flows later:

    mitmweb -n -r saved.flow -s addon/contentviews.py

(`addon/proxy.py` adds the same views itself; see `addon.views`.)
"""

from __future__ import annotations

import os
import sys

if __name__ != "addon.contentviews":  # loaded by mitmproxy as a script: use the `addon` package next to this file
    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _loaded = getattr(sys.modules.get("addon"), "__file__", None)
    if _loaded is None or os.path.dirname(os.path.dirname(os.path.abspath(_loaded))) != _root:
        for _name in [m for m in sys.modules if m == "addon" or m.startswith("addon.")]:
            del sys.modules[_name]
        sys.path.insert(0, _root)

from addon.views import ContentViews  # noqa: E402

addons = [ContentViews()]
