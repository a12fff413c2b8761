"""Client-controlled text (a model name, a role, an origin; and through them the upstream's error
messages) in what a person reads: mitmdump's output, mitmweb's event log, the flow comment.

A model name such as `"m\\r\\n[12:00:00.000][127.0.0.1:1] client connect\\n\\x1b[2J"` would
otherwise forge log lines or drive the user's terminal. `escape` writes every control character
(C0, DEL, C1) as an escape sequence (`\\r`, `\\n`, `\\t`, `\\x1b`, `\\x85`, ...), so what is
printed is one line that shows what was sent. The addon's log line and flow comment are escaped
where they are made (`addon.exchange.summary`); the `OutputEscaper` filter on the addon's logger
escapes every other record of ours as a last resort.
"""

from __future__ import annotations

import logging
import re

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or f"\\x{ord(char):02x}"


def escape(text: str) -> str:
    """`text` with control characters written as escape sequences (unchanged when it has none)."""
    return _CONTROL.sub(_escape_one, text) if _CONTROL.search(text) else text


class OutputEscaper(logging.Filter):
    """Escapes control characters in every record of the addon's logger (`ollama_proxy`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return True
        clean = escape(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_escaper = OutputEscaper()


def install() -> None:
    logger = logging.getLogger("ollama_proxy")
    if _escaper not in logger.filters:
        logger.addFilter(_escaper)
