"""Code rewritten through another mapping of its physical page is seen at once, as on the
CPU and on QEMU (emu/_fastpath.c part 1, "Guest stores, and code pages"): Unicorn 2.1.4
lets a store through a non-executable mapping take its fast path -- no translation
dropped -- once that mapping's TLB entry has been written, and the block clock guards the
pages it has seen code on against that.  Both clocks run it: the per-instruction clock
keeps every store on the slow path."""

import shutil
import subprocess
from pathlib import Path

import pytest

from emu import Machine, engine

TARGETS = Path(__file__).parent / "targets"
MSR_EFER = 0xC0000080
EFER_NXE = 1 << 11
PTE_P, PTE_RW, PTE_PS, PTE_NX = 1, 2, 1 << 7, 1 << 63
ALIAS_BASE = 1 << 39            # PML4[1]: nothing of the toy kernel's there


@pytest.fixture(scope="module")
def alias_smc_o(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot assemble the test module")
    out = tmp_path_factory.mktemp("targets") / "alias_smc.o"
    subprocess.run(["gcc", "-c", "-o", str(out), str(TARGETS / "alias_smc.S")], check=True)
    return out


def map_nx_alias(m, va):
    """Map the 2 MiB physical region holding `va` a second time, writable and NX, at
    ALIAS_BASE (tables from the module's .bss); the alias of `va`."""
    pa = m.mem.walk(va)
    pdpt, pd = (m.mem.walk(m.symbols.lookup_name(n)) for n in ("smc_pdpt", "smc_pd"))
    pml4 = m.engine.reg("cr3") & ~0xFFF
    m.mem.write_phys(pml4 + 8, (pdpt | PTE_P | PTE_RW).to_bytes(8, "little"))
    m.mem.write_phys(pdpt, (pd | PTE_P | PTE_RW).to_bytes(8, "little"))
    m.mem.write_phys(pd, ((pa & ~0x1FFFFF) | PTE_P | PTE_RW | PTE_PS | PTE_NX).to_bytes(8, "little"))
    m.engine.set_msr(MSR_EFER, m.engine.msr(MSR_EFER) | EFER_NXE)
    m.engine.flush_tlb()
    return ALIAS_BASE + (pa & 0x1FFFFF)


@pytest.mark.parametrize("clock, guards", [("block", 32), ("block", 1), ("insn", 32)])
def test_code_rewritten_through_a_second_mapping_is_seen(alias_smc_o, clock, guards,
                                                         monkeypatch):
    """With one guard hook only, every code page widens its one range: slower, as right."""
    monkeypatch.setattr(engine, "_CODE_GUARDS", guards)
    m = Machine(clock=clock)
    m.boot()
    m.load_module(alias_smc_o)
    target = m.symbols.lookup_name("smc_target")
    alias = map_nx_alias(m, target)
    assert m.read(alias, 6) == m.read(target, 6) == bytes.fromhex("b801000000c3")
    # Each call sees the write before it: the first dropped the translation the page had
    # before the alias's entry was written, the second the one made after it.
    assert m.call("smc_alias", alias - target) == 0x030201
    assert m.read(target, 6) == bytes.fromhex("b803000000c3")
    if clock == "block":
        stats = m.engine.clock_stats
        assert stats["guarded_pages"] > 0 and 0 < stats["guard_ranges"] <= guards
