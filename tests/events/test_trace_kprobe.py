"""The kprobe command layer on the real machine: events become kprobes and kretprobes,
hits become ftrace lines, and kprobe_profile counts them."""

import errno
import re

import pytest

from kprobes.events import ProbeCommandError, ProbeSyntaxError



def test_events_trace_and_profile_of_the_workload(ev, reference_run):
    m, k, events = ev
    events.write("p:mk sys_mkdir path=+0(%di):string\n"
                 "r:mkret sys_mkdir ret=$retval:s64 path=+0($arg1):string\n"
                 "p:kprobes/getpid sys_getpid comm=$comm\n")
    events.enable()
    assert m.run().reason == "halt" and m.console == reference_run["console"]
    lines = events.trace_lines()
    mk = [ln for ln in lines if ": mk: " in ln]
    assert [ln.split(": mk: ")[1] for ln in mk] == [
        f'(sys_mkdir+0x0/{m.symbols.get("sys_mkdir").size:#x}) path="{p}"'
        for p in ("/tmp", "/home", "/var", "/tmp")]
    rets = [ln.split(": mkret: ")[1] for ln in lines if ": mkret: " in ln]
    assert [r.split(") ", 1)[1] for r in rets] == [
        'ret=0 path="/tmp"', 'ret=0 path="/home"', 'ret=0 path="/var"',
        'ret=-17 path="/tmp"']
    assert all(r.startswith("(system_call+") and " <- sys_mkdir)" in r for r in rets)
    assert re.fullmatch(r" +mkdir-3 +\[000\] d\.\.\.\. +\d+\.\d{6}: mk: \(sys_mkdir\+0x0/0x\w+\) "
                        r'path="/tmp"', mk[0])
    getpid = [ln for ln in lines if ": getpid: " in ln]
    comms = [ln.split("-")[0].strip() for ln in getpid]
    assert comms == ["mkdir", "exec"]                  # $comm is the calling task's
    assert [ln.split("comm=")[1] for ln in getpid] == ['"mkdir"', '"exec"']
    assert events.profile() == (f"  {'mk':<44} {4:>15} {0:>15}\n"
                                f"  {'mkret':<44} {4:>15} {0:>15}\n"
                                f"  {'getpid':<44} {len(getpid):>15} {0:>15}\n")
    # Trace timestamps follow the guest clock (instructions as ns) and never go back.
    stamps = [float(ln.split(": ")[0].split()[-1]) for ln in lines]
    assert stamps == sorted(stamps) and stamps[-1] <= m.clock.now / 1e9


def test_read_back_generated_names_maxactive_and_percent_return(ev):
    m, k, events = ev
    events.write("p fib\np:grp/ev1 fib+4 n=%di\nr5 sys_mkdir $retval\n"
                 "p:r2 sys_getpid%return ret=$retval\n")
    assert events.listing() == ("p:kprobes/p_fib_0 fib\n"
                                "p:grp/ev1 fib+4 n=%di\n"
                                "r5:kprobes/r_sys_mkdir_0 sys_mkdir arg1=$retval\n"
                                "r:kprobes/r2 sys_getpid ret=$retval\n")
    rp = events.events["kprobes/r_sys_mkdir_0"].probes[0].probe
    assert rp.maxactive == 5
    assert events.events["kprobes/r2"].probes[0].defn.is_return
    # A new event is registered but not enabled: its byte is not armed.
    addr = m.symbols.lookup_name("fib")
    assert addr not in k.armed
    events.enable("p_fib_0")
    assert addr in k.armed


def test_multi_probe_event(ev):
    m, k, events = ev
    events.write("p:both mix_leaf x=%di\np:both mix_tail x=%di")
    events.enable("both")
    m.call("mix_tail", 3)
    where = [ln.split(": both: ")[1].split(")")[0] for ln in events.trace_lines()]
    assert [w.split("+")[0] for w in where] == ["(mix_tail", "(mix_leaf"]
    assert events.profile().split() == ["both", "2", "0"]
    with pytest.raises(ProbeSyntaxError) as info:
        events.write("r:both sys_getpid")
    assert info.value.message == "Probe type is different from existing probe"
    with pytest.raises(ProbeSyntaxError) as info:
        events.write("p:both fib x=%si:u32")
    assert info.value.message == "Argument type or name is different from existing probe"


def test_enable_disable_delete_and_clear(ev):
    m, k, events = ev
    events.write("p:a fib\np:b mix_leaf")
    events.enable()
    with pytest.raises(ProbeCommandError) as info:
        events.write("", append=False)                 # > kprobe_events while enabled
    assert info.value.errno == errno.EBUSY
    with pytest.raises(ProbeCommandError) as info:
        events.write("-:a")
    assert info.value.errno == errno.EBUSY
    events.disable("a")
    m.call("fib", 3)
    assert events.trace_lines() == []
    events.write("-:a")
    assert list(events.events) == ["kprobes/b"] and m.symbols.lookup_name("fib") not in k.armed
    events.disable()
    events.write("", append=False)
    assert events.events == {} and events.listing() == "" and k.probes() == []


@pytest.mark.parametrize("command, code, message", [
    ("p:x fib+2", errno.EILSEQ, "Probe point is not an instruction boundary"),
    # Unknown at parse time: Linux's parse_error path returns EINVAL.
    ("p:x no_such_symbol", errno.EINVAL, "Invalid probed address or symbol"),
    ("p:x jiffies", errno.EINVAL, "Failed to register probe event"),
    ("p:x kretprobe_trampoline", errno.EINVAL, "Failed to register probe event"),
    ("r:x fib+4", errno.EINVAL, "Retprobe address must be an function entry"),
])
def test_registration_errors_map_like_linux(ev, command, code, message):
    m, k, events = ev
    with pytest.raises(ProbeSyntaxError) as info:
        events.write(command)
    err = info.value
    assert err.errno == code and err.message == message
    assert err.format().splitlines()[1:] == [f"  Command: {command}",
                                             " " * (11 + command.index(" ") + 1) + "^"]
    assert events.error_log[-1] == err.format()
    assert events.events == {} and k.probes() == []


def test_fault_prints_fault(ev):
    m, k, events = ev
    events.write("p:f fib bad=@0x700000000000:u64 s=+0(@0x700000000000):string n=%di")
    events.enable()
    m.call("fib", 1)                      # nothing is mapped at 0x700000000000
    assert events.trace_lines()[0].endswith(" bad=(fault) s=(fault) n=0x1")


def test_return_event_sees_entry_args_and_misses(ev):
    m, k, events = ev
    events.write("r2:fr fib n=$arg1 ret=$retval")
    events.enable()
    assert m.call("fib", 5) == 5
    lines = [ln.split(") ", 1)[1] for ln in events.trace_lines()]
    # Two instances: fib(5) and fib(4) take them; when fib(4) returns, its instance is
    # free again for fib(5)'s call of fib(3).  15 calls, 3 reported.
    assert lines == ["n=0x4 ret=0x3", "n=0x3 ret=0x2", "n=0x5 ret=0x5"]
    ev_ = events.events["kprobes/fr"]
    assert ev_.nmissed == 12 and events.miss_causes(ev_) == {"maxactive": 12}


def test_delete_with_a_place_removes_that_probe_only(ev):
    """Regression: `-:grp/event SYM` deleted the whole multi-probe event; like Linux's
    dyn_event_release() it removes the probes it matches, and the event stays while it
    has any (even enabled: a probe with siblings just goes)."""
    m, k, ev = ev
    ev.write("p:grp/multi fib n=%di\np:grp/multi do_fork n=%di\n")
    ev.enable("grp/multi")
    ev.command("-:grp/multi do_fork")
    assert ev.listing() == "p:grp/multi fib n=%di\n"
    assert [tp.defn.symbol for tp in ev.events["grp/multi"].probes] == ["fib"]
    assert "do_fork" not in k.list() and "fib+0x0" in k.list()
    with pytest.raises(ProbeCommandError) as exc:        # the last probe of an enabled event
        ev.command("-:grp/multi fib")
    assert exc.value.errno == errno.EBUSY
    ev.disable("grp/multi")
    ev.command("-:grp/multi")
    assert ev.listing() == "" and ev.events == {}
