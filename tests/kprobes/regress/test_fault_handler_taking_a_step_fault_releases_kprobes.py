"""Regression: a fault_handler that returned 1 for a fault of the single-stepped copy left
kprobes "running" (as 2.6.13 did), so the next hit of any probe was taken for an
unrecoverable re-entry."""

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from kprobes import Kprobe

UNMAPPED = 0x0000700000000000


def test_a_handled_step_fault_ends_the_step(km, probe_targets_o):
    m, k = km
    m.load_module(probe_targets_o)
    fn = m.symbols.get("mod_read")
    load = next(i for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read(fn.addr, fn.size),
                                                               fn.addr)
                if i.mnemonic == "mov" and "[rdi]" in i.op_str)
    seen = []

    def emulate_the_load(p, regs, trapnr):
        """Handle the fault as an exception-table fixup would: the load gives -1."""
        seen.append((trapnr, regs.ip - p.ainsn.slot, regs.flags & 0x300))
        regs.ax = (1 << 64) - 1
        regs.ip = p.ainsn.slot + load.size        # past the copy: the handler's choice
        return 1

    p = Kprobe(addr=load.address, fault_handler=emulate_the_load)
    k.register_kprobe(p)
    flags_before = m.engine.reg("flags")
    assert m.call("mod_read", UNMAPPED) == (1 << 64) - 1
    assert seen == [(14, 0, 0x100)]               # in the slot, TF on, IF off
    assert not k.arch.kcb.running and k.arch.kcb.current_kprobe is None
    assert m.engine.reg("flags") == flags_before
    # kprobes is free again: another probe's hit is an ordinary hit, not a re-entry.
    hits = []
    k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=lambda p, r: hits.append(1)))
    assert m.call("fib", 2) == 1 and hits == [1, 1, 1]
    assert p.nmissed == 0 and m.call("mod_read", m.symbols.lookup_name("mod_counter")) == 0
