"""The guest side of the guest-vs-host differential: with kpemu_tracefs=1 on the command
line the workload's init traces the workload with Linux's own kprobe_events (the definitions
of kernel_images/linux/workload/kprobe_events, the "counter" trace clock) and prints the
trace; the host reads it back into events.  The workload itself prints what it prints
without the switch (the pids too); every hit is here exactly, in order.

What the trace shows is Linux's own behaviour: the probes hit through int3 run in the
kernel's int3 (NMI-like) context, `d.Z..`; once Linux's optimizer has turned a probe into a
jump (CONFIG_OPTPROBES, a few ticks after registration) its later hits show `.....`;
return probes run from Linux's rethook trampoline, `.....`.  musl writes stdout with
writev(), so the console lines are not vfs_write() hits."""

import pytest

from emu import Machine
from tests.linux import LINUX_IMAGE
from tests.linux.guest import (EVENT_DEFINITIONS, TRACE_PREFIX, TRACEFS_SWITCH, cmdline_with,
                               console_lines, events_of, guest_trace)
from tests.linux.test_linux_boot import WORKLOAD

pytestmark = pytest.mark.slow

FORK = "__do_sys_fork+0x2e/0x32 <- kernel_clone"
OPEN = "do_sys_openat2+0x0/0xc3"
OPEN_RET = "do_sys_open+0x2b/0x2d <- do_sys_openat2"
WRITE = "vfs_write+0x0/0x15d"
INT3, PLAIN = "d.Z..", "....."
# (task, flags, counter, event, where, arguments) of every line of the guest's trace.
GUEST_TRACE = [
    ("init-1", PLAIN, 2, "clone", FORK, (("ret", "14"),)),
    ("fsops-14", INT3, 3, "op", OPEN, (("dfd", "-100"), ("path", "/tmp/work/note.txt"))),
    ("fsops-14", PLAIN, 4, "openret", OPEN_RET, (("ret", "3"),)),
    ("fsops-14", INT3, 5, "write", WRITE, (("count", "17"), ("comm", "fsops"))),
    ("fsops-14", INT3, 6, "op", OPEN, (("dfd", "-100"), ("path", "/tmp/work/note.txt"))),
    ("fsops-14", PLAIN, 7, "openret", OPEN_RET, (("ret", "3"),)),
    ("fsops-14", INT3, 8, "op", OPEN, (("dfd", "-100"), ("path", "/proc/self/stat"))),
    ("fsops-14", PLAIN, 9, "openret", OPEN_RET, (("ret", "3"),)),
    ("init-1", PLAIN, 10, "clone", FORK, (("ret", "15"),)),
    ("forkexec-15", PLAIN, 11, "clone", FORK, (("ret", "16"),)),
    ("init-1", PLAIN, 12, "clone", FORK, (("ret", "17"),)),
    ("pipes-17", PLAIN, 13, "clone", FORK, (("ret", "18"),)),
] + [
    ("pipes-18", INT3, n, "write", WRITE, (("count", "19"), ("comm", "pipes")))
    for n in range(14, 19)
] + [
    ("init-1", PLAIN, 19, "clone", FORK, (("ret", "19"),)),
    ("init-1", PLAIN, 20, "clone", FORK, (("ret", "20"),)),
    ("init-1", PLAIN, 21, "op", OPEN,
     (("dfd", "-100"), ("path", "/sys/kernel/tracing/events/kprobes/enable"))),
    ("init-1", PLAIN, 22, "openret", OPEN_RET, (("ret", "3"),)),
    ("init-1", PLAIN, 23, "write", WRITE, (("count", "1"), ("comm", "init"))),
]
# What init adds around the workload's lines when it traces.
TRACING_START = [
    "init: mount tracefs on /sys/kernel/tracing: ok", "init: read /etc/kprobe_events: ok",
    "init: write them to kprobe_events: ok", "init: trace clock counter: ok",
    "init: enable the kprobe events: ok"]
TRACING_END = ["init: disable the kprobe events: ok", "init: open the trace: ok"]


@pytest.fixture(scope="module")
def traced():
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(TRACEFS_SWITCH))
    return m, m.run()


def test_the_definitions_are_the_issues(traced):
    assert EVENT_DEFINITIONS[0] == "p:op do_sys_openat2 dfd=%di:s32 path=+0(%si):ustring"
    assert "r:clone kernel_clone ret=$retval:s64" in EVENT_DEFINITIONS


def test_every_hit_of_the_guests_own_trace(traced):
    m, result = traced
    assert (result.reason, result.exit_code) == ("halt", 0)
    trace = guest_trace(m.console)
    assert (trace.entries, trace.written) == (len(GUEST_TRACE), len(GUEST_TRACE))
    assert [(f"{t.comm}-{t.pid}", t.flags, int(t.timestamp), t.event, t.ip_text, t.args)
            for t in trace.lines] == GUEST_TRACE
    assert trace.header[0] == "# tracer: nop" and len(trace.header) == 12


def test_events_with_their_arguments_in_order(traced):
    events = events_of(guest_trace(traced[0].console))
    assert [e for e in events if e[0] == "clone"] == \
        [("clone", (str(pid),)) for pid in range(14, 21)]
    assert [e for e in events if e[0] == "op"] == [
        ("op", ("-100", "/tmp/work/note.txt")), ("op", ("-100", "/tmp/work/note.txt")),
        ("op", ("-100", "/proc/self/stat")),
        ("op", ("-100", "/sys/kernel/tracing/events/kprobes/enable"))]
    assert {name for name, _ in events} == {"op", "openret", "clone", "write"}


def test_the_workload_prints_what_it_prints_untraced(traced):
    """Tracing starts after the workload's mounts and the trace prints after its last
    program: take init's own lines out, and the workload's console is the untraced one."""
    lines = console_lines(traced[0].console)
    ours = [ln for ln in lines if not ln.startswith(TRACE_PREFIX)]
    start = ours.index("Run /init as init process")
    at = ours.index(TRACING_START[0])
    assert ours[at - 1] == "init: mount tmpfs on /tmp: ok"
    assert ours[at:at + len(TRACING_START)] == TRACING_START
    end = ours.index(TRACING_END[0])
    assert ours[end - 1] == "init: /bin/sleeper exited with 0"
    assert ours[end:end + 3] == TRACING_END + [f"init: {len(GUEST_TRACE) + 12} lines of trace"]
    untraced = ours[start:at] + ours[at + len(TRACING_START):end] + ours[end + 3:]
    assert "\n".join(untraced) == WORKLOAD
