"""A mitmproxy script loaded after addon/proxy.py: makes one function of the addon raise.

`INJECT_FAULT=module.function` (for example `guard.access.refusal`) names it, inside the `addon`
package the proxy script loaded. The hostile tests use it to check that a fault anywhere on a
request's path is answered (500 in the route's shape), never forwarded (issue 21 §3)."""

from __future__ import annotations

import importlib
import os
from typing import Any

module_name, _, function_name = os.environ["INJECT_FAULT"].rpartition(".")
module = importlib.import_module(f"addon.{module_name}")
getattr(module, function_name)  # (a name that does not exist fails the test at start)


def boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected fault")


setattr(module, function_name, boom)
