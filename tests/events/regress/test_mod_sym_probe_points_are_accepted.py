"""Regression: `MOD:SYM` and `MOD:SYM+OFFS` probe points were refused even with MOD loaded
(kallsyms had no MOD:SYM form, so registration found no symbol: ENOENT)."""

from kprobes import Kprobe


def test_mod_sym_probe_points_are_accepted(ev, probe_targets_o):
    m, k, events = ev
    m.load_module(probe_targets_o)
    events.write("p:entry probe_targets:mod_strlen s=+0(%di):string\n"
                 "p:inside probe_targets:mod_strlen+2\n"
                 "r:ret probe_targets:mod_strlen ret=$retval")
    events.enable()
    kp = Kprobe(symbol_name="probe_targets:mod_bump")     # the API takes the form too
    k.register_kprobe(kp)
    assert kp.addr == m.symbols.lookup_name("mod_bump")
    assert m.call("mod_strlen", "abc") == 3
    lines = [ln.split(": ", 1)[1] for ln in events.trace_lines()]
    size = m.symbols.get("mod_strlen").size
    assert lines[0] == f'entry: (mod_strlen+0x0/{size:#x} [probe_targets]) s="abc"'
    assert lines[1] == f"inside: (mod_strlen+0x2/{size:#x} [probe_targets])"
    assert lines[2].startswith("ret: (") and lines[2].endswith(" <- mod_strlen) ret=0x3")
