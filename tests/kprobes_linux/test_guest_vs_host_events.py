"""Linux's own kprobe_events against kpemu's, on ONE run of the workload: the guest traces
it from inside (kpemu_tracefs=1, the definitions of kernel_images/linux/workload/
kprobe_events), kpemu traces the same definitions from outside, attached from power-on,
and per event the hits and every fetched argument, in order, are the same -- two
independent implementations of one spec at the same addresses, by the rule for two int3s
at one address (docs/linux-kprobes.md; kprobes/arch/x86_64/guest_kprobes.py).

What the guest cannot see and kpemu does, and why (kpemu's events are on from power-on,
Linux's only between init's enabling and disabling writes):

  * before: the kernel's own threads forked at boot (pids 1-13) and init's setup -- its
    opens of /etc/kprobe_events, kprobe_events, trace_clock and events/kprobes/enable and
    its writes to them, the enabling write "1" included (Linux's events are not on yet
    when that vfs_write() is entered);
  * after: init's open of the trace file, once the disabling write has turned Linux's
    events off (that write itself Linux still records: it was entered with them on).
Both trap paths (C and Python) run it."""

import pytest

from emu import Machine
from kprobes import Kprobes
from kprobes.events import KprobeEvents
from kprobes.events.trace_output import parse_trace_line
from tests.linux import LINUX_IMAGE
from tests.linux.guest import (EVENT_DEFINITIONS, TRACEFS_SWITCH, cmdline_with,
                               console_lines, events_of, guest_trace)
from tests.linux.test_linux_guest_trace import GUEST_TRACE, INT3

pytestmark = pytest.mark.slow

TRACING = "/sys/kernel/tracing"
ENABLE = f"{TRACING}/events/kprobes/enable"
# kpemu's records before Linux's events are on: boot's kernel threads, then init's setup.
BEFORE = [("clone", (str(pid),)) for pid in range(1, 14)] + [
    ("op", ("-100", "/etc/kprobe_events")), ("openret", ("3",)),
    ("op", ("-100", f"{TRACING}/kprobe_events")), ("openret", ("3",)),
    ("write", ("174", "init")),
    ("op", ("-100", f"{TRACING}/trace_clock")), ("openret", ("3",)),
    ("write", ("7", "init")),
    ("op", ("-100", ENABLE)), ("openret", ("3",)), ("write", ("1", "init"))]
# The guest's trace ends with init's own disabling of its events: it opens the enable
# file and writes "0" (Linux records the hits of the write that turns the events off).
INITS_DISABLING = [("op", ("-100", ENABLE)), ("openret", ("3",)), ("write", ("1", "init"))]
# ... and kpemu's goes on with init's open of the trace.
AFTER = [("op", ("-100", f"{TRACING}/trace")), ("openret", ("3",))]
WORKLOAD_HITS = {"clone": 7, "op": 3, "openret": 3, "write": 6}
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


@pytest.fixture(scope="module", params=["c", "python"])
def one_run(request):
    """Power-on to power-off with kpemu_tracefs=1 and kpemu's events attached from the
    start; what the bytes at the probed addresses were right after power-off."""
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(TRACEFS_SWITCH))
    k = Kprobes(m)
    k.arch.fastpath = request.param == "c"
    events = KprobeEvents(k)
    for definition in EVENT_DEFINITIONS:
        events.write(definition)
    events.enable()
    result = m.run()
    return m, k, result, host_events(events)


def test_every_event_the_same_hits_and_arguments_in_order(one_run):
    m, _, _, host = one_run
    guest = events_of(guest_trace(m.console))
    assert guest[-len(INITS_DISABLING):] == INITS_DISABLING
    assert hits(guest[:-len(INITS_DISABLING)]) == WORKLOAD_HITS
    assert host == BEFORE + guest + AFTER
    for name in ("op", "openret", "clone", "write"):      # per event, in order
        assert [a for n, a in host[len(BEFORE):len(BEFORE) + len(guest)] if n == name] == \
            [a for n, a in guest if n == name]


def test_inits_tracing_steps_all_succeed(one_run):
    m, _, result, _ = one_run
    assert (result.reason, result.exit_code) == ("halt", 0)
    lines = console_lines(m.console)
    for step in ("write them to kprobe_events", "enable the kprobe events",
                 "disable the kprobe events", "open the trace"):
        assert f"init: {step}: ok" in lines
    # the guest's trace is the guest-only run's, but for two things the rule makes:
    # every kprobe hit comes through an int3 (Linux's probes stay unoptimized under
    # kpemu's), and a return probe's place is kpemu's kretprobe_trampoline -- kpemu's
    # entry handler runs first and puts its trampoline in the return slot, which Linux's
    # rethook then saves as the return address (and returns to: kpemu's return handler
    # then goes back to the real caller)
    tramp = m.symbols.lookup_name("kretprobe_trampoline")

    expected = [(task, INT3, event, where, args) if event in ("op", "write") else
                (task, flags, event, f"{tramp:#x} <- {where.split(' <- ')[1]}", args)
                for task, flags, _, event, where, args in GUEST_TRACE]
    assert [(f"{t.comm}-{t.pid}", t.flags, t.event, t.ip_text, t.args)
            for t in guest_trace(m.console).lines] == expected


def test_the_rule_on_the_run(one_run):
    """Each step of the rule, as the run shows it: Linux prepared on the original bytes
    (its saved opcodes are the image's); every hit of Linux's (enabled) probes went to
    both, kpemu's pre_handler first, and counts a "shared" miss of kpemu's; Linux's
    disarm (init's disabling write) left kpemu's int3s armed; Linux never optimized
    under kpemu's probes."""
    m, k, _, host = one_run
    rule = k.guest_kprobes
    guest_hits = hits(events_of(guest_trace(m.console)))
    for name in PROBED:
        addr = m.symbols.lookup_name(name)
        lkp = rule.guest.at(addr)
        assert lkp.opcode == m.read_image(addr, 1)[0]           # step 1
        assert not lkp.optimized and not lkp.enabled            # step 4; init disabled it
        assert m.read(addr, 1) == b"\xcc" and addr in k.armed   # step 3
    misses = {p.symbol_name: dict(p.misses) for p in k.probes() if not p.internal}
    # step 2: do_sys_openat2's kprobe (op) and the openret kretprobe's entry probe share
    # Linux's aggregate; each kpemu probe misses once per hit handed on to Linux
    assert sorted(p.nmissed for p in k.probes()) == [4, 4, 7, 7]
    assert all(set(m_) == {"shared"} for m_ in misses.values())
    # one trap per hit of an address (op and openret are one probe at do_sys_openat2)
    assert k.traps["int3-shared"] == guest_hits["op"] + guest_hits["clone"] + \
        guest_hits["write"] == 18
    assert (rule.rearmed, rule.reprepared, rule.refused_optimizations) == (3, 0, 6)
    assert hits(host) == {"clone": 20, "op": 9, "openret": 9, "write": 10}
