"""How fast the machine runs guest code, and what the instruction-count clock costs.

* The default workload: instructions from power-on to power-off and the wall time of a
  whole `kpemu boot` (in-process, console not printed).
* Guest speed, kpemu vs raw Unicorn on the same image: the image's own recursive `fib`
  run through m.call (the instruction clock on, as in every kpemu run: the default block
  clock, and the per-instruction reference clock="insn") and by a bare Uc with the same RAM
  and page tables and no hooks at all, the three interleaved round by round.  Reported as
  instructions per second for each and the time ratios per round.
"""

import ctypes
import time

from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_ALL, Uc
from unicorn import x86_const as x86

from bench._measure import Spread, interleaved, per_round, target
from emu import Machine
from emu.machine import RAM_SIZE

FIB_N = 22
ROUNDS = 7


def _raw_unicorn(m, fib_addr, n):
    """A plain Uc over a copy of the booted machine's RAM and registers: no hooks."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    buf = ctypes.create_string_buffer(bytes(m.engine.ram), RAM_SIZE)
    uc.mem_map_ptr(0, RAM_SIZE, UC_PROT_ALL, ctypes.addressof(buf))
    for name, rid in (("cr3", x86.UC_X86_REG_CR3), ("cr4", x86.UC_X86_REG_CR4),
                      ("cr0", x86.UC_X86_REG_CR0), ("gs_base", x86.UC_X86_REG_GS_BASE)):
        uc.reg_write(rid, m.engine.reg(name))
    ret = m.module_area.alloc(16, 16)
    sp = (m.engine.reg("sp") - 512) & ~0xF

    def once():
        uc.reg_write(x86.UC_X86_REG_RSP, sp - 8)
        uc.mem_write(sp - 8 - 0xFFFFFFFF80000000, ret.to_bytes(8, "little"))
        uc.reg_write(x86.UC_X86_REG_RDI, n)
        uc.emu_start(fib_addr, ret)
        return uc.reg_read(x86.UC_X86_REG_RAX)
    return once, buf


def run():
    t0 = time.perf_counter()
    m = Machine()
    result = m.run()
    boot_wall = time.perf_counter() - t0
    assert result.reason == "halt"
    rows = [("default workload: instructions executed", m.clock.executed,
             "power-on to power-off"),
            ("default workload: guest clock", m.clock.now, "ns (executed + hlt jumps)"),
            ("default workload: kpemu boot wall time", boot_wall, "s (in-process)"),
            ("default workload: timer ticks", m.pit.ticks, "PIT edges")]

    m2 = Machine()
    m2.boot()
    fib = m2.symbols.lookup_name("fib")
    before = m2.clock.hidden
    m2.call("fib", FIB_N)
    insns = m2.clock.hidden - before     # m.call runs frozen: its insns land in `hidden`
    raw_once, _keep = _raw_unicorn(m2, fib, FIB_N)
    assert raw_once() == m2.call("fib", FIB_N)
    m3 = Machine(clock="insn")
    m3.boot()
    assert m3.call("fib", FIB_N) == m2.call("fib", FIB_N)
    t = interleaved({"kpemu": lambda: m2.call("fib", FIB_N), "raw": raw_once,
                     "insn": lambda: m3.call("fib", FIB_N)}, ROUNDS)
    rows += [(f"fib({FIB_N}) guest instructions", insns, "insns"),
             ("guest speed, kpemu (clock on)", Spread.of(insns / x / 1e6 for x in t["kpemu"]),
              "MIPS"),
             ("guest speed, raw Unicorn (no hooks)",
              Spread.of(insns / x / 1e6 for x in t["raw"]), "MIPS"),
             ("guest speed, kpemu clock=\"insn\" (reference)",
              Spread.of(insns / x / 1e6 for x in t["insn"]), "MIPS"),
             ("per-instruction clock: clock=\"insn\" / raw Unicorn time",
              per_round(t, lambda i: t["insn"][i] / t["raw"][i]), "ratio (the old clock)"),
             target("deterministic clock: kpemu / raw Unicorn time",
                    per_round(t, lambda i: t["kpemu"][i] / t["raw"][i]), 1.15, "ratio")]
    return rows
