"""Regression: m.unload_module() told kprobes nothing -- a probe on the module's text stayed
registered, in the trap path's table and in the armed set, its slot taken, as if the freed
text still held its int3."""

from kprobes import Kprobe, Kretprobe


def test_unloading_a_module_leaves_no_probe_armed_on_it(km, probe_targets_o):
    m, k = km
    mod = m.load_module(probe_targets_o)
    kp = Kprobe(symbol_name="mod_strlen")
    rp = Kretprobe(symbol_name="mod_bump", handler=lambda ri, regs: None)
    k.register_kprobe(kp)
    k.register_kretprobe(rp)
    slots = k.slots.used
    m.unload_module(mod)
    for p in (kp, rp.kp):
        assert p.gone and p.addr not in k.armed and p.addr not in k.table
        assert m.text_byte(p.addr) == 0xCC            # the poison, not a remembered opcode
    assert k.slots.used == slots - 2
