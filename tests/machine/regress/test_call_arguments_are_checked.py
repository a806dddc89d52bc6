"""Regression: m.call(None) and other wrong arguments leaked internal TypeErrors, a bytes
argument was copied onto the 8 KiB task stack unchecked (9000 bytes overwrote 1,126 bytes
of kernel data below it), and m.call after power-off still ran guest code."""

import pytest

from emu import MachineError
from emu.machine import CALL_DATA_LIMIT


@pytest.mark.parametrize("target, args, message", [
    (None, (), "the target must be a symbol name or an address, not NoneType"),
    (1.5, (), "not float"),
    ("fib", (None,), "argument 1 must be an int, bytes or str, not NoneType"),
    ("fib", (1, 2.0), "argument 2 must be an int, bytes or str, not float"),
    ("fib", (b"x" * (CALL_DATA_LIMIT + 1),), f"more than the {CALL_DATA_LIMIT}"),
])
def test_bad_call_arguments_are_a_machine_error(machine, target, args, message):
    with pytest.raises(MachineError, match=message):
        machine.call(target, *args)
    assert machine.call("fib", 10) == 55


def test_a_large_bytes_argument_touches_no_stack(machine):
    """9000 bytes: more than a task stack.  They land in a block of their own; every
    byte of the kernel's image (text, data, bss, the task stacks) is as it was, but for
    the frames the call itself used below the current stack pointer and the accessed
    bits the CPU sets in the page tables (head.S: init_level4_pgt .. level2_pgt)."""
    m = machine
    start, end = (m.symbols.lookup_name(s) for s in ("_text", "_end"))
    pgt_start = m.symbols.lookup_name("init_level4_pgt")
    pgt_end = m.symbols.lookup_name("level2_pgt") + 4096
    sp = m.engine.reg("sp")
    base = sp & ~(m.layout.thread_size - 1)
    assert start < pgt_start < pgt_end <= base < sp < end

    def image_less_the_frames():
        return (m.read(start, pgt_start - start) + m.read(pgt_end, base - pgt_end) +
                m.read(sp, end - sp))

    before = image_less_the_frames()
    assert m.call("strlen", b"a" * 9000 + b"\0") == 9000
    assert image_less_the_frames() == before
    assert m.call("strlen", "ab" * 100_000) == 200_000


def test_no_call_after_power_off(machine):
    assert machine.run().reason == "halt"
    with pytest.raises(MachineError, match="powered off"):
        machine.call("fib", 3)
