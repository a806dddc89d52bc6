"""kprobes and modules (kprobes_module_callback): probes on a module's text go [GONE] when it
is unloaded -- out of the trap path, slot freed, never written again, listed until
unregistered -- and probes on its init and cleanup code fire, because the notifier hears
COMING before init runs and GOING only after cleanup."""

import errno

import pytest

from emu import GuestFault
from kprobes import Kprobe, KprobeError, Kretprobe


def test_unload_kills_every_probe_on_the_module_and_frees_its_slot(km, probe_targets_o):
    m, k = km
    mod = m.load_module(probe_targets_o)
    a, b = Kprobe(symbol_name="mod_strlen"), Kprobe(symbol_name="mod_strlen")
    c = Kprobe(symbol_name="mod_fib_plus", post_handler=lambda p, regs, flags: None)
    fib = Kprobe(symbol_name="fib")                     # kernel text: not the module's
    rp = Kretprobe(symbol_name="mod_bump", handler=lambda ri, regs: None)
    k.register_kprobes([a, b, c, fib])
    k.register_kretprobe(rp)
    assert k.slots.used == 5                            # trampoline, fib, 3 in the module
    events = []
    m.observers.append(events.append)
    m.unload_module(mod)
    gone = [a, b, c, rp.kp]
    assert all(p.gone and p.registered for p in gone) and not fib.gone
    assert k.armed == {fib.addr, k.kretprobes.tramp} and set(k.table) == set(k.armed)
    assert k.slots.used == 2
    assert sorted(e.kind for e in events if e.kind.startswith("kprobes.")) == \
        ["kprobes.gone"] * 3                            # one per address, no disarm
    assert rp.registered and sorted(k.probes(), key=id) == sorted(gone + [fib], key=id)
    assert m.call("fib", 5) == 5 and fib.nmissed == 0   # the rest goes on


def test_a_gone_probe_cannot_be_enabled_and_disabling_it_does_nothing(km, probe_targets_o):
    m, k = km
    mod = m.load_module(probe_targets_o)
    p = Kprobe(symbol_name="mod_bump")
    k.register_kprobe(p)
    m.unload_module(mod)
    k.disable_kprobe(p)
    assert not p.disabled and k.list().splitlines()[1].endswith(" [GONE]")
    with pytest.raises(KprobeError) as info:
        k.enable_kprobe(p)
    assert info.value.errno == errno.EINVAL
    k.enabled = False
    k.enabled = True
    assert p.addr not in k.armed


def test_a_gone_probe_registers_again_once_unregistered(km, probe_targets_o):
    m, k = km
    hits = []
    p = Kprobe(symbol_name="mod_bump", pre_handler=lambda p, regs: hits.append(p.addr) or 0)
    first = m.load_module(probe_targets_o)
    k.register_kprobe(p)
    m.unload_module(first)
    k.unregister_kprobe(p)
    assert not p.registered and k.gone == {}
    m.load_module(probe_targets_o)
    k.register_kprobe(p)                               # the symbol again, on the new text
    assert not p.gone and p.addr == m.symbols.lookup_name("mod_bump")
    m.call("mod_bump")
    assert hits == [p.addr]


def test_a_new_probe_at_a_gone_probes_address_is_its_own(km, probe_targets_o, reuse_targets_o):
    m, k = km
    old = m.load_module(probe_targets_o)
    dead = Kprobe(symbol_name="mod_fib_plus")
    k.register_kprobe(dead)
    m.unload_module(old)
    new = m.load_module(reuse_targets_o)
    assert new.base == old.base
    hits = []
    live = Kprobe(symbol_name="reuse_mix", pre_handler=lambda p, regs: hits.append(1) or 0)
    k.register_kprobe(live)
    assert live.addr == dead.addr and not live.gone and dead.gone
    m.call("reuse_mix", 3)
    assert hits == [1] and dead.nmissed == 0
    assert k.list().splitlines()[1:] == [f"{live.addr:016x}  k  reuse_mix+0x0  reuse_targets ",
                                         f"{dead.addr:016x}  k  reuse_mix+0x0  reuse_targets "
                                         "[GONE]"]
    k.unregister_kprobe(dead)
    assert live.addr in k.armed and m.read(live.addr, 1) == b"\xcc"
    k.unregister_kprobe(live)
    assert m.read(live.addr, 1) != b"\xcc"


def test_probes_on_init_and_cleanup_code_fire(km, init_targets_o):
    """COMING comes before the constructors and init run, GOING after cleanup: a probe
    registered from a COMING notifier sees init, one on cleanup_module sees rmmod."""
    m, k = km
    hits = []

    def count(p, regs):
        hits.append(m.symbols.lookup_addr(p.addr)[0])
        return 0

    def on_coming(state, mod):
        if state == "MODULE_STATE_COMING":
            k.register_kprobes([Kprobe(symbol_name=f"init_targets:{name}", pre_handler=count)
                                for name in ("ctor_first", "init_module", "cleanup_module")])

    m.modules.notifiers.append(on_coming)
    mod = m.load_module(init_targets_o)
    assert hits == ["ctor_first", "init_module"]
    m.unload_module(mod)
    assert hits == ["ctor_first", "init_module", "cleanup_module"]
    assert all(p.gone for p in k.probes())


def test_a_kretprobe_instance_in_flight_stays_with_its_kretprobe(km, probe_targets_o):
    """Decision: like kill_kprobe(), a module going leaves a kretprobe's instances in
    flight alone -- only the entry probe goes; unregistering orphans them as ever, writing
    nothing; their task's exit would flush them (this one, the boot task, never exits)."""
    m, k = km
    mod = m.load_module(probe_targets_o)
    rp = Kretprobe(symbol_name="mod_fib_plus", handler=lambda ri, regs: None)
    k.register_kretprobe(rp)
    with pytest.raises(GuestFault):                  # abandoned deep in the kernel's fib,
        m.call("mod_fib_plus", 40, 0, max_insns=1000)   # its return hijacked
    [ri] = rp.used_instances
    m.unload_module(mod)
    assert rp.kp.gone and ri.rp is rp and k.kretprobes.instances() == [ri]
    ram = bytes(m.mem.ram)
    k.unregister_kretprobe(rp)
    assert bytes(m.mem.ram) == ram
    assert ri.rp is None and ri.orphan_of is rp and k.list().count("\n") == 1
    assert m.run().reason == "halt" and k.kretprobes.instances() == [ri]
