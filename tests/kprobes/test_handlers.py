"""The trap path, KUnit-style: handler order, aggregates, re-entrancy, enable/disable,
arming from inside handlers, foreign and vanished breakpoints, exceptions and faults."""

import pytest

from emu import GuestFault, Machine
from kprobes import Kprobe, Kprobes


def fib_calls(n):
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def test_pre_then_post_with_the_2005_register_views(km):
    m, k = km
    log = []
    fib = m.symbols.lookup_name("fib")

    def pre(p, regs):
        log.append(("pre", regs.ip, regs.di, regs.flags & 0x300))
        return 0

    def post(p, regs, flags):
        log.append(("post", regs.ip, flags, regs.flags & 0x300))

    p = Kprobe(symbol_name="fib", pre_handler=pre, post_handler=post)
    k.register_kprobe(p)
    assert m.call("fib", 2) == 1
    slot_next = p.ainsn.slot + p.ainsn.length        # push %rbp stepped in the slot
    assert log == [("pre", fib + 1, 2, 0), ("post", slot_next, 0, 0x100),
                   ("pre", fib + 1, 1, 0), ("post", slot_next, 0, 0x100),
                   ("pre", fib + 1, 0, 0), ("post", slot_next, 0, 0x100)]
    assert p.nmissed == 0 and dict(k.traps) == {**k.traps, "int3": 3, "debug": 3}


def test_pre_handler_changing_ip_skips_the_single_step(km):
    """A non-zero return means 'I changed ip': here, return 42 from fib right away."""
    m, k = km

    def pre(p, regs):
        regs.ax = 42
        regs.ip = m.read_u64(regs.sp)     # pop the return address ourselves
        regs.sp += 8
        return 1

    post_called = []
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=pre,
                             post_handler=lambda *a: post_called.append(1)))
    assert m.call("fib", 20) == 42
    assert post_called == [] and k.traps["int3"] == 1 and k.traps["debug"] == 0
    assert not k.arch.kcb.running


def test_aggregate_order_stop_on_nonzero_and_unregister_one(km):
    m, k = km
    order = []

    def mk(name, ret=0):
        return Kprobe(symbol_name="fib",
                      pre_handler=lambda p, r: order.append(("pre", name)) or ret,
                      post_handler=lambda p, r, f: order.append(("post", name)))

    a, b, c = mk("a"), mk("b"), mk("c")
    k.register_kprobes([a, b, c])
    top = k.table[a.addr]
    assert top.is_aggregate and top.children == [c, b, a]     # newest first
    assert k.slots.used == 2                  # one for all three, one for the trampoline
    m.call("fib", 1)
    assert order == [("pre", "c"), ("pre", "b"), ("pre", "a"),
                     ("post", "c"), ("post", "b"), ("post", "a")]
    order.clear()
    k.unregister_kprobe(b)
    m.call("fib", 1)
    assert order == [("pre", "c"), ("pre", "a"), ("post", "c"), ("post", "a")]
    k.unregister_kprobes([a, c])
    assert k.probes() == [] and k.slots.used == 1 and m.read(a.addr, 1) != b"\xcc"


def test_aggregate_stops_at_the_first_nonzero_pre_handler(km):
    m, k = km
    order = []

    def pre_b(p, regs):
        order.append("b")
        regs.ax = 7
        regs.ip = m.read_u64(regs.sp)
        regs.sp += 8
        return 1

    a = Kprobe(symbol_name="fib", pre_handler=lambda p, r: order.append("a") or 0)
    b = Kprobe(symbol_name="fib", pre_handler=pre_b)
    k.register_kprobes([a, b])
    assert m.call("fib", 9) == 7 and order == ["b"]


def test_reentered_probe_runs_no_handler_counts_nmissed_and_still_steps(km):
    """A pre_handler calling into the probed function: every nested hit is a miss."""
    m, k = km
    inner = []

    def pre(p, regs):
        if regs.di == 5:
            inner.append(m.call("fib", 6))
        return 0

    p = Kprobe(symbol_name="fib", pre_handler=pre)
    k.register_kprobe(p)
    assert m.call("fib", 5) == 5 and inner == [8]
    assert p.nmissed == fib_calls(6) == 25
    assert p.misses == {"reentered": 25}
    assert k.traps["int3"] == fib_calls(5) + 25 == k.traps["debug"]


def test_reentry_from_a_post_handler_is_counted_not_disarmed(km):
    m, k = km

    def post(p, regs, flags):
        if not post.done:
            post.done = True
            m.call("fib", 3)

    post.done = False
    p = Kprobe(symbol_name="fib", post_handler=post)
    k.register_kprobe(p)
    m.call("fib", 1)
    assert p.nmissed == fib_calls(3) == 5
    assert m.read(p.addr, 1) == b"\xcc"        # 2.6.13 disarmed it here for good
    m.call("fib", 1)
    assert p.nmissed == 5


def test_enable_disable_and_the_global_switch(km):
    m, k = km
    hits = []
    a = Kprobe(symbol_name="fib", pre_handler=lambda p, r: hits.append("a") or 0)
    b = Kprobe(symbol_name="mix_leaf", pre_handler=lambda p, r: hits.append("b") or 0)
    k.register_kprobes([a, b])
    k.disable_kprobe(a)
    fib_line = next(ln for ln in k.list().splitlines() if "  fib+0x0" in ln)
    assert m.read(a.addr, 1) != b"\xcc" and fib_line.endswith("[DISABLED]")
    m.call("fib", 2)
    assert hits == []
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    k.enabled = False                       # the trampoline stays armed: in-flight
    assert k.armed == {tramp}               # returns must still find it
    k.enabled = True                        # b comes back, a stays disabled
    assert k.armed == {b.addr, tramp}
    m.call("fib", 2)
    assert hits == []
    k.enable_kprobe(a)
    m.call("fib", 2)
    assert hits == ["a"] * 3


def test_disabling_one_child_of_an_aggregate_keeps_the_others(km):
    m, k = km
    hits = []
    a = Kprobe(symbol_name="fib", pre_handler=lambda p, r: hits.append("a") or 0)
    b = Kprobe(symbol_name="fib", pre_handler=lambda p, r: hits.append("b") or 0)
    k.register_kprobes([a, b])
    k.disable_kprobe(a)
    m.call("fib", 1)
    assert hits == ["b"] and a.nmissed == 0
    k.disable_kprobe(b)
    assert a.addr not in k.armed


def test_debugfs_list_format(km, probe_targets_o):
    m, k = km
    m.load_module(probe_targets_o)
    a = Kprobe(symbol_name="fib", offset=1)
    b = Kprobe(symbol_name="mod_bump")
    k.register_kprobes([a, b])
    k.disable_kprobe(a)
    fib = m.symbols.lookup_name("fib")
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    assert k.list() == (f"{tramp:016x}  k  kretprobe_trampoline+0x0    \n"
                        f"{fib + 1:016x}  k  fib+0x1    [DISABLED]\n"
                        f"{b.addr:016x}  k  mod_bump+0x0  probe_targets \n")


def test_arming_and_disarming_from_inside_a_handler_take_effect_at_once(km):
    m, k = km
    seen = []
    leaf = Kprobe(symbol_name="mix_leaf", pre_handler=lambda p, r: seen.append("leaf") or 0)

    def arm_leaf(p, regs):
        k.register_kprobe(leaf)             # mix_tail tail-calls mix_leaf right away
        return 0

    tail = Kprobe(symbol_name="mix_tail", pre_handler=arm_leaf)
    k.register_kprobe(tail)
    m.call("mix_tail", 3)
    assert seen == ["leaf"]

    def disarm_leaf(p, regs):
        k.unregister_kprobe(leaf)
        return 0

    k.unregister_kprobe(tail)
    k.register_kprobe(Kprobe(symbol_name="mix_tail", pre_handler=disarm_leaf))
    seen.clear()
    m.call("mix_tail", 3)
    assert seen == []


def test_breakpoint_removed_after_the_trap_rewinds_ip(km):
    """A trap handler ahead of kprobes removes the probe when its int3 arrives: kprobes
    finds no probe, the byte is no longer 0xCC, so ip goes back and the original
    instruction runs (2.6.13 resumed inside it)."""
    m, k = km
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)

    def racer(vector, ip, flags):
        k.unregister_kprobe(p)
        return False

    m.register_trap_handler(3, racer, first=True)
    assert m.call("fib", 10) == 55
    assert k.traps["int3-vanished"] == 1


def test_foreign_int3_goes_to_the_guest(km, resume_targets_o):
    m, k = km
    m.load_module(resume_targets_o)
    k.register_kprobe(Kprobe(symbol_name="fib"))
    assert m.call("t_int3") == 8
    int3 = m.symbols.lookup_name("t_int3") + 5
    assert m.console.endswith(f"int3 at {int3 + 1:x}\n")
    assert k.traps["int3-foreign"] == 1 and k.traps["int3"] == 0


def test_exception_in_pre_handler_stops_the_run_and_keeps_the_guest_consistent(
        reference_run):
    m = Machine()
    k = Kprobes(m)
    m.boot()

    def pre(p, regs):
        raise ValueError("boom")

    p = Kprobe(symbol_name="sys_mkdir", pre_handler=pre)
    k.register_kprobe(p)
    with pytest.raises(ValueError, match="boom") as info:
        m.run()
    exc = info.value
    assert exc.kprobe is p and exc.guest_ip == p.addr
    assert any("raised by the pre_handler of the kprobe at sys_mkdir+0x0/" in n
               and "task mkdir-3" in n for n in exc.__notes__)
    # Stopped with ip at the probe, the int3 not run: take the probe away and go on.
    assert m.engine.reg("ip") == p.addr and not k.arch.kcb.running
    k.unregister_kprobe(p)
    assert m.run().reason == "halt"
    assert m.console == reference_run["console"]
    assert m.clock.now == reference_run["clock"]


def test_exception_in_post_handler_finishes_the_step_first(km):
    m, k = km

    def post(p, regs, flags):
        raise KeyError("late")

    p = Kprobe(symbol_name="fib", post_handler=post)
    k.register_kprobe(p)
    with pytest.raises(KeyError):
        m.call("fib", 4)
    assert not k.arch.kcb.running and m.engine.reg("flags") & 0x100 == 0
    k.unregister_kprobe(p)
    assert m.call("fib", 4) == 3


def test_fault_handler_takes_a_handler_memory_fault(km):
    m, k = km
    faults = []

    def pre(p, regs):
        m.read(0x0000700000000000, 8)         # not mapped: MemoryFault
        return 0

    def fault(p, regs, trapnr):
        faults.append(trapnr)
        return 1

    p = Kprobe(symbol_name="fib", pre_handler=pre, fault_handler=fault)
    k.register_kprobe(p)
    assert m.call("fib", 3) == 2
    assert faults == [14] * fib_calls(3)


def test_fault_in_the_single_stepped_copy(km, probe_targets_o):
    """The stepped copy faults: fault_handler(p, regs, 14) first; declined, the fault is
    reported at the original instruction, not in the slot."""
    m, k = km
    m.load_module(probe_targets_o)
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    fn = m.symbols.get("mod_read")
    load = next(i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(fn.addr, fn.size), fn.addr) if i.mnemonic == "mov" and "[rdi]" in i.op_str)
    seen = []
    p = Kprobe(addr=load, fault_handler=lambda p, regs, trapnr: seen.append(
        (trapnr, regs.ip)) or 0)
    k.register_kprobe(p)
    with pytest.raises(GuestFault) as info:
        m.call("mod_read", 0x0000700000000000)
    assert seen == [(14, p.ainsn.slot)]
    assert info.value.oops.regs["ip"] == load
    assert info.value.oops.message.startswith("page fault at mod_read+")
    assert not k.arch.kcb.running
    value = 0x0123456789abcdef                    # the probed load works again
    assert m.call("mod_read", value.to_bytes(8, "little")) == value
    assert seen == [(14, p.ainsn.slot)]


def test_registering_probes_adds_no_unicorn_hook(km):
    """Unprobed code runs with no per-instruction hook: probes are bytes in the text.
    Neither a hit nor registering again after unregistering adds one."""
    m, k = km
    hooks = m.engine.hook_count
    names = [s.name for s in m.symbols.functions() if s.name.startswith(("mix_", "sys_"))][:12]
    hits = []
    for _ in range(2):
        probes = [Kprobe(symbol_name=name, pre_handler=lambda p, regs: hits.append(p.addr))
                  for name in names]
        k.register_kprobes(probes)
        assert m.engine.hook_count == hooks
        assert m.call("mix_add", 1) == 1 + 0x9e3779b9
        k.unregister_kprobes(probes)
        assert m.engine.hook_count == hooks
    assert hits == [m.symbols.lookup_name("mix_add")] * 2
