"""emu.cpu.PtRegs, the pt_regs view handlers get (C, emu/_fastpath.c part 3): lazy native
reads, writes kept until flush()/trap_return(), Linux's names and the 2.6-era aliases."""

import pytest

from emu import Machine
from emu.cpu import ALIASES, REG_NAMES, PtRegs


@pytest.fixture(scope="module")
def engine():
    m = Machine()
    m.boot()
    return m.engine


def test_every_name_and_alias_reads_the_cpu(engine):
    regs = PtRegs(engine)
    for name in REG_NAMES:
        assert getattr(regs, name) == regs[name] == engine.reg(name), name
    for alias, name in ALIASES.items():
        assert getattr(regs, alias) == getattr(regs, name), alias
    assert regs.as_dict() == {name: engine.reg(name) for name in REG_NAMES}
    assert list(regs.as_dict()) == list(REG_NAMES)


def test_a_register_is_read_once_then_kept(engine):
    old = engine.reg("r12")
    regs = PtRegs(engine)
    assert regs.r12 == old
    engine.set_reg("r12", old ^ 0xFF)
    assert regs.r12 == old                # kept from the first read
    regs.refresh()
    assert regs.r12 == old ^ 0xFF
    engine.set_reg("r12", old)


def test_writes_reach_the_cpu_at_flush(engine):
    old = engine.reg("r13"), engine.reg("r14")
    regs = PtRegs(engine)
    regs.r13 = 0x1234
    regs["rsi"] = regs.si             # same value: still marked, harmless
    regs.r14 = -1                     # masked to 64 bits
    assert regs.r13 == 0x1234 and regs.r14 == (1 << 64) - 1
    assert engine.reg("r13") == old[0]
    regs.flush()
    assert engine.reg("r13") == 0x1234 and engine.reg("r14") == (1 << 64) - 1
    engine.set_reg("r13", old[0])
    engine.set_reg("r14", old[1])


def test_at_trap_starts_from_the_trapped_ip_and_flags(engine):
    old = engine.reg("r15")
    regs = PtRegs.at_trap(engine, 0xFFFFFFFF81001234, 0x246)
    assert (regs.ip, regs.rip, regs.flags, regs.eflags) == (0xFFFFFFFF81001234,) * 2 + (0x246,) * 2
    regs.ip += 3
    regs.r15 = 7
    ip = engine.reg("ip")
    # trap_return writes the others and hands ip and flags back for the hook to write.
    assert regs.trap_return() == (0xFFFFFFFF81001237, 0x246)
    assert engine.reg("r15") == 7 and engine.reg("ip") == ip
    engine.set_reg("r15", old)


def test_bad_names_and_values_are_refused(engine):
    regs = PtRegs(engine)
    with pytest.raises(AttributeError, match="pt_regs has no register 'rzz'"):
        regs.rzz = 1
    with pytest.raises(AttributeError, match="rzz"):
        regs.rzz
    with pytest.raises(KeyError, match="rzz"):
        regs["rzz"]
    with pytest.raises(TypeError, match="cannot be deleted"):
        del regs.ax
    with pytest.raises(TypeError):
        regs.ax = "x"
    with pytest.raises(TypeError):
        PtRegs(object())


def test_repr_shows_the_registers_a_reader_wants(engine):
    regs = PtRegs.at_trap(engine, 0x10, 0x2)
    text = repr(regs)
    assert text.startswith("<pt_regs ip=0x10 sp=0x") and text.endswith(" flags=0x2>")


def test_one_register_table():
    """The C view's reg_names[] and reg_aliases[] are the only lists of register names:
    emu.cpu re-exports them, and an oops dumps exactly those names but the segment
    registers (in its own order)."""
    from emu import _fastpath
    from emu.oops import REG_ORDER

    assert REG_NAMES is _fastpath.REG_NAMES and ALIASES is _fastpath.REG_ALIASES
    assert len(REG_NAMES) == len(set(REG_NAMES)) == 20
    assert set(ALIASES.values()) <= set(REG_NAMES)
    assert len(REG_ORDER) == len(set(REG_ORDER))
    assert set(REG_ORDER) == set(REG_NAMES) - {"cs", "ss"}
