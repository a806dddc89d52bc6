"""Regression: after a module was unloaded and loaded again, its event's probe was still
listed (and counted) as armed at the old address while the new text, written over it, had
dropped the int3: the event silently never fired again."""

from kprobes import Kprobe


def armed_bytes_are_int3(m, k):
    return all(m.read(addr, 1) == b"\xcc" for addr in k.armed)


def test_a_reloaded_module_gets_its_event_int3_back(ev, probe_targets_o):
    m, k, events = ev
    m.load_module(probe_targets_o)
    events.write("p:bump probe_targets:mod_bump")
    events.enable()
    kp = events.events["kprobes/bump"].probes[0].kprobe
    for load in range(3):
        addr = m.symbols.lookup_name("mod_bump")
        assert kp.addr == addr and not kp.gone and addr in k.armed
        assert armed_bytes_are_int3(m, k)
        assert "[GONE]" not in k.list()
        assert m.call("mod_bump") == 1
        assert len(events.trace_lines()) == load + 1
        m.unload_module("probe_targets")
        assert kp.gone and addr not in k.armed and armed_bytes_are_int3(m, k)
        assert events.listing() == "p:kprobes/bump probe_targets:mod_bump\n"
        m.load_module(probe_targets_o)


def test_no_probe_is_counted_armed_on_reloaded_text_without_its_int3(ev, probe_targets_o):
    """The symptom itself, with a plain probe: after the reload its address was in the
    armed set although the new text there had no int3.  Now it is [GONE] and not armed
    (only a `MOD:SYM` event comes back by itself, as in Linux)."""
    m, k, _events = ev
    m.load_module(probe_targets_o)
    kp = Kprobe(symbol_name="mod_bump")
    k.register_kprobe(kp)
    m.unload_module("probe_targets")
    m.load_module(probe_targets_o)
    assert armed_bytes_are_int3(m, k) and kp.addr not in k.armed
    assert kp.gone and k.list().splitlines()[1].endswith("[GONE]")
