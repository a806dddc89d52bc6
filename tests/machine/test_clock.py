"""The block clock (emu/_fastpath.c, part 1) against the per-instruction one it replaced
(Engine(clock="insn"), kept as the reference): at every point a hook or the guest can read
the clock -- an OUT or IN in the middle of a block, several OUTs in one block, rdtsc, a fault
or an int3 in the middle of a block, a deadline anywhere inside a block, a block ended by
hlt, single-steps under TF, a stop asked for by an OUT handler -- both give the same count
and the CPU is at the same instruction.  Each case runs under both clocks and compares the
whole record of events, and also checks the record against the count worked out by hand,
so that a bug shared by both cannot pass.  (A #PF in the middle of a block, in ring 3, is
what the Linux boot's exact counts in tests/linux cover.)"""

import pytest

from emu import Machine
from emu.engine import NEVER, Engine
from emu.errors import MachineError

CODE = 0x1000
RESUME = 0x1800         # where a fault handler sends the CPU: nop; hlt
NOP, HLT, INT3 = b"\x90", b"\xf4", b"\xcc"
OUT_80 = b"\xe6\x80"    # out 0x80, al
IN_81 = b"\xe4\x81"     # in al, 0x81
RDTSC = b"\x0f\x31"
MOV_EBX_EAX = b"\x89\xc3"
DIV_ECX = b"\xf7\xf1"   # with ecx = 0: #DE
XOR_ECX = b"\x31\xc9"
CPUID = b"\x0f\xa2"
X86_EFLAGS_TF = 0x100


def engine(clock, code):
    e = Engine(1 << 20, clock=clock)
    e.ram[CODE:CODE + len(code)] = code
    e.ram[RESUME:RESUME + 2] = NOP + HLT
    e.set_reg("sp", 0x80000)
    return e


def record(clock, code, deadline=NEVER, stop_at_out=None, setup=None):
    """Run `code` to hlt (or the deadline) recording (event, clock, ip) at every port
    access and every trap, and the final clock and ip."""
    e = engine(clock, code)
    log = []

    def out(port, size, value):
        log.append(("out", value, e.executed))
        if stop_at_out is not None and value == stop_at_out:
            e.request_stop()

    def in_(port, size):
        log.append(("in", e.executed))
        return e.executed & 0xFF

    def trap(vector, ip, flags):
        log.append(("trap", vector, ip, e.executed))
        if vector == 0:
            return RESUME, flags
        return True

    e.out_ports[0x80] = out
    e.in_ports[0x81] = in_
    for vector in (0, 1, 3):
        e.trap_table[vector] = [trap]
    if setup is not None:
        setup(e)
    e.start(CODE, 0, deadline)
    log.append(("end", e.executed, e.reg("ip"), e.reg("ax"), e.reg("bx")))
    return log, e


def both(code, **kw):
    """The record under both clocks: asserted equal, returned once (with the block
    engine, to check that it did count blocks whole)."""
    insn, _ = record("insn", code, **kw)
    block, e = record("block", code, **kw)
    assert block == insn
    return block, e


def test_the_clock_names_are_checked():
    with pytest.raises(MachineError, match="clock must be one of block, insn"):
        Engine(1 << 20, clock="tsc")


def test_several_outs_in_one_block_each_see_their_own_count():
    code = NOP + OUT_80 + NOP + NOP + OUT_80 + OUT_80 + NOP + HLT
    log, _ = both(code)
    assert log[:3] == [("out", 0, 2), ("out", 0, 5), ("out", 0, 6)]
    assert log[3][:2] == ("end", 8)


def test_an_in_in_the_middle_of_a_block_reads_the_count_at_it():
    code = NOP + NOP + NOP + IN_81 + MOV_EBX_EAX + NOP + HLT
    log, _ = both(code)
    assert log[0] == ("in", 4)
    assert log[1] == ("end", 7, CODE + len(code), 4, 4)


def test_a_stop_asked_for_at_an_out_lands_right_after_it():
    code = NOP + b"\xb0\x01" + OUT_80 + b"\xb0\x02" + OUT_80 + NOP + NOP + HLT
    log, e = both(code, stop_at_out=2)
    assert log[-1][:3] == ("end", 5, CODE + 1 + 2 + 2 + 2 + 2)
    assert e.clock_stats["precise"] == 1          # the OUT block is counted per instruction


def test_rdtsc_in_the_middle_of_a_block_counted_whole():
    code = NOP + NOP + RDTSC + MOV_EBX_EAX + NOP + NOP + RDTSC + HLT
    log, e = both(code)
    assert log == [("end", 8, CODE + len(code), 7, 3)]
    assert e.clock_stats["blocks"] >= 1 and e.clock_stats["precise"] == 0


def test_a_fault_in_the_middle_of_a_block_counts_the_faulting_instruction():
    code = NOP + NOP + XOR_ECX + DIV_ECX + NOP + NOP + HLT
    log, e = both(code)
    assert log[0] == ("trap", 0, CODE + 4, 4)     # #DE: ip at the div, counted
    assert log[1][:3] == ("end", 6, RESUME + 2)   # the block's rest never ran
    assert e.clock_stats["precise"] == 0


def test_int3_in_the_middle_of_a_block_and_an_instruction_taken_back_out():
    code = NOP + NOP + NOP + INT3 + NOP + HLT

    def discounting(e):
        def trap(vector, ip, flags):          # what kprobes does with its int3
            e.icount.executed -= 1
            e.icount.hidden += 1
            return True
        e.trap_table[3] = [trap]

    log, _ = both(code)
    assert log == [("trap", 3, CODE + 4, 4), ("end", 6, CODE + 6, 0, 0)]
    log, _ = both(code, setup=discounting)
    assert log == [("end", 5, CODE + 6, 0, 0)]


@pytest.mark.parametrize("deadline", range(0, 9))
def test_a_deadline_anywhere_in_a_block_stops_before_that_instruction(deadline):
    code = NOP + XOR_ECX + NOP + CPUID + NOP + NOP + NOP + b"\xb0\x07" + HLT
    lengths = [1, 2, 1, 2, 1, 1, 1, 2, 1]
    log, _ = both(code, deadline=deadline)
    assert log[-1][:3] == ("end", deadline, CODE + sum(lengths[:deadline]))


def test_a_block_ended_by_hlt():
    code = NOP * 5 + HLT
    log, e = both(code)
    assert log == [("end", 6, CODE + 6, 0, 0)]
    assert e.clock_stats == {"decoded": 1, "blocks": 1, "translations": 1, "precise": 0,
                             "guarded_pages": 1, "guard_ranges": 1}


def test_single_steps_under_tf():
    code = NOP + XOR_ECX + NOP + NOP + HLT

    def stepping(e):
        e.set_reg("flags", e.reg("flags") | X86_EFLAGS_TF)

    log, _ = both(code, setup=stepping)
    steps = [entry for entry in log if entry[0] == "trap"]
    assert steps == [("trap", 1, CODE + 1, 1), ("trap", 1, CODE + 3, 2),
                     ("trap", 1, CODE + 4, 3), ("trap", 1, CODE + 5, 4)]


def test_the_toy_kernel_runs_the_same_under_both_clocks_whole_and_sliced():
    runs = {}
    for clock in ("insn", "block"):
        out = []
        m = Machine(clock=clock, echo=out.append)
        m.boot()
        slices = [m.run(max_insns=50_000).insns for _ in range(3)]
        result = m.run()
        runs[clock] = (slices, result.reason, result.exit_code, m.clock.now,
                       m.clock.executed, m.pit.ticks, m.irqs, b"".join(
                           x if isinstance(x, bytes) else x.encode() for x in out))
    assert runs["block"] == runs["insn"]
    assert runs["block"][0] == [50_000] * 3


def test_the_table_of_translations_starting_afresh_changes_nothing():
    runs = {}
    for clock, limit in (("insn", None), ("block", 8)):
        m = Machine(clock=clock)
        if limit is not None:
            m.engine.clock_table_limit = limit
        result = m.run()
        runs[clock] = (result.reason, m.clock.now, m.clock.executed, m.pit.ticks)
        if limit is not None:
            stats = m.engine.clock_stats
            assert stats["translations"] <= limit + 1 and stats["decoded"] > 4 * limit
    assert runs["block"] == runs["insn"]


# A run to the next block boundary (Engine.start(boundary=True)), which the machine uses while
# an interrupt waits for IF: nothing but a block's last instruction sets IF, so stopping at
# every block boundary finds the instruction after which IF went up exactly as stepping one
# instruction at a time did.
STI = b"\xfb"
JMP_NEXT = b"\xeb\x00"          # jmp to the next instruction: ends the block


def test_a_boundary_run_stops_after_exactly_one_block():
    e = engine("block", NOP * 3 + JMP_NEXT + NOP * 4 + HLT)
    e.start(CODE, 0, NEVER, boundary=True)
    assert (e.executed, e.reg("ip"), e.at_boundary, e.last_insn) == (4, CODE + 5, True,
                                                                      CODE + 3)
    e.start(e.reg("ip"), 0, NEVER, boundary=True)      # the rest is one block, ended by hlt
    assert (e.executed, e.at_boundary) == (9, False)


def test_a_boundary_run_ends_right_after_sti_and_names_it():
    e = engine("block", NOP * 2 + STI + NOP * 5 + HLT)
    e.start(CODE, 0, NEVER, boundary=True)
    assert (e.executed, e.reg("ip"), e.last_insn, e.at_boundary) == (3, CODE + 3, CODE + 2,
                                                                      True)
    assert e.reg("flags") & 0x200


def test_a_deadline_inside_a_boundary_run_still_stops_exactly():
    e = engine("block", NOP * 8 + HLT)
    e.start(CODE, 0, 5, boundary=True)
    assert (e.executed, e.reg("ip"), e.at_boundary) == (5, CODE + 5, False)


def test_a_boundary_run_needs_the_block_clock():
    e = engine("insn", NOP + HLT)
    with pytest.raises(MachineError, match="block clock"):
        e.start(CODE, 0, NEVER, boundary=True)
