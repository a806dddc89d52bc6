"""kpemu's kprobes beside Linux's own, on one run.  Linux's own kprobes are made by its
boot-time `kprobe_event=` command line (trace_kprobe.c enables them at boot); where
optimization is possible Linux turns its int3 into a jmp to an optprobe detour, elsewhere
(a function's last instruction: no room for the jmp) it stays an int3.

  * Linux's int3 can carry a kpemu probe too: kpemu's pre_handler runs, then Linux's #BP
    handler takes the trap (the rule for two int3s at one address);
  * Linux's optimized probe (its jmp) can carry a kpemu probe: kpemu's copy of the jmp runs
    out of line and lands in Linux's detour, so both see every hit;
  * neither changes the run: it is the run with Linux's probe alone (console, count, clock).
docs/linux-kprobes.md has the rule for two int3s at one address; both cases follow it."""

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from emu import Machine
from emu.linux import default_cmdline
from kprobes import Kprobe, Kprobes, Kretprobe
from tests.kprobes_linux.test_linux_kprobes import OPENS
from tests.linux import LINUX_IMAGE
from tests.linux.guest import KUNIT_SWITCH, cmdline_with
from tests.linux.test_linux_kunit import check_kprobes_suite_passed

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


def test_kpemu_probe_on_linuxs_int3_both_see_every_hit_kpemu_first():
    """Rule step 2 with kpemu's probe put on Linux's armed int3 (Linux's own probe at a
    function's last instruction, where it stays an int3): kpemu prepares from the opcode
    Linux saved, its pre_handler runs first, then Linux's #BP handler takes the trap (a
    "shared" miss of kpemu's, no post_handler); kpemu's unregister leaves Linux's int3 in
    place; the run is the run with Linux's probe alone."""
    m0 = Machine(LINUX_IMAGE)
    ret = last_insn(m0, "do_sys_openat2")
    assert ret.mnemonic == "ret"
    off = ret.address - m0.symbols.lookup_name("do_sys_openat2")
    m, snap = booted_with(f"p:lx,do_sys_openat2+{off}")
    assert m.read(ret.address, 1) == b"\xcc"          # Linux's, not optimized
    reference = unprobed(m, snap)
    k = Kprobes(m)
    order = []
    m.observers.append(lambda e: order.append("linux") if e.kind == "trap" and
                       e.vector == 3 else None)
    kp = Kprobe(addr=ret.address, pre_handler=lambda p, regs: order.append(regs.ip) and 0,
                post_handler=lambda p, regs, flags: order.append("post"))
    k.register_kprobe(kp)
    assert kp.opcode == 0xC3 and kp.ainsn.text == "ret"   # Linux's saved opcode
    result = m.run()
    assert (m.console, result.insns, m.clock.now, result.exit_code) == reference
    assert order == [ret.address + 1, "linux"] * len(OPENS)
    assert (kp.nmissed, dict(kp.misses)) == (len(OPENS), {"shared": len(OPENS)})
    assert k.traps["int3-shared"] == len(OPENS) and k.traps["int3-foreign"] == 0
    k.unregister_kprobe(kp)
    assert m.read(ret.address, 1) == b"\xcc"          # Linux's int3 stays


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


def test_linux_registers_under_kpemus_probes_on_the_original_text():
    """Rule steps 1, 4 and 2 with kpemu first: kpemu's probes on do_sys_openat2's first
    four instructions are armed from power-on, and Linux registers its own at the entry
    at boot.  Linux's can_probe() decodes the function from its start and copies the
    instruction: it does so on the original text (kpemu's int3s lent back while it
    prepares), so its registration succeeds and it saves the image's opcode; it does not
    optimize under kpemu's probes (its jmp would cover them); every hit of the entry goes
    to both, kpemu's pre_handler first."""
    base = default_cmdline(Machine(LINUX_IMAGE).image)
    m = Machine(LINUX_IMAGE, cmdline=f"{base} kprobe_event=p:lx,do_sys_openat2")
    k = Kprobes(m)
    fn = m.symbols.get("do_sys_openat2")
    addrs = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read_image(fn.addr, fn.size), fn.addr)][:4]
    hits = {a: 0 for a in addrs}

    def pre(p, regs):
        hits[p.addr] += 1
        return 0
    probes = [Kprobe(addr=a, pre_handler=pre) for a in addrs]
    k.register_kprobes(probes)
    m.boot()
    linux = k.guest_kprobes.guest.at(fn.addr)
    assert linux is not None and linux.enabled and not linux.optimized
    assert linux.opcode == m.read_image(fn.addr, 1)[0]
    assert k.guest_kprobes.refused_optimizations == 1
    assert all(m.read(a, 1) == b"\xcc" for a in addrs)
    linux_hits = counting(m, "kprobe_dispatcher")
    result = m.run()
    assert (result.reason, result.exit_code) == ("halt", 0)
    assert hits == {a: len(OPENS) for a in addrs}
    assert len(linux_hits) == len(OPENS)
    assert [dict(p.misses) for p in probes] == [{"shared": len(OPENS)}, {}, {}, {}]


def test_linuxs_kunit_kprobes_suite_passes_with_kpemus_probes_on_its_targets():
    """Linux's kprobes KUnit suite (6 cases) with kpemu's own kprobe on kprobe_target and
    kretprobe on kprobe_target2 -- the functions the suite probes -- armed from power-on:
    every case still passes (Linux registers, optimizes never, disarms and unregisters
    under kpemu's probes), and kpemu sees every call of its targets, each a hit Linux's
    probe shares (while the suite has one there)."""
    m = Machine(LINUX_IMAGE, cmdline=cmdline_with(KUNIT_SWITCH))
    k = Kprobes(m)
    returns = []
    kp = Kprobe(symbol_name="kprobe_target", pre_handler=lambda p, regs: 0)
    rp = Kretprobe(symbol_name="kprobe_target2",
                   handler=lambda ri, regs: returns.append(regs.ax) and 0)
    k.register_kprobe(kp)
    k.register_kretprobe(rp)
    result = m.run()
    assert (result.reason, result.exit_code) == ("halt", 0)
    check_kprobes_suite_passed(m.console)
    assert (kp.nmissed, dict(kp.misses)) == (4, {"shared": 4})
    assert (rp.kp.nmissed, dict(rp.kp.misses), len(returns), rp.nmissed) == \
        (2, {"shared": 2}, 2, 0)
    assert k.traps["int3-shared"] == 6
    rule = k.guest_kprobes
    assert (rule.rearmed, rule.reprepared, rule.refused_optimizations) == (6, 0, 12)
    for name in ("kprobe_target", "kprobe_target2"):     # the suite unregistered its own
        addr = m.symbols.lookup_name(name)
        assert rule.guest.at(addr) is None and m.read(addr, 1) == b"\xcc"


def test_the_rules_hooks_are_at_every_call_of_the_functions_it_watches():
    """The return hooks of the rule (emu/linux_kprobes.py) sit at every call of
    arch_prepare_kprobe and optimize_kprobe in the image: each is a `call` from the
    callers it names and from nowhere else (a capstone scan of the whole text)."""
    m = Machine(LINUX_IMAGE)
    md = Cs(CS_ARCH_X86, CS_MODE_64)
    calls = {"arch_prepare_kprobe": set(), "optimize_kprobe": set()}
    targets = {m.symbols.lookup_name(name): name for name in calls}
    for fn in m.symbols.functions():
        code = m.read_image(fn.addr, fn.size) if fn.elf_size > 0 else None
        if not code or not m.is_kernel_text(fn.addr):
            continue
        for insn in md.disasm(code, fn.addr):
            if insn.mnemonic in ("call", "jmp") and insn.op_str.startswith("0x") and \
                    int(insn.op_str, 16) in targets:
                assert insn.mnemonic == "call"
                calls[targets[int(insn.op_str, 16)]].add(insn.address + insn.size)
    guest = m.guest_kprobes()
    assert sorted(calls["arch_prepare_kprobe"]) == guest.prepare_returns and \
        len(guest.prepare_returns) == 2
    assert sorted(calls["optimize_kprobe"]) == guest.optimize_returns and \
        len(guest.optimize_returns) == 6
