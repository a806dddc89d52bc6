"""Regression: an event on a module not loaded yet could not be defined (ENOENT, "Invalid
probed address or symbol"); Linux accepts it and registers it when the module comes."""

def test_an_event_on_a_module_not_loaded_can_be_defined(ev, probe_targets_o):
    m, k, events = ev
    events.write("p:bump probe_targets:mod_bump\nr:rbump probe_targets:mod_bump ret=$retval")
    assert events.error_log == [] and len(events.events) == 2 and k.probes() == []
    events.enable()
    m.load_module(probe_targets_o)
    addr = m.symbols.lookup_name("mod_bump")
    assert addr in k.armed and m.read(addr, 1) == b"\xcc"
    assert m.call("mod_bump") == 1
    assert [ln.split(": ")[1] for ln in events.trace_lines()] == ["bump", "rbump"]
    assert events.trace_lines()[1].endswith(" ret=0x1")
