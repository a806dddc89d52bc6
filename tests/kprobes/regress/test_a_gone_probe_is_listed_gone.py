"""Regression: after its module was unloaded a probe was listed as
`__module_area_start+0x2020` (the module area's own symbol), with no `[GONE]`."""

from kprobes import Kprobe, Kretprobe


def test_a_gone_probe_is_listed_gone(km, probe_targets_o):
    m, k = km
    mod = m.load_module(probe_targets_o)
    kp = Kprobe(symbol_name="mod_strlen")
    rp = Kretprobe(symbol_name="mod_bump", handler=lambda ri, regs: None)
    k.register_kprobe(kp)
    k.register_kretprobe(rp)
    k.disable_kprobe(kp)
    assert k.list().splitlines()[1:] == [
        f"{kp.addr:016x}  k  mod_strlen+0x0  probe_targets [DISABLED]",
        f"{rp.addr:016x}  r  mod_bump+0x0  probe_targets "]
    m.unload_module(mod)
    # show_kprobe_addr(): kallsyms knows nothing there now, so %pS of the bare address;
    # [GONE] instead of [DISABLED]
    assert k.list().splitlines()[1:] == [f"{kp.addr:016x}  k  {kp.addr:#x} [GONE]",
                                         f"{rp.addr:016x}  r  {rp.addr:#x} [GONE]"]
    assert "__module_area_start" not in k.list()
    k.unregister_kprobe(kp)
    k.unregister_kretprobe(rp)
    assert k.list().count("\n") == 1                  # the trampoline's line only
