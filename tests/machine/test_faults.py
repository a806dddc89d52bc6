"""Every guest fault ends in an oops report (vector, registers, symbolized backtrace,
console tail), never a Python crash; the machine stays usable after a faulting m.call."""

import pytest

from emu import GuestFault, Machine, MachineError

FAULTS = [
    (("mod_read", 0x0000700000000000), 14, "page fault at mod_read+0x0/"),
    (("mod_read", 0x8000000000000000), 13, "general protection fault at mod_read+0x0/"),
    (("mod_div", 1, 0), 0, "divide error at mod_div+"),
    (("mod_ud2",), 6, "invalid opcode at mod_ud2+0x0/"),
    (("mod_read", 0xFFFFFFFF80000000 + (200 << 20)), None,
     "read of physical address 0xc800000, which has no RAM behind it, at mod_read+"),
]


@pytest.mark.parametrize("call, vector, message", FAULTS,
                         ids=["page-fault", "gp", "divide", "ud2", "no-ram"])
def test_fault_in_call_is_an_oops(machine, probe_targets_o, call, vector, message):
    machine.load_module(probe_targets_o)
    regs = machine.regs_dict()
    with pytest.raises(GuestFault) as info:
        machine.call(*call)
    oops = info.value.oops
    assert oops.vector == vector
    assert oops.message.startswith(message)
    assert oops.backtrace[0].startswith(call[0] + "+") and oops.backtrace[0].endswith(
        "[probe_targets]")
    assert oops.regs["ip"] == machine.symbols.lookup_name(call[0]) + int(
        oops.backtrace[0].split("+")[1].split("/")[0], 16)
    text = oops.format()
    assert "Call Trace:" in text and f"RIP: {oops.backtrace[0]}" in text
    assert text.rstrip().endswith("| init[1]: starting the workload")
    # The machine is consistent: registers restored, calls and the workload still work.
    assert machine.regs_dict() == regs
    assert machine.call("fib", 10) == 55
    assert machine.run().reason == "halt"


def test_call_that_never_returns_is_cut_off(machine, probe_targets_o):
    machine.load_module(probe_targets_o)
    with pytest.raises(GuestFault, match=r"did not return within 10000 instructions"):
        machine.call("mod_spin", max_insns=10_000)


def test_fault_during_run_stops_with_an_oops_and_backtrace():
    m = Machine()
    m.boot()
    getpid = m.symbols.lookup_name("sys_getpid")
    m.text_poke(getpid, b"\x0f\x0b")             # ud2 where the workload will call it
    result = m.run()
    assert result.reason == "oops" and result.oops is m.oops
    assert m.oops.vector == 6
    assert m.oops.message == f"invalid opcode at sys_getpid+0x0/{m.symbols.get('sys_getpid').size:#x}"
    assert m.oops.backtrace[0].startswith("sys_getpid+0x0/")
    assert any(f.startswith("system_call+") for f in m.oops.backtrace)
    assert m.oops.task.startswith("mkdir-")
    assert m.oops.console_tail.splitlines()[-1] == m.console.splitlines()[-1]
    with pytest.raises(MachineError, match="oopsed"):
        m.run()


def test_hlt_with_interrupts_off_is_an_oops(machine):
    # cli; hlt at the current instruction: the CPU would sleep forever.
    ip = machine.engine.reg("ip")
    machine.text_poke(ip, b"\xfa\xf4")
    result = machine.run()
    assert result.reason == "oops"
    assert "hlt with interrupts disabled" in result.oops.message
