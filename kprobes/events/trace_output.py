"""Trace output, after Linux's kernel/trace/trace_output.c: the text of a trace line.

This module owns:
  * the place of a hit as a trace line prints it (seq_print_ip_sym()), for kprobe and
    kretprobe events;
  * the five flag columns (trace_print_lat_fmt()) and the line's context columns
    (trace_print_context());
  * TraceRecord, one hit as the ring buffer holds it, printed lazily;
  * the header of the `trace` file (Linux prints it from trace.c);
  * the way back: a probe event's trace line, Linux's or kpemu's, parsed into its
    columns and its arguments in order (parse_trace_line()), to compare two traces.

What an argument prints as is the type layer's (trace_probe); which events exist and what
happens at a hit is the command layer's (trace_kprobe).
Must not import: unicorn, emu, the kprobes core, kprobes.events.trace_kprobe.  Of the
events it takes only trace_probe's sprint_symbol.
"""

import re
from typing import NamedTuple

from kprobes.events.trace_probe import print_probe_args, sprint_symbol

# What kretprobed() prints instead of the trampoline's name.
KRETPROBE_MSG = "[unknown/kretprobe'd]"


def _seq_print_sym(symbols, addr, offset, trampoline=None):
    """seq_print_ip_sym(): `0` for a null ip; with offset `sym+0x../0x..`, else the name;
    outside any symbol `0x...` (with offset) or `0x%08lx` (without)."""
    if not addr:
        return "0"
    if trampoline is not None and addr == trampoline:
        return KRETPROBE_MSG
    if offset:
        return sprint_symbol(symbols, addr)
    if symbols is not None:
        sym = symbols.symbol_at(addr)
        if sym is not None:
            return sym.name
    return f"0x{addr:08x}"


def format_probe_ip(symbols, ip, trampoline=None):
    """The parenthesis of a kprobe event line: `sym+0xoff/0xsize`."""
    return _seq_print_sym(symbols, ip, True, trampoline)


def format_retprobe_ip(symbols, ret_ip, func, trampoline=None):
    """The parenthesis of a kretprobe event line: `caller+0xoff/0xsize <- func`."""
    return (f"{_seq_print_sym(symbols, ret_ip, True, trampoline)} <- "
            f"{_seq_print_sym(symbols, func, False, trampoline)}")


def irq_flags(irqs_off=False, need_resched=False, hardirq=False, softirq=False, nmi=False,
              preempt_count=0):
    """The five flag columns (trace_print_lat_fmt()): irqs-off, need-resched,
    hardirq/softirq, preempt depth, migrate-disable depth (preempt_count bits 4-7)."""
    hs = ("Z" if nmi and hardirq else "z" if nmi else "H" if hardirq and softirq
          else "h" if hardirq else "s" if softirq else ".")
    low, high = preempt_count & 0xF, (preempt_count >> 4) & 0xF
    return ("d" if irqs_off else ".") + ("N" if need_resched else ".") + hs + \
        (f"{low:x}" if low else ".") + (f"{high:x}" if high else ".")


def format_trace_line(comm, pid, cpu, flags, clock, event, ip_text, args_text=""):
    """One line of `trace`: `%16s-%-7d [%03d] FLAGS %5lu.%06lu: EVENT: (IP) ARGS`.

    `clock` is kpemu's instruction count taken as nanoseconds; like ns2usecs() it is
    rounded to the nearest microsecond.  `flags` is the five-column string (irq_flags())."""
    usecs = (clock + 500) // 1000
    secs, usec = divmod(usecs, 1_000_000)
    return (f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {secs:5d}.{usec:06d}: "
            f"{event}: ({ip_text}){args_text}")


class TraceRecord:
    """One hit, as the ring buffer holds it: what was read at the hit (comm, pid, flags,
    clock, the arguments' raw values), printed only when read -- `text()`, `args_text`
    and `values` (the arguments typed, as JSON has them) format on demand, each in the
    form asked for and nothing else, as Linux's trace output formats a record at read
    time.  `args` are the event's fetch arguments (trace_probe), `raw` their values at
    the hit."""

    __slots__ = ("comm", "pid", "flags", "clock", "event", "ip_text", "args", "raw",
                 "symbols")

    def __init__(self, comm, pid, flags, clock, event, ip_text, args=(), raw=(),
                 symbols=None):
        self.comm = comm
        self.pid = pid
        self.flags = flags
        self.clock = clock
        self.event = event
        self.ip_text = ip_text
        self.args = args
        self.raw = raw
        self.symbols = symbols

    @property
    def args_text(self):
        """The ` name=value ...` tail of the trace line."""
        return print_probe_args(self.args, self.raw, self.symbols)

    @property
    def values(self):
        """The arguments by name, typed (json_value)."""
        return {a.name: a.json_value(v, self.symbols) for a, v in zip(self.args, self.raw)}

    def text(self):
        return format_trace_line(self.comm, self.pid, 0, self.flags, self.clock, self.event,
                                 self.ip_text, self.args_text)

    def as_json(self):
        """The record for JSON: `args` typed (numbers as numbers, strings as strings, a
        fault as null); `clock` the instruction count, `timestamp` as the trace prints it."""
        return {"comm": self.comm, "pid": self.pid, "cpu": 0, "flags": self.flags,
                "clock": self.clock, "timestamp": timestamp(self.clock),
                "event": self.event, "where": self.ip_text, "args": self.values}

    def __repr__(self):
        return f"<TraceRecord {self.text().strip()}>"


def timestamp(clock):
    """The trace's `SECS.USECS` for an instruction count taken as nanoseconds."""
    secs, usec = divmod((clock + 500) // 1000, 1_000_000)
    return f"{secs}.{usec:06d}"


def trace_header(entries, written=None):
    """The lines the `trace` file starts with, for a buffer holding `entries` records of
    the `written` ever written on one CPU (the nop tracer's header with the irq-info
    columns explained)."""
    written = entries if written is None else written
    return ["# tracer: nop", "#",
            f"# entries-in-buffer/entries-written: {entries}/{written}   #P:1", "#",
            "#                                _-----=> irqs-off/BH-disabled",
            "#                               / _----=> need-resched",
            "#                              | / _---=> hardirq/softirq",
            "#                              || / _--=> preempt-depth",
            "#                              ||| / _-=> migrate-disable",
            "#                              |||| /     delay",
            "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
            "#              | |         |   |||||     |         |"]


# `%16s-%-7d [%03d] FLAGS TIMESTAMP: EVENT: (IP)ARGS`: a comm may hold spaces and dashes,
# so the pid is the last `-digits` before the CPU column; the timestamp is `secs.usecs`
# for a clock in nanoseconds, a bare count for the "counter" clock.
_TRACE_LINE = re.compile(r"^\s*(?P<comm>.*)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+"
                         r"(?P<flags>\S{5})\s+(?P<timestamp>\d+(?:\.\d+)?): "
                         r"(?P<event>[^:\s]+): \((?P<ip>[^)]*)\)(?P<args>.*)$")
# One ` name=value`; a string value prints in quotes with nothing escaped inside, so it
# ends at the quote that the next ` name=` or the end of the line follows.
_TRACE_ARG = re.compile(r' (?P<name>[A-Za-z_][A-Za-z0-9_]*)='
                        r'(?P<value>"(?:.*?)"(?= [A-Za-z_][A-Za-z0-9_]*=|$)|[^ ]*)')


class TraceLine(NamedTuple):
    """One probe event's line of a `trace` file, its columns as text; `args` the
    (name, value) pairs in the order printed, a string's value without its quotes."""
    comm: str
    pid: int
    cpu: int
    flags: str
    timestamp: str
    event: str
    ip_text: str
    args: tuple


def parse_trace_line(line):
    """TraceLine of a probe event's trace line (format_trace_line()'s or Linux's own), or
    None for a header line (`#`) or one that is not a probe event's."""
    m = _TRACE_LINE.match(line.rstrip("\r\n"))
    if m is None or line.lstrip().startswith("#"):
        return None
    rest, args, at = m["args"], [], 0
    while at < len(rest):
        a = _TRACE_ARG.match(rest, at)
        if a is None:
            return None
        value = a["value"]
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        args.append((a["name"], value))
        at = a.end()
    return TraceLine(m["comm"].strip(), int(m["pid"]), int(m["cpu"]), m["flags"],
                     m["timestamp"], m["event"], m["ip"], tuple(args))
