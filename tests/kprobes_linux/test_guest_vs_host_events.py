"""Linux's own kprobe_events against kpemu's, on the workload: the guest traces it from
inside (kpemu_tracefs=1, the definitions of kernel_images/linux/workload/kprobe_events),
kpemu traces the same definitions from outside, and per event the hits and every fetched
argument, in order, are the same -- two independent implementations of one spec.

The comparison is made across two runs of the same workload, not in one: at one address
the two implementations refuse each other's int3, so they cannot both probe it at once.
Linux's __copy_instruction() (arch/x86/kernel/kprobes/core.c) will not probe over an int3
it did not write ("another subsystem puts a breakpoint"), so with kpemu's probes armed the
guest's write to kprobe_events fails with EINVAL; kpemu's register_kprobe refuses an int3
that is not its own with EINVAL too.  Both refusals are checked here: they are the rule
for two int3s at one address as it stands, and they are why the runs are two."""

import errno

import pytest

from emu import Machine
from kprobes import Kprobe, KprobeError, Kprobes
from kprobes.events import KprobeEvents
from kprobes.events.trace_output import parse_trace_line
from tests.linux import LINUX_IMAGE
from tests.linux.guest import (EVENT_DEFINITIONS, TRACEFS_SWITCH, cmdline_with,
                               console_lines, events_of, guest_trace)
from tests.linux.test_linux_guest_trace import GUEST_TRACE

pytestmark = pytest.mark.slow

GUEST_ENABLED = "init: enable the kprobe events: ok"
# The guest's trace ends with init's own disabling of its events: it opens the enable
# file and writes "0" (Linux records the hits of the write that turns the events off).
INITS_DISABLING = [("op", ("-100", "/sys/kernel/tracing/events/kprobes/enable")),
                   ("openret", ("3",)), ("write", ("1", "init"))]
PROBED = ("do_sys_openat2", "kernel_clone", "vfs_write")


def host_events(events):
    """kpemu's records as events: (name, argument values in order), read back from the
    trace lines kpemu prints, with the same parser as the guest's."""
    return [(t.event, tuple(v for _, v in t.args))
            for t in map(parse_trace_line, events.trace_lines())]


def hits(evts):
    counts = {}
    for name, _ in evts:
        counts[name] = counts.get(name, 0) + 1
    return counts


@pytest.fixture(scope="module")
def guest_run():
    """The guest traces the workload; once its events are enabled, kpemu tries to probe
    the same functions (and is refused), then the run goes on to power-off."""
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(TRACEFS_SWITCH))
    m.boot()
    while GUEST_ENABLED not in m.console:
        assert m.run(max_insns=20_000).reason == "limit"
    k = Kprobes(m)
    refusals = {}
    for name in PROBED:
        with pytest.raises(KprobeError) as exc:
            k.register_kprobe(Kprobe(symbol_name=name))
        refusals[name] = (exc.value.errno, str(exc.value))
    result = m.run()
    return m, result, refusals


@pytest.fixture(scope="module")
def host_run(linux_booted):
    """kpemu traces the same definitions on the untraced workload (the default command
    line: the guest's own events off)."""
    m, snap = linux_booted
    m.restore(snap)
    events = KprobeEvents(Kprobes(m))
    for definition in EVENT_DEFINITIONS:
        events.write(definition)
    events.enable()
    result = m.run()
    out = m, result, host_events(events), m.console
    m.restore(snap)
    return out


def test_every_event_the_same_hits_and_arguments_in_order(guest_run, host_run):
    guest = events_of(guest_trace(guest_run[0].console))
    host = host_run[2]
    assert guest[-len(INITS_DISABLING):] == INITS_DISABLING
    workload = guest[:-len(INITS_DISABLING)]
    assert host == workload
    assert hits(host) == {"clone": 7, "op": 3, "openret": 3, "write": 6}
    for name in ("op", "openret", "clone", "write"):      # per event, in order
        assert [a for n, a in host if n == name] == [a for n, a in workload if n == name]


def test_both_runs_run_the_workload_alike(guest_run, host_run, linux_reference):
    m, result, _ = guest_run
    assert (result.reason, result.exit_code) == ("halt", 0)
    assert [(f"{t.comm}-{t.pid}", t.flags, int(t.timestamp), t.event, t.ip_text, t.args)
            for t in guest_trace(m.console).lines] == GUEST_TRACE
    _, host_result, _, host_console = host_run
    assert host_result.exit_code == 0 and host_console == linux_reference["console"]


def test_kpemu_refuses_to_probe_over_linuxs_int3(guest_run):
    m, _, refusals = guest_run
    for name in PROBED:
        code, text = refusals[name]
        assert code == errno.EINVAL
        _, _, size = m.symbols.lookup_addr(m.symbols.lookup_name(name))
        assert text == (f"{name}+0x0/{size:#x}: an int3 is already there and it is not a "
                        "kprobe's (EINVAL)")


def test_linux_refuses_to_probe_over_kpemus_int3():
    """kpemu's probes armed before init runs (as `kpemu boot -e` arms them): the guest's
    own registration fails, so it enables nothing and traces nothing, and its init counts
    the two failed steps (and the failed disable)."""
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(TRACEFS_SWITCH))
    events = KprobeEvents(Kprobes(m))
    for definition in EVENT_DEFINITIONS:
        events.write(definition)
    events.enable()
    result = m.run()
    lines = console_lines(m.console)
    assert "init: write them to kprobe_events: FAILED (Invalid argument)" in lines
    assert "init: enable the kprobe events: FAILED (No such file or directory)" in lines
    assert result.exit_code == 3
    trace = guest_trace(m.console)
    assert (trace.entries, trace.lines) == (0, ())
    # kpemu saw the workload all the same (armed since boot, it saw the kernel's own
    # threads forked before init too)
    clones = [a for n, a in host_events(events) if n == "clone"]
    assert clones[-7:] == [(str(pid),) for pid in range(14, 21)]
