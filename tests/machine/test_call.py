"""m.call: SysV calls into the guest kernel, in kernel context, without moving the clock."""

import pytest

from emu import MachineError


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_call_fib(machine):
    assert [machine.call("fib", n) for n in range(12)] == [fib(n) for n in range(12)]


def test_call_syscalls_in_the_current_tasks_context(machine):
    assert machine.current.comm == "init"
    assert machine.call("sys_getpid") == 1
    assert machine.call("sys_mkdir", "/opt") == 0
    assert machine.call("sys_mkdir", "/opt") == (-17) & (2**64 - 1)   # -EEXIST
    written = machine.call("sys_write", 1, b"via m.call\n", 11)
    assert written == 11 and machine.console.endswith("via m.call\n")


def test_call_leaves_registers_clock_and_workload_alone(machine, reference_run):
    regs = machine.regs_dict()
    clock = machine.clock.now
    machine.call("fib", 15)
    assert machine.regs_dict() == regs
    assert machine.clock.now == clock and machine.clock.hidden > 0
    result = machine.run()
    # The workload runs exactly as if the call never happened (only what it printed and
    # the directory it made are extra state, and this call made none).
    assert result.reason == "halt" and machine.console == reference_run["console"]
    assert machine.clock.now == reference_run["clock"]


def test_call_by_address_and_unknown_symbol(machine):
    assert machine.call(machine.symbols.lookup_name("fib"), 7) == 13
    with pytest.raises(MachineError, match="no symbol 'no_such_function'"):
        machine.call("no_such_function")


def test_call_needs_a_booted_machine():
    from emu import Machine

    with pytest.raises(MachineError, match="boot the machine"):
        Machine().call("fib", 3)


def test_narrow_registers_read_without_stale_high_bits(machine):
    """Unicorn writes 4 bytes for EFLAGS and the selectors: no garbage above them."""
    eng = machine.engine
    eng.reg("ip")                                    # a 64-bit kernel address first
    assert eng.reg("flags") >> 32 == 0 and eng.reg("cs") == 0x08
    assert machine.regs_dict()["flags"] == eng.regs(("flags",))[0]
