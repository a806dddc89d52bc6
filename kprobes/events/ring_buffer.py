"""The trace ring buffer (like Linux's kernel/trace/ring_buffer.c in its default overwrite
mode), one per CPU: a fixed number of pages, records written one after the other into
the current page, the oldest page dropped whole when the writer needs it again.

Sizes are Linux's: buffer_size_kb (default 1408 KiB a CPU, trace_buf_size's 1441792
bytes) becomes DIV_ROUND_UP(size, BUF_PAGE_SIZE) pages of BUF_PAGE_SIZE = 4080 data bytes
(a 4 KiB page less its 16-byte header), at least two; a record takes a 4-byte event
header plus its payload rounded up to 4 bytes, and 4 bytes more for a length word when the
payload is over 112 bytes.  What the payload is (the trace entry and the event's fields)
is the caller's to say (trace_kprobe.py).  `entries` and `overrun` are what the trace
file's header and per_cpu/cpuN/stats report.

Must not import: unicorn, emu, the rest of kprobes.
"""

from collections import deque

BUF_PAGE_SIZE = 4096 - 16
DEFAULT_BUFFER_SIZE_KB = 1408
RB_EVNT_HDR_SIZE = 4
RB_MAX_SMALL_DATA = 28 * 4          # payloads up to this size keep their length in the header
RB_BUFFER_SIZE_KB_MAX = 1 << 20     # 1 GiB a CPU: a bound on what a user may ask for


def event_size(payload):
    """Bytes a record with `payload` bytes of data takes in a page."""
    data = (payload + 3) & ~3
    return RB_EVNT_HDR_SIZE + data + (4 if data > RB_MAX_SMALL_DATA else 0)


class RingBuffer:
    """One CPU's buffer of `size_kb` KiB, records dropped oldest page first.  `read`,
    when given, is what a stored record is turned into as the buffer is read (the
    caller's: a record may be stored in a cheaper form than the one it is read in).

    A C writer may add records too (kprobes/arch/x86_64/trap.c): it does what write()
    does, on the same attributes."""

    def __init__(self, size_kb=DEFAULT_BUFFER_SIZE_KB, read=None):
        if not isinstance(size_kb, int) or isinstance(size_kb, bool) or \
                not 1 <= size_kb <= RB_BUFFER_SIZE_KB_MAX:
            raise ValueError(f"buffer size must be 1..{RB_BUFFER_SIZE_KB_MAX} KiB, not "
                             f"{size_kb!r}")
        self.size_kb = size_kb
        self.read = read
        self.nr_pages = max(2, -(-size_kb * 1024 // BUF_PAGE_SIZE))
        self.pages = deque([[]])      # the oldest page first; each a list of records
        self.used = 0                 # data bytes in the newest page
        self.written = 0              # records ever written (entries-written)
        self.overrun = 0              # records lost to overwriting

    def write(self, record, payload):
        """Add `record`, whose payload is `payload` bytes; a record larger than a page
        is dropped, as Linux's ring buffer refuses it (counted as lost)."""
        size = event_size(payload)
        self.written += 1
        if size > BUF_PAGE_SIZE:
            self.overrun += 1
            return
        if self.used + size > BUF_PAGE_SIZE:
            if len(self.pages) == self.nr_pages:
                self.overrun += len(self.pages.popleft())
            self.pages.append([])
            self.used = 0
        self.pages[-1].append(record)
        self.used += size

    @property
    def entries(self):
        """Records in the buffer now (entries-in-buffer)."""
        return self.written - self.overrun

    def __iter__(self):
        read = self.read
        for page in self.pages:
            if read is None:
                yield from page
            else:
                yield from map(read, page)

    def __len__(self):
        return self.entries

    def clear(self):
        """Empty it (like writing to the trace file): the counters start again."""
        self.pages = deque([[]])
        self.used = self.written = self.overrun = 0
