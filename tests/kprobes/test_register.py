"""register_kprobe: address resolution and every refusal with Linux's errno."""

import errno

import pytest

from kprobes import Kprobe, KprobeError


def refused(k, p, code):
    with pytest.raises(KprobeError) as info:
        k.register_kprobe(p)
    assert info.value.errno == code, str(info.value)
    assert not p.registered
    return str(info.value)


def test_symbol_and_address_resolve_to_the_same_place(km):
    m, k = km
    a = Kprobe(symbol_name="fib", offset=1)
    b = Kprobe(addr=m.symbols.lookup_name("fib") + 1)
    k.register_kprobe(a)
    assert a.addr == m.symbols.lookup_name("fib") + 1 and a.registered
    k.register_kprobe(b)                   # a second probe there: an aggregate
    assert b.addr == a.addr and k.table[a.addr].is_aggregate
    assert m.read(a.addr, 1) == b"\xcc" and a.opcode == b.opcode == 0x48


def test_errno_cases(km, resume_targets_o):
    m, k = km
    m.load_module(resume_targets_o)
    fib = m.symbols.lookup_name("fib")
    assert "both" in refused(k, Kprobe(addr=fib, symbol_name="fib"), errno.EINVAL)
    assert "neither" in refused(k, Kprobe(), errno.EINVAL)
    assert "unknown symbol 'nope'" in refused(k, Kprobe(symbol_name="nope"), errno.ENOENT)
    msg = refused(k, Kprobe(symbol_name="jiffies"), errno.EINVAL)
    assert "not in kernel or module text" in msg
    assert "not an instruction boundary" in refused(
        k, Kprobe(symbol_name="fib", offset=2), errno.EILSEQ)     # inside mov %rsp,%rbp
    assert "blacklisted (kretprobe_trampoline)" in refused(
        k, Kprobe(symbol_name="kretprobe_trampoline"), errno.EINVAL)
    assert "blacklisted (in .kprobes.text)" in refused(
        k, Kprobe(symbol_name="system_call"), errno.EINVAL)
    assert "blacklisted (in .kprobes.text)" in refused(
        k, Kprobe(symbol_name="kprobe_flush_task"), errno.EINVAL)
    assert "cannot probe 'iretq'" in refused(k, Kprobe(symbol_name="t_iret_insn"),
                                             errno.EINVAL)
    int3 = m.symbols.lookup_name("t_int3") + 5
    assert "an int3 is already there" in refused(k, Kprobe(addr=int3), errno.EINVAL)
    hlt = next(a for a in range(m.symbols.lookup_name("cpu_idle"),
                                m.symbols.lookup_name("cpu_idle") + 64)
               if m.read(a, 1) == b"\xf4")
    assert "cannot probe 'hlt'" in refused(k, Kprobe(addr=hlt), errno.EINVAL)
    # A refused probe leaves no trace: nothing armed, no slot taken (but the
    # trampoline's, which Kprobes(m) registers at once, as arch_init_kprobes did).
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    assert k.probes() == [] and k.slots.used == 1 and k.armed == {tramp}


def test_registering_the_same_probe_twice(km):
    _m, k = km
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)
    with pytest.raises(KprobeError, match="already registered") as info:
        k.register_kprobe(p)
    assert info.value.errno == errno.EINVAL
    assert p.registered                    # the first registration stands
    assert len(k.probes()) == 1


def test_unregister_restores_the_byte_and_frees_the_slot(km):
    m, k = km
    fib = m.symbols.lookup_name("fib")
    original = m.read(fib, 1)
    p = Kprobe(symbol_name="fib")
    k.register_kprobe(p)
    assert m.read(fib, 1) == b"\xcc" and k.slots.used == 2      # and the trampoline's
    k.unregister_kprobe(p)
    assert m.read(fib, 1) == original and k.slots.used == 1 and not p.registered
    k.register_kprobe(p)                   # a probe can be registered again
    assert p.addr == fib and m.call("fib", 5) == 5


def test_boundary_is_checked_against_original_bytes_under_other_probes(km):
    """Decoding forward from the symbol must see the bytes under armed int3s."""
    m, k = km
    fib = m.symbols.get("fib")
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    starts = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(fib.addr, fib.size), fib.addr)]
    probes = [Kprobe(addr=a) for a in starts[:6]]
    k.register_kprobes(probes)
    assert all(p.registered for p in probes)
    assert m.call("fib", 10) == 55


def test_original_bytes_across_pages_and_after_disarming(km):
    """What the text is under the breakpoints, for a range over two pages with armed
    bytes on both sides of the boundary, and again once some are disarmed."""
    m, k = km
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs
    boundary = (m.symbols.lookup_name("_text") & ~0xFFF) + 0x1000
    start = m.symbols.symbol_at(boundary - 0x40)
    code = m.read(start.addr, 0x80 + boundary - start.addr)
    starts = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, start.addr)
              if boundary - 0x40 <= i.address < boundary + 0x40]
    assert any(a < boundary for a in starts) and any(a >= boundary for a in starts)
    probes = []
    for addr in starts:
        p = Kprobe(addr=addr)
        try:
            k.register_kprobe(p)
        except KprobeError:
            continue                    # not every instruction can be probed
        probes.append(p)
    armed = sorted(p.addr for p in probes)
    assert any(a < boundary for a in armed) and any(a >= boundary for a in armed)
    assert m.read(start.addr, len(code)) != code            # the int3s are there
    assert k.original_bytes(start.addr, len(code)) == code
    k.disable_kprobe(probes[0])
    k.unregister_kprobe(probes[-1])
    assert k.original_bytes(start.addr, len(code)) == code
    assert k.original_bytes(boundary - 1, 2) == code[boundary - 1 - start.addr:][:2]


def test_register_kprobes_rolls_back_on_failure(km):
    m, k = km
    good = Kprobe(symbol_name="fib")
    bad = Kprobe(symbol_name="fib", offset=2)
    with pytest.raises(KprobeError) as info:
        k.register_kprobes([good, bad])
    assert info.value.errno == errno.EILSEQ
    assert not good.registered and k.probes() == [] and m.read(good.addr, 1) != b"\xcc"


def test_slots_are_in_reach_and_pages_are_shared(km):
    m, k = km
    probes = [Kprobe(symbol_name=s.name) for s in m.symbols.functions()
              if s.name.startswith("mix_")]
    k.register_kprobes(probes)
    slots = {p.ainsn.slot for p in probes}
    assert len(slots) == len(probes)
    assert all(m.module_area.contains(s) for s in slots)
    assert len(k.slots.pages) == 1
    for p in probes:
        assert abs(p.ainsn.slot - p.addr) < 2**31


def test_a_modules_kprobes_text_is_blacklisted_while_it_is_loaded(km, tmp_path):
    """A module's own .kprobes.text is refused like the kernel's, and only while that
    module is loaded: a module loaded later at the same place without one is probed."""
    from tests.conftest import compile_module

    m, k = km
    guarded = tmp_path / "guarded.c"
    guarded.write_text('__asm__(".section .kprobes.text,\\"ax\\"\\n.globl g_entry\\n'
                       '.type g_entry, @function\\ng_entry:\\n  nop\\n  ret\\n'
                       '.size g_entry, .-g_entry\\n");\n')
    plain = tmp_path / "plain.c"
    plain.write_text('__asm__(".text\\n.globl p_entry\\n.type p_entry, @function\\n'
                     'p_entry:\\n  nop\\n  ret\\n.size p_entry, .-p_entry\\n");\n')
    mod = m.load_module(compile_module(guarded, tmp_path))
    at = m.symbols.lookup_name("g_entry")
    assert "blacklisted (in guarded's .kprobes.text)" in refused(
        k, Kprobe(symbol_name="g_entry"), errno.EINVAL)
    m.unload_module(mod)
    m.load_module(compile_module(plain, tmp_path))
    assert m.symbols.lookup_name("p_entry") == at
    p = Kprobe(symbol_name="p_entry")
    k.register_kprobe(p)
    assert p.registered and m.read(at, 1) == b"\xcc"
