"""kretprobes (design "task", as 2.6.13 shipped), KUnit-style with exact values:
shared/reference/kprobes-2.6.13.md §6 and §11 scenarios 21-34."""

import errno

import pytest

from emu import Machine
from kprobes import Kprobe, KprobeError, Kprobes, Kretprobe


from tests.kprobes.conftest import sym


def test_basic_return(rm):
    """§11-22: one handler call after F's ret; ri fields; regs; resume at R; 3 traps;
    the free list back to maxactive."""
    m, k = rm
    seen = []

    def handler(ri, regs):
        seen.append((ri.rp, ri.task, ri.ret_addr, regs.ax, regs.ip, regs.sp))

    rp = Kretprobe(symbol_name="inner", handler=handler)
    k.register_kretprobe(rp)
    assert rp.maxactive == 10 and len(rp.free_instances) == 10
    assert m.call("call_outer", 5) == 21
    tramp = sym(m, "kretprobe_trampoline")
    [(owner, task, ret_addr, ax, ip, sp)] = seen
    assert owner is rp and task == m.current_addr
    assert ret_addr == sym(m, "middle_ret") and ax == 10 and ip == tramp + 1
    assert m.read_u64(sp - 8) == tramp          # rsp: after the ret popped the slot
    assert (k.traps["int3"], k.traps["debug"]) == (2, 1)      # 3 traps per call
    assert len(rp.free_instances) == 10 and rp.used_instances == [] and rp.nmissed == 0


def test_handler_changes_the_return_value(rm):
    m, k = rm

    def handler(ri, regs):
        regs.ax = regs.ax + 1000

    k.register_kretprobe(Kretprobe(symbol_name="inner", handler=handler))
    assert m.call("call_outer", 5) == 1021


@pytest.mark.parametrize("depth, maxactive", [(6, 10), (10, 10), (25, 10), (40, 7)])
def test_recursion(rm, depth, maxactive):
    """§11-24/25: depth <= maxactive: every frame; deeper: the outermost maxactive
    frames, innermost instrumented first, nmissed == depth + 1 - maxactive."""
    m, k = rm
    order = []
    rp = Kretprobe(symbol_name="rdepth", maxactive=maxactive,
                   handler=lambda ri, regs: order.append((regs.ax, ri.ret_addr)))
    k.register_kretprobe(rp)
    assert m.call("rdepth", depth) == depth
    frames = depth + 1                           # rdepth(depth) .. rdepth(0)
    instrumented = min(frames, maxactive)
    assert rp.nmissed == frames - instrumented
    assert rp.miss_report() == ({"maxactive": rp.nmissed} if rp.nmissed else {})
    # Returns come innermost first; the instrumented frames are the outermost ones,
    # returning depth - instrumented + 1 .. depth.
    assert [ax for ax, _ in order] == list(range(frames - instrumented, frames))
    rets = [r for _, r in order]
    assert rets[-1] == m.call_return_address                # the outermost returns to m.call
    assert set(rets[:-1]) <= {sym(m, "rdepth_ret")}
    assert len(rp.free_instances) == maxactive


def test_two_and_three_kretprobes_on_one_function(rm):
    """§11-26: at entry the newest registered takes its instance first (real ret_addr),
    the older ones get the trampoline; at return one trap, handlers oldest first."""
    m, k = rm
    tramp = sym(m, "kretprobe_trampoline")
    order = []
    rps = [Kretprobe(symbol_name="inner",
                     handler=lambda ri, regs, n=n: order.append((n, ri.ret_addr)))
           for n in ("R1", "R2", "R3")]
    k.register_kretprobes(rps)
    assert m.call("call_outer", 1) == 13
    assert order == [("R1", tramp), ("R2", tramp), ("R3", sym(m, "middle_ret"))]
    assert k.traps["int3"] == 2 and k.traps["debug"] == 1


def test_nested_probed_functions(rm):
    """§11-27: G's return runs G's handler only and resumes inside F."""
    m, k = rm
    order = []
    for name in ("outer", "middle", "inner"):
        k.register_kretprobe(Kretprobe(symbol_name=name, handler=lambda ri, regs, n=name:
                                       order.append((n, m.symbols.format(ri.ret_addr)))))
    assert m.call("call_outer", 2) == 15
    assert [(n, r.split("/")[0]) for n, r in order] == [
        ("inner", "middle_ret+0x0"), ("middle", "outer_ret+0x0"),
        ("outer", "call_outer_ret+0x0")]
    assert k.traps["int3"] == 6 and k.traps["debug"] == 3


def test_tail_call(rm):
    """§11-28: F jumps to G; one return: G's handler (ret_addr = trampoline), then F's,
    resume at R."""
    m, k = rm
    tramp = sym(m, "kretprobe_trampoline")
    order = []
    for name in ("tail_f", "tail_g"):
        k.register_kretprobe(Kretprobe(symbol_name=name, handler=lambda ri, regs, n=name:
                                       order.append((n, ri.ret_addr, regs.ax))))
    assert m.call("call_tail", 5) == 106
    assert order == [("tail_g", tramp, 106), ("tail_f", sym(m, "call_tail_ret"), 106)]


def test_entry_handler_data_and_veto(rm):
    m, k = rm
    seen = []

    def entry(ri, regs):
        if regs.di % 2:
            return 1                       # odd: do not track this call
        ri.data[:8] = regs.di.to_bytes(8, "little")
        return 0

    def handler(ri, regs):
        seen.append((int.from_bytes(ri.data[:8], "little"), regs.ax))

    rp = Kretprobe(symbol_name="inner", handler=handler, entry_handler=entry, data_size=16)
    k.register_kretprobe(rp)
    for n in range(6):
        m.call("call_outer", n)
    assert seen == [(0, 0), (2, 4), (4, 8)]
    assert rp.nmissed == 0 and rp.misses == {"entry_handler": 3}
    assert len(rp.free_instances) == 10


def test_only_at_function_entry_and_errors(rm):
    m, k = rm
    with pytest.raises(KprobeError) as info:
        k.register_kretprobe(Kretprobe(symbol_name="outer", offset=1))
    assert info.value.errno == errno.EINVAL and "function's entry" in str(info.value)
    with pytest.raises(KprobeError) as info:
        k.register_kretprobe(Kretprobe(symbol_name="no_such_function"))
    assert info.value.errno == errno.ENOENT
    rp = Kretprobe(symbol_name="inner", maxactive=-3)
    k.register_kretprobe(rp)
    assert rp.maxactive == 10                 # written back: max(10, 2*NR_CPUS)
    with pytest.raises(KprobeError):
        k.register_kretprobe(rp)
    assert f"  r  inner+0x0  ret_targets " in k.list()


def test_unregister_in_flight_orphans_the_instance(rm):
    """§11-32: the in-flight return resumes correctly with no handler; the orphan is
    freed; new calls are not trapped."""
    m, k = rm
    called = []
    rp = Kretprobe(symbol_name="inner", handler=lambda ri, regs: called.append(1))

    def unregister_now(p, regs):
        k.unregister_kretprobe(rp)             # inner's instance is in flight now
        return 0

    k.register_kretprobe(rp)
    k.register_kprobe(Kprobe(symbol_name="middle_ret", pre_handler=lambda p, r: 0))
    k.register_kprobe(Kprobe(addr=sym(m, "inner") + 4, pre_handler=unregister_now))
    assert m.call("call_outer", 3) == 17
    assert called == [] and k.kretprobes.orphans_returned == 1
    assert k.kretprobes.instances() == [] and rp.free_instances == []
    assert m.call("call_outer", 3) == 17 and called == []


def test_no_instance_is_a_clear_kretprobe_bug(rm):
    """A return through the trampoline with nothing to return to: an oops, never a
    Python crash."""
    m, k = rm
    from emu import GuestFault

    tramp = sym(m, "kretprobe_trampoline")
    with pytest.raises(GuestFault, match="kretprobe BUG: return through "
                       "kretprobe_trampoline with no instance for task"):
        m.call(tramp)


def test_stack_trace_through_one_and_two_trampolines(rm):
    """Inside a return handler, and from regs, the trampoline is resolved to the real
    callers (Linux >= 5.15)."""
    m, k = rm
    traces = {}

    def handler(ri, regs):
        traces[ri.rp.kp.symbol_name] = (m.format_trace(m.stack_trace()),
                                        m.format_trace(m.stack_trace(regs)))

    for name in ("outer", "middle", "inner"):
        k.register_kretprobe(Kretprobe(symbol_name=name, handler=handler))
    m.call("call_outer", 1)
    short = {n: ([f.split("/")[0] for f in a], [f.split("/")[0] for f in b])
             for n, (a, b) in traces.items()}
    # inner returns into middle; middle's and outer's slots hold the trampoline.
    assert short["inner"][0] == ["middle_ret+0x0", "outer_ret+0x0", "call_outer_ret+0x0"]
    assert short["inner"][1] == short["inner"][0]
    assert short["middle"][0] == ["outer_ret+0x0", "call_outer_ret+0x0"]
    assert short["outer"][0] == ["call_outer_ret+0x0"]
    assert not any("kretprobe_trampoline" in f for a, b in traces.values() for f in a + b)


def test_kprobe_on_the_ret_of_a_kretprobed_function(rm):
    """§11-35: the kprobe's step of `ret` pops the trampoline; the trampoline then fires."""
    m, k = rm
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    fn = m.symbols.get("inner")
    ret = next(i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(fn.addr, fn.size), fn.addr) if i.mnemonic == "ret")
    order = []
    k.register_kretprobe(Kretprobe(symbol_name="inner",
                                   handler=lambda ri, regs: order.append("return")))
    k.register_kprobe(Kprobe(addr=ret, post_handler=lambda p, regs, f: order.append(
        ("post", regs.ip))))
    assert m.call("call_outer", 4) == 19
    assert order == [("post", sym(m, "kretprobe_trampoline")), "return"]


def test_reentered_entry_probe_from_a_handler(rm):
    """§11-21: the entry probe of G hit from inside a kretprobe handler: G.kp.nmissed
    goes up, no instance is taken, G.nmissed stays, G returns normally."""
    m, k = rm
    g = Kretprobe(symbol_name="inner", handler=lambda ri, regs: None)
    f = Kretprobe(symbol_name="outer",
                  handler=lambda ri, regs: m.call("call_outer", 1) and None)
    k.register_kretprobes([g, f])
    assert m.call("call_outer", 2) == 15
    assert g.kp.nmissed == 1 and g.nmissed == 0 and g.returns == 1
    assert g.miss_report() == {"reentered": 1}


# -- the design it replaced (§7): instances keyed by the return slot, 4 traps ----------

@pytest.fixture
def old(ret_targets_o):
    m = Machine()
    k = Kprobes(m, kretprobe_design="stack")
    m.boot()
    m.load_module(ret_targets_o)
    return m, k


def test_old_design_basic_return_takes_four_traps(old):
    """§11-40: entry int3 + #DB, trampoline int3 + #DB (its nop stepped out of line);
    the handler runs before the step, ip is set by the post handler."""
    m, k = old
    seen = []
    rp = Kretprobe(symbol_name="inner", handler=lambda ri, regs: seen.append(
        (ri.ret_addr, regs.ax, ri.stack_addr)))
    k.register_kretprobe(rp)
    clock = m.clock.now
    assert m.call("call_outer", 5) == 21
    assert seen == [(sym(m, "middle_ret"), 10, seen[0][2])]
    assert (k.traps["int3"], k.traps["debug"]) == (2, 2)
    assert m.clock.now == clock and len(rp.free_instances) == 10


@pytest.mark.parametrize("design", ["task", "stack"])
def test_both_designs_agree_on_recursion_nesting_and_several_probes(ret_targets_o, design):
    m = Machine()
    k = Kprobes(m, kretprobe_design=design)
    m.boot()
    m.load_module(ret_targets_o)
    order = []
    rps = [Kretprobe(symbol_name=n, maxactive=5, handler=lambda ri, regs, n=n:
                     order.append((n, regs.ax))) for n in ("rdepth", "outer", "inner")]
    k.register_kretprobes(rps)
    assert m.call("rdepth", 7) == 7
    assert m.call("call_outer", 3) == 17
    assert order == [("rdepth", v) for v in (3, 4, 5, 6, 7)] + [("inner", 6), ("outer", 17)]
    assert rps[0].nmissed == 3
    # 10 entries (8 rdepth frames, outer, inner) take int3 + #DB each; the 7 reported
    # returns take one trap each in the redesign, two (int3 + the nop's #DB) in the old.
    returns = 7 if design == "task" else 14
    assert k.traps["int3"] + k.traps["debug"] == 20 + returns


def test_where_the_designs_differ_tail_call_after_an_unrelated_hit(ret_targets_o):
    """§7.3: F calls a kretprobed function, then tail-jumps to G; F and G kretprobed.
    The redesign records the trampoline as G's return address and walks on to F's
    instance.  The old design's function-static orig_ret_addr still holds the address
    the unrelated hit stored (inside F): G's instance gets that stale address.  (Both
    share one return slot; the post handler takes ip from the last, F's, so the return
    itself lands right here -- only G's report is wrong.)"""
    seen = {}
    for design in ("task", "stack"):
        m = Machine()
        k = Kprobes(m, kretprobe_design=design)
        m.boot()
        m.load_module(ret_targets_o)
        got = seen[design] = []
        for name in ("inner", "tail_f", "tail_g"):
            k.register_kretprobe(Kretprobe(symbol_name=name, handler=lambda ri, regs, n=name:
                                           got.append((n, m.symbols.format(ri.ret_addr)
                                                       .split("/")[0]))))
        assert m.call("call_tail", 5) == 106
    assert seen["task"] == [("inner", "tail_f_inner_ret+0x0"),
                            ("tail_g", "kretprobe_trampoline+0x0"),
                            ("tail_f", "call_tail_ret+0x0")]
    assert seen["stack"] == [("inner", "tail_f_inner_ret+0x0"),
                             ("tail_g", "tail_f_inner_ret+0x0"),      # stale
                             ("tail_f", "call_tail_ret+0x0")]


def test_old_design_task_from_stack_address(old):
    """The old design derives the task from the stack address: on a stack that is not a
    task's (here m.call's own stack), the thread_info it finds is garbage -- the reason
    the redesign keys by current (§7.1)."""
    m, k = old
    seen = []
    rp = Kretprobe(symbol_name="inner", handler=lambda ri, regs: seen.append(ri.task))
    k.register_kretprobe(rp)
    m.call("call_outer", 1, stack_size=64 << 10)
    assert seen and seen[0] != m.current_addr
