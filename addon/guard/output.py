"""Client-controlled text (a model name, a role, an origin; and through them the upstream's error
messages) in what a person reads: mitmdump's output, mitmweb's event log, the flow comment.

A model name such as `"m\\r\\n[12:00:00.000][127.0.0.1:1] client connect\\n\\x1b[2J"` would
otherwise forge log lines or drive the user's terminal; `"\\u202e"` would reverse what follows it,
`"\\u2028"` break the line in some viewers, a lone surrogate (`"\\ud800"`, valid JSON) make the
terminal printer raise, and a 16 MB name print 16 MB per line. So:

- `escape` writes every character a person cannot see as what it is as an escape sequence: the
  Unicode categories Cc (C0, DEL, C1), Cf (bidi controls, zero-width and invisible characters),
  Zl and Zp (line and paragraph separators), Cs (surrogates), Co (private use) and Cn (unassigned
  in this Python's Unicode database), as `\\r`, `\\n`, `\\t`, `\\x1b`, `\\u202e`, `\\U000e0001`.
  What is printed is one line of visible characters that shows what was sent, and encodes as UTF-8.
- `clip` cuts a client value to `MAX_VALUE` characters with a marker naming what was cut;
  `shown` does both (the log line and the flow comment: `addon.exchange.summary`).
- The `OutputEscaper` filter on the addon's loggers clips every record of ours to `MAX_RECORD`
  characters and escapes it, as a last resort.
- Logging never decides a request: the addon's loggers are `SafeLogger`s, whose `handle` swallows
  what a handler raises, and `install` makes the process's stdout and stderr write what they
  cannot encode as escapes rather than raise (mitmproxy's terminal printer and dumper print there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import unicodedata

MAX_VALUE = 256  # characters of one client value (a model name) in a log line or comment
MAX_RECORD = 4096  # characters of one record of the addon's loggers

UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
LOGGER_NAMES = ("ollama_proxy", "ollama_proxy.flows")

_NAMED = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}
_SUSPECT = re.compile(r"[^\x20-\x7e]")  # only these are looked up in the Unicode database


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if unicodedata.category(char) not in UNSEEN_CATEGORIES:
        return char
    if named := _NAMED.get(char):
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` with every unseen character written as an escape sequence (unchanged when it has none)."""
    return _SUSPECT.sub(_escape_one, text) if _SUSPECT.search(text) else text


def clip(text: str, limit: int = MAX_VALUE) -> str:
    """`text` cut to `limit` characters, with a marker saying how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…[{len(text) - limit} more characters]"


def shown(text: str, limit: int = MAX_VALUE) -> str:
    """A client value as a person may read it: clipped, then escaped."""
    return escape(clip(text, limit))


class OutputEscaper(logging.Filter):
    """Clips and escapes every record of the addon's loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report, not ours
            return True
        clean = escape(clip(message, MAX_RECORD))
        if clean != message:
            record.msg, record.args = clean, None
        return True


class SafeLogger(logging.Logger):
    """A logger whose records can never raise into the code that logs them (a request's decision)."""

    def handle(self, record: logging.LogRecord) -> None:
        try:
            super().handle(record)
        except Exception:  # noqa: BLE001 - a log line lost is better than a request decided by it
            with contextlib.suppress(Exception):
                sys.__stderr__.write(f"ollama_proxy: a log record could not be written ({record.levelname})\n")  # type: ignore[union-attr]


_escaper = OutputEscaper()


def install() -> None:
    """The addon's loggers escape, clip and never raise; stdout and stderr never raise on what they cannot encode."""
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        if type(logger) is logging.Logger:
            logger.__class__ = SafeLogger  # (the modules hold the objects getLogger gave them at import)
        if _escaper not in logger.filters:
            logger.addFilter(_escaper)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors not in ("backslashreplace", "surrogateescape"):
            with contextlib.suppress(ValueError, io.UnsupportedOperation):
                stream.reconfigure(errors="backslashreplace")
