"""What the Linux guest prints about itself, read back from its console: the KTAP report of
the KUnit suites the kernel ran at boot (`kunit.enable=1`), and the trace the workload's init
prints from the guest's own kprobe_events (`kpemu_tracefs=1`, kernel_images/linux/workload/
init.c).  The command-line switches, the definitions file and the parsers live here so the
kpemu-only tests (tests/linux) and the QEMU comparison (tests/qemu) read both the same way."""

import re
from typing import NamedTuple

from kprobes.events.trace_output import parse_trace_line
from tests.linux import LINUX_DIR

KUNIT_SWITCH = "kunit.enable=1"
TRACEFS_SWITCH = "kpemu_tracefs=1"
# What init writes into the guest's kprobe_events (it is /etc/kprobe_events in the
# initramfs): one definition a line.
EVENT_DEFINITIONS = (LINUX_DIR / "workload" / "kprobe_events").read_text().splitlines()
TRACE_PREFIX = "trace: "


def cmdline_with(*switches):
    """The image's default command line with the switches added."""
    return " ".join([(LINUX_DIR / "cmdline").read_text().strip(), *switches])


def console_lines(console):
    """The console (bytes or str) as lines, without the serial line's CRs."""
    if isinstance(console, bytes):
        console = console.decode("latin-1")
    return console.replace("\r\n", "\n").split("\n")


# ---- KTAP (Documentation/dev-tools/ktap.rst), as 6.1's KUnit prints it at boot --------

class Case(NamedTuple):
    number: int
    name: str
    ok: bool
    directive: str          # "" or what follows `#` (e.g. "SKIP reason")


class Suite(NamedTuple):
    number: int
    name: str
    ok: bool
    cases: tuple
    counts: dict            # the suite's `# NAME: pass:P fail:F skip:S total:T`


class KtapReport(NamedTuple):
    suites: tuple
    totals: dict            # `# Totals: pass:P fail:F skip:S total:T`


_RESULT = re.compile(r"^(?P<not>not )?ok (?P<n>\d+) (?P<name>[^#]*?)(?: # (?P<dir>.*))?$")
_COUNTS = re.compile(r"^# (?P<name>\S+): pass:(\d+) fail:(\d+) skip:(\d+) total:(\d+)$")
_INDENT = "    "


def _counts(match):
    return dict(zip(("pass", "fail", "skip", "total"), map(int, match.groups()[1:])))


def _result(line, what):
    m = _RESULT.match(line)
    if m is None:
        raise ValueError(f"KTAP: expected {what}, got {line!r}")
    return int(m["n"]), m["name"], m["not"] is None, m["dir"] or ""


def parse_ktap(console):
    """The KTAP report in the console, read strictly: the top-level version and plan, then
    per suite its indented version, `# Subtest:`, plan, one result line per case, the
    suite's counts and its own result line, and `# Totals:` before the last suite's result.
    Raises ValueError on any other line inside the report or when there is none."""
    lines = console_lines(console)
    try:
        at = lines.index("KTAP version 1")
    except ValueError:
        raise ValueError("KTAP: no report in the console") from None
    lines = lines[at + 1:]

    def take():
        if not lines:
            raise ValueError("KTAP: the report ends early")
        return lines.pop(0)

    plan = re.fullmatch(r"1\.\.(\d+)", take())
    if plan is None:
        raise ValueError("KTAP: no plan after the version line")
    suites, totals = [], None
    for number in range(1, int(plan[1]) + 1):
        if take() != _INDENT + "KTAP version 1":
            raise ValueError(f"KTAP: suite {number} has no version line")
        sub = re.fullmatch(_INDENT + r"# Subtest: (\S+)", take())
        sub_plan = re.fullmatch(_INDENT + r"1\.\.(\d+)", take())
        if sub is None or sub_plan is None:
            raise ValueError(f"KTAP: suite {number} has no subtest name and plan")
        cases = []
        for i in range(1, int(sub_plan[1]) + 1):
            line = take()
            if not line.startswith(_INDENT):
                raise ValueError(f"KTAP: expected case {i} of {sub[1]}, got {line!r}")
            n, name, ok, directive = _result(line[len(_INDENT):], f"case {i} of {sub[1]}")
            if n != i:
                raise ValueError(f"KTAP: case {n} of {sub[1]} where {i} was due")
            cases.append(Case(n, name, ok, directive))
        counts = _COUNTS.match(take())
        if counts is None or counts["name"] != sub[1]:
            raise ValueError(f"KTAP: no counts line for {sub[1]}")
        line = take()
        m = _COUNTS.match(line)
        if m is not None and m["name"] == "Totals":
            totals = _counts(m)
            line = take()
        n, name, ok, _ = _result(line, f"the result of suite {sub[1]}")
        if (n, name) != (number, sub[1]):
            raise ValueError(f"KTAP: result {n} {name} where {number} {sub[1]} was due")
        suites.append(Suite(n, name, ok, tuple(cases), _counts(counts)))
    if totals is None:
        raise ValueError("KTAP: no '# Totals:' line")
    return KtapReport(tuple(suites), totals)


# ---- the guest's own trace (init's `trace: ` lines) -----------------------------------

class GuestTrace(NamedTuple):
    header: tuple           # the trace file's `#` lines
    lines: tuple            # TraceLine of each event, in the trace's order
    entries: int            # entries-in-buffer and entries-written of the header
    written: int


def guest_trace(console):
    """The trace init printed: each `trace: ` line without its prefix, parsed; a line that
    is neither a header line nor a probe event's raises ValueError."""
    raw = [ln[len(TRACE_PREFIX):] for ln in console_lines(console)
           if ln.startswith(TRACE_PREFIX)]
    header = tuple(ln for ln in raw if ln.startswith("#"))
    events = []
    for ln in raw:
        if ln.startswith("#"):
            continue
        t = parse_trace_line(ln)
        if t is None:
            raise ValueError(f"not a probe event's trace line: {ln!r}")
        events.append(t)
    m = next((re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", h)
              for h in header if "entries-written" in h), None)
    if m is None:
        raise ValueError("the guest's trace has no entries-in-buffer/entries-written line")
    return GuestTrace(header, tuple(events), int(m[1]), int(m[2]))


def events_of(trace):
    """The trace as events: (name, the fetched arguments' values in order), per line."""
    return [(t.event, tuple(v for _, v in t.args)) for t in trace.lines]
