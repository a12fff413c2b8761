"""An addon with nothing to do: `mitmdump -s bench/empty_addon.py` is mitmproxy's floor for any addon.

`make bench` measures it next to plain mitmdump (row 2b): the price of loading a script whose
addon has no hook, against which the project's own per-request cost is read.
"""


class Empty:
    pass


addons = [Empty()]
