"""Regression: after a kernel stack overflow inside m.call, the report implied the machine
went on, but the recursion had run off the 8 KiB task stack into the page tables below it
and the next call faulted.  Now the report says it was a stack overflow and the machine
refuses to run or call again, as Linux panics."""

import pytest

from emu import GuestFault, MachineError


def test_a_stack_overflow_is_reported_and_fatal(machine):
    m = machine
    with pytest.raises(GuestFault) as exc:
        m.call("fib", 100_000)                 # 100,000 frames: far more than 8 KiB
    assert exc.value.oops.message.startswith("kernel stack overflow: sp 0x")
    assert "the machine cannot go on" in str(exc.value)
    for again in (lambda: m.call("fib", 3), m.run):
        with pytest.raises(MachineError, match="cannot go on: a kernel stack overflow"):
            again()


def test_a_deep_call_on_its_own_stack_is_no_overflow(machine):
    assert machine.call("fib", 25, stack_size=1 << 20) == 75025
    assert machine.call("fib", 10) == 55


def test_an_ordinary_fault_leaves_the_machine_usable(machine, probe_targets_o):
    machine.load_module(probe_targets_o)
    with pytest.raises(GuestFault, match="^page fault at mod_read"):
        machine.call("mod_read", 0x0000700000000000)
    assert machine.dead is None and machine.call("fib", 10) == 55
