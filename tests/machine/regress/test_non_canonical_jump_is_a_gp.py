"""Regression: a jump to a non-canonical address under m.run() was reported as a double
fault.  The CPU raises #GP (vector 13); the machine reported it but let the CPU go on, so
it faulted again on the same instruction and QEMU's rules made the second fault a #DF,
whose report replaced the first.  The first fault now stops the CPU and is the report."""

import pytest

from emu import GuestFault, Machine
from emu.interrupts import VECTOR_NAMES
from kprobes import Kprobe, Kprobes

NON_CANONICAL = 0x8000000000000000


def test_from_a_run():
    m = Machine()
    m.boot()
    seen = []
    for vector in (8, 13):
        m.register_trap_handler(vector, lambda v, ip, f: seen.append(v) or False)
    m.engine.set_reg("ip", NON_CANONICAL)
    r = m.run()
    assert r.reason == "oops" and seen == [13]
    assert (m.oops.vector, m.oops.message) == (13, "general protection fault at "
                                               "0x8000000000000000")


def test_from_a_kprobe_that_moves_ip():
    m = Machine()
    k = Kprobes(m)
    m.boot()

    def away(p, regs):
        regs.ip = NON_CANONICAL
        return 1

    k.register_kprobe(Kprobe(symbol_name="sys_mkdir", pre_handler=away))
    assert m.run().reason == "oops" and m.oops.vector == 13


def test_from_a_call(machine):
    with pytest.raises(GuestFault) as exc:
        machine.call(NON_CANONICAL)
    assert exc.value.oops.vector == 13
    assert machine.call("fib", 10) == 55


def test_the_vector_names():
    assert [VECTOR_NAMES[v] for v in (0, 6, 8, 9, 13, 14, 17, 20, 21)] == [
        "divide error", "invalid opcode", "double fault", "coprocessor segment overrun",
        "general protection fault", "page fault", "alignment check",
        "virtualization exception", "control protection"]
