"""Issue 21 §4: the byte-exact relays frame SSE lines whatever their line ends.

A stream whose lines end with CR alone is valid SSE. The /v1 relay passes it on line by line as
it comes (it used to hold everything after the last LF: the whole stream, +401 MB for 200 MB) and
applies `sse_event_limit` to it as to LF streams. Memory is VmHWM from /proc, CPU from /proc.
"""

from __future__ import annotations

import pytest

from hostile.evil import CR_ONLY_BYTES, MB, EvilUpstream
from hostile.test_upstream_limits import last_error, streamed_with_budget
from hostile.tools import peak_rss_mb, reset_peak

pytestmark = [pytest.mark.e2e, pytest.mark.hostile_heavy]


def test_a_cr_only_stream_is_relayed_as_it_comes_with_bounded_memory(start, evil: EvilUpstream) -> None:
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got, spent = streamed_with_budget(dump, "/v1/chat/completions", "cr-only", budget=40)
    growth = peak_rss_mb(pid) - before
    assert got.status == 200 and got.complete, got
    assert got.length > CR_ONLY_BYTES * 0.99, "the whole stream was relayed"
    assert bytes(got.last).endswith(b"data: [DONE]\r\r"), got
    assert b"\n" not in bytes(got.first) and b"\n" not in bytes(got.last), "byte for byte: no line end rewritten"
    assert growth < 48, f"peak RSS grew by {growth:.0f} MB relaying {CR_ONLY_BYTES // MB} MB"
    assert spent < 40


def test_cr_only_lines_without_a_blank_line_are_cut_at_the_event_limit(start, evil: EvilUpstream) -> None:
    dump = start()
    pid = dump.process.pid
    reset_peak(pid)
    before = peak_rss_mb(pid)
    got, spent = streamed_with_budget(dump, "/v1/chat/completions", "cr-no-blank", budget=20)
    growth = peak_rss_mb(pid) - before
    assert "sse_event_limit" in last_error(got), got
    assert got.length < 24 * MB, got
    assert growth < 16 + 48, f"peak RSS grew by {growth:.0f} MB"
    assert spent < 20
