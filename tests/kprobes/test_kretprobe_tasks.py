"""kretprobes across the guest's real tasks: preemption inside probed functions, the
instance pool shared by tasks, task exit, the exec path -- and the whole-image
differential."""

import errno
import re
from collections import Counter

import pytest

from emu import Machine
from kprobes import KprobeError, Kprobes, Kretprobe

BUSY = 1395883749 & 0xFFFFFFFF   # what busy1/busy2 exit with: busy_sum's low bits


def booted(**kw):
    m = Machine()
    k = Kprobes(m, **kw)
    m.boot()
    return m, k


def test_two_tasks_preempted_inside_the_same_function(reference_run):
    """busy1 and busy2 are both switched out inside busy_sum (preemption is real);
    instances never cross tasks: each return reports its own task and caller."""
    m, k = booted()
    seen = []
    rp = Kretprobe(symbol_name="busy_sum", handler=lambda ri, regs: seen.append(
        (m.current.comm, ri.task == m.current_addr, m.symbols.format(ri.ret_addr),
         regs.ax)))
    inside = Counter()
    m.observers.append(lambda e: e.kind == "irq" and len(rp.used_instances) == 2
                       and inside.update([m.current.comm]))
    k.register_kretprobe(rp)
    assert m.run().reason == "halt"
    assert m.console == reference_run["console"]
    assert sorted(c for c, *_ in seen) == ["busy1", "busy2"]
    assert all(same for _, same, _r, _ax in seen)
    assert {r.split("/")[0] for _, _s, r, _ax in seen} == {"busy_thread+0x1b"}
    assert len({ax for *_, ax in seen}) == 1                 # the same result twice
    assert sum(inside.values()) > 0          # ticks came while both were inside busy_sum
    assert rp.nmissed == 0 and len(rp.free_instances) == 10


def test_maxactive_1_across_tasks(reference_run):
    """§11-29: task A blocked inside F holds the only instance; task B's call is a miss
    and returns normally; A's return is reported."""
    m, k = booted()
    seen = []
    rp = Kretprobe(symbol_name="busy_sum", maxactive=1,
                   handler=lambda ri, regs: seen.append(m.current.comm))
    k.register_kretprobe(rp)
    assert m.run().reason == "halt" and m.console == reference_run["console"]
    assert len(seen) == 1 and rp.nmissed == 1 and rp.entries == 2
    assert rp.miss_report() == {"maxactive": 1}


def test_task_exit_with_an_instance_in_flight(reference_run):
    """§11-31: do_exit never returns; exit_thread's kprobe_flush_task recycles the
    instance, calls no handler and leaves the stack alone."""
    m, k = booted()
    called = []
    rp = Kretprobe(symbol_name="do_exit", handler=lambda ri, regs: called.append(1))
    slots = []
    k.register_kretprobe(rp)
    m.observers.append(lambda e: e.kind == "kprobes.instance" and e.what == "taken"
                       and slots.append(e.instance.stack_addr))
    assert m.run().reason == "halt" and m.console == reference_run["console"]
    assert called == [] and rp.entries == rp.flushed == 7
    assert len(rp.free_instances) == 10 and k.kretprobes.instances() == []
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    assert all(m.read_u64(s) == tramp for s in slots)      # the stack was not patched


@pytest.mark.parametrize("target", ["do_execve", "flush_old_exec"])
def test_exec_path_with_the_later_fix(reference_run, target):
    """§11-33, fixed (2.6.15+): flush on exit only, so a return probe on a function
    active across flush_thread fires normally."""
    m, k = booted()
    seen = []
    rp = Kretprobe(symbol_name=target, handler=lambda ri, regs: seen.append(
        (m.current.comm, regs.ax)))
    k.register_kretprobe(rp)
    assert m.run().reason == "halt" and m.console == reference_run["console"]
    assert seen == [("true", 0)]


@pytest.mark.parametrize("target", ["do_execve", "flush_old_exec"])
def test_exec_path_as_2_6_13(target):
    """§11-33, 2.6.13-exact (flush_on_exec): flush_thread recycles the instance of a
    function still on the exec path; its return finds none: the kretprobe BUG."""
    m, k = booted(flush_on_exec=True)
    rp = Kretprobe(symbol_name=target, handler=lambda ri, regs: None)
    k.register_kretprobe(rp)
    result = m.run()
    assert result.reason == "oops"
    assert re.match(r"kernel BUG: kretprobe BUG: return through kretprobe_trampoline "
                    r"with no instance for task 0x[0-9a-f]+ \(true-4\)", result.oops.message)
    assert rp.flushed == 1 and rp.returns == 0


@pytest.mark.parametrize("flush_on_exec, refused", [(False, ["exit_thread"]),
                                                    (True, ["exit_thread", "flush_thread"])])
def test_functions_that_flush_their_own_instance_are_refused(flush_on_exec, refused):
    """exit_thread (and, when it flushes, flush_thread) call kprobe_flush_task(current)
    first: a return probe there would lose its instance and BUG on return."""
    m, k = booted(flush_on_exec=flush_on_exec)
    for name in ("exit_thread", "flush_thread"):
        rp = Kretprobe(symbol_name=name)
        if name in refused:
            with pytest.raises(KprobeError, match="calls kprobe_flush_task") as info:
                k.register_kretprobe(rp)
            assert info.value.errno == errno.EINVAL
        else:
            k.register_kretprobe(rp)
    if not flush_on_exec:
        assert m.run().reason == "halt"


def test_every_function_carries_a_kretprobe(reference_run):
    """The differential: a kretprobe on every function of the image that may carry one
    (the rest refused with Linux's errno); the whole workload runs exactly as unprobed,
    and every probed call either ran its handler exactly once, is counted as a miss with
    its cause, was flushed at exit, or is still in flight at power-off."""
    m = Machine()
    k = Kprobes(m)
    calls = Counter()
    rps, refused = [], Counter()
    for s in m.symbols.functions():
        if s.module is not None or s.addr in {rp.addr for rp in rps}:
            continue
        rp = Kretprobe(addr=s.addr, maxactive=4,
                       handler=lambda ri, regs: calls.update([ri.rp.addr]))
        try:
            k.register_kretprobe(rp)
            rps.append(rp)
        except KprobeError as exc:
            refused[exc.errno] += 1
    assert set(refused) == {errno.EINVAL} and len(rps) == 81
    result = m.run()
    assert result.reason == "halt" and result.exit_code == 0
    assert m.console == reference_run["console"]
    assert m.clock.now == reference_run["clock"]
    assert [(t.pid, t.comm, t.state, t.exit_code) for t in m.tasks()] == \
        reference_run["tasks"]
    for rp in rps:
        assert calls[rp.addr] == rp.returns
        assert rp.entries == rp.returns + rp.nmissed + rp.flushed + len(rp.used_instances)
        assert rp.nmissed == rp.misses["maxactive"]
    assert sum(rp.nmissed for rp in rps) > 0 and sum(rp.flushed for rp in rps) >= 7
    # Still in flight at power-off: the frames on swapper's and init's stacks, and the
    # functions that never return (startup_64, ret_from_fork).
    in_flight = {m.symbols.format(rp.addr).split("+")[0] for rp in rps if rp.used_instances}
    assert in_flight == {"startup_64", "start_kernel", "rest_init", "cpu_idle", "schedule",
                         "switch_to", "preempt_schedule_irq", "ret_from_fork", "init",
                         "machine_power_off"}
    # Every entry was int3 + debug; every return one int3 at the trampoline (which may
    # report several instances: tail calls).
    assert k.traps["debug"] == sum(rp.entries for rp in rps)
    assert k.traps["int3"] - k.traps["debug"] <= sum(rp.returns for rp in rps)
