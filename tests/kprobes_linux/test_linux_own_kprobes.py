"""kpemu's kprobes beside Linux's own, on one run.  Linux's own kprobes are made by its
boot-time `kprobe_event=` command line (trace_kprobe.c enables them at boot); where
optimization is possible Linux turns its int3 into a jmp to an optprobe detour, elsewhere
(a function's last instruction: no room for the jmp) it stays an int3.

  * Linux's int3 is not kpemu's: it goes to Linux's #BP handler, and kpemu refuses to put
    a probe of its own on it (EINVAL, as Linux refuses a foreign int3);
  * Linux's optimized probe (its jmp) can carry a kpemu probe: kpemu's copy of the jmp runs
    out of line and lands in Linux's detour, so both see every hit;
  * neither changes the run: it is the run with Linux's probe alone (console, count, clock).
docs/linux-kprobes.md has the rule for the int3 case kpemu does not handle yet."""

import errno

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from emu.linux import default_cmdline
from kprobes import Kprobe, KprobeError, Kprobes
from tests.kprobes_linux.test_linux_kprobes import OPENS
from tests.linux import LINUX_IMAGE

pytestmark = pytest.mark.slow


def booted_with(events):
    base = default_cmdline(Machine(LINUX_IMAGE).image)
    m = Machine(LINUX_IMAGE, cmdline=f"{base} kprobe_event={events}")
    m.boot()
    return m, m.snapshot()


def unprobed(m, snap):
    m.restore(snap)
    result = m.run()
    out = (m.console, result.insns, m.clock.now, result.exit_code)
    m.restore(snap)
    return out


def counting(m, name):
    """Entries of a Linux function, counted by a host hook (no guest time)."""
    seen = []
    m.engine.add_entry_hook(m.symbols.lookup_name(name), lambda: seen.append(1))
    m.engine.flush_all_code()          # blocks translated before the hook was added
    return seen


def last_insn(m, name):
    sym = m.symbols.get(name)
    return list(Cs(CS_ARCH_X86, CS_MODE_64).disasm(m.read_image(sym.addr, sym.size),
                                                   sym.addr))[-1]


def test_linuxs_int3_kprobe_goes_to_linux_and_kpemu_keeps_off_it():
    m0 = Machine(LINUX_IMAGE)
    ret = last_insn(m0, "do_sys_openat2")
    assert ret.mnemonic == "ret"
    off = ret.address - m0.symbols.lookup_name("do_sys_openat2")
    m, snap = booted_with(f"p:lx,do_sys_openat2+{off}")
    assert m.read(ret.address, 1) == b"\xcc"          # Linux's, not optimized
    reference = unprobed(m, snap)
    k = Kprobes(m)
    with pytest.raises(KprobeError) as exc:
        k.register_kprobe(Kprobe(addr=ret.address))
    assert exc.value.errno == errno.EINVAL and "not a kprobe's" in str(exc.value)
    hits = []
    k.register_kprobe(Kprobe(symbol_name="do_sys_openat2",
                             pre_handler=lambda p, regs: hits.append(regs.ip) and 0))
    to_linux = []                 # the machine's deliveries to Linux's IDT of an int3
    m.observers.append(lambda e: to_linux.append(e.ip) if e.kind == "trap" and
                       e.vector == 3 else None)
    result = m.run()
    assert (m.console, result.insns, m.clock.now, result.exit_code) == reference
    assert len(hits) == len(OPENS)
    assert k.traps["int3-foreign"] == len(to_linux) == len(OPENS)
    assert set(to_linux) == {ret.address + 1}


def test_kpemu_probe_on_linuxs_optimized_probe_both_see_every_hit():
    m, snap = booted_with("p:op,do_sys_openat2")
    addr = m.symbols.lookup_name("do_sys_openat2")
    linux_jmp = m.read(addr, 5)
    assert linux_jmp[0] == 0xE9 and m.read_image(addr, 1) != b"\xe9"   # Linux optimized it
    reference = unprobed(m, snap)
    linux_hits = counting(m, "optimized_callback")
    k = Kprobes(m)
    kp = Kprobe(symbol_name="do_sys_openat2", pre_handler=lambda p, regs: 0)
    k.register_kprobe(kp)
    assert kp.ainsn.text.startswith("jmp")            # kpemu steps Linux's jmp out of line
    result = m.run()
    assert (m.console, result.insns, m.clock.now, result.exit_code) == reference
    assert k.traps["int3"] == k.traps["debug"] == len(linux_hits) == len(OPENS)
    k.unregister_kprobe(kp)
    assert m.read(addr, 5) == linux_jmp              # Linux's jmp back, byte for byte
