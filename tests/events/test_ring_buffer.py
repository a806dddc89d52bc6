"""The trace ring buffer (kprobes/events/ring_buffer.py): Linux's sizes, overwrite of the
oldest page, and the counters the trace header reports."""

import pytest

from kprobes import Kprobes
from kprobes.events import KprobeEvents
from kprobes.events.ring_buffer import BUF_PAGE_SIZE, RingBuffer, event_size


def test_event_sizes_are_linuxs():
    assert [event_size(n) for n in (0, 1, 16, 24, 112, 113, 200)] == \
        [4, 8, 20, 28, 116, 124, 208]


def test_pages():
    assert RingBuffer().nr_pages == -(-1408 * 1024 // BUF_PAGE_SIZE) == 354
    assert RingBuffer(1).nr_pages == 2                  # never fewer than two
    assert RingBuffer(8).nr_pages == 3                  # 8192 / 4080, rounded up
    for bad in (0, -1, 1 << 21, 1.5, True, "8"):
        with pytest.raises(ValueError, match="buffer size must be"):
            RingBuffer(bad)


def test_the_oldest_page_goes_whole():
    rb = RingBuffer(1)                 # two pages of 4080 bytes: 170 records of 24 bytes each
    per_page = BUF_PAGE_SIZE // event_size(20)
    assert per_page == 170
    for i in range(2 * per_page):
        rb.write(i, 20)
    assert (rb.entries, rb.written, rb.overrun) == (340, 340, 0)
    rb.write(340, 20)                  # a third page is needed: the first is dropped
    assert (rb.entries, rb.written, rb.overrun) == (171, 341, 170)
    assert list(rb) == list(range(170, 341))
    rb.write("huge", BUF_PAGE_SIZE)    # larger than a page: refused, counted lost
    assert (rb.entries, rb.written, rb.overrun) == (171, 342, 171)
    rb.clear()
    assert (rb.entries, rb.written, rb.overrun, list(rb)) == (0, 0, 0, [])


def test_a_small_buffer_keeps_the_newest_records_and_counts_the_rest():
    """fib(15) hits a probe on fib 1,973 times; a 4 KiB buffer keeps the newest whole
    pages, the trace header says how many were written, the profile counts every hit."""
    from emu import Machine

    m = Machine()
    k = Kprobes(m)
    m.boot()
    ev = KprobeEvents(k, buffer_size_kb=4)
    ev.command("p:f fib n=%di:s32")
    ev.enable()
    assert m.call("fib", 15) == 610
    buf = ev.buffer
    assert buf.written == 1973 and ev.events["kprobes/f"].nhit == 1973
    # each record: 4 + 8 (trace_entry) + 8 (ip) + 4 (s32) = 24 bytes, 170 to a page; two
    # pages: a full one and the newest, with 1973 % 170 = 103
    assert (buf.nr_pages, buf.entries, buf.overrun) == (2, 170 + 103, 1973 - 273)
    lines = ev.trace().splitlines()
    assert f"# entries-in-buffer/entries-written: {buf.entries}/1973   #P:1" in lines
    records = list(buf)
    assert len(records) == buf.entries and records[-1].values == {"n": 1}   # fib(15)'s last call
    assert records[-1].clock >= records[0].clock
