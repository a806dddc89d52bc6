"""kprobe events on modules, as trace_kprobe.c has them: `MOD:SYM[+OFFS]` probe points that
resolve in that module only, with Linux's errors; events on a module not loaded yet,
accepted and registered when it comes; events whose module goes stay defined, their probes
[GONE], and come back on the new text when it is loaded again."""

import errno

import pytest

from emu import ModuleLoadError
from kprobes.events import ProbeSyntaxError
from tests.conftest import compile_module



def hits(events, name):
    return [ln for ln in events.trace_lines() if f": {name}: " in ln]


def test_mod_sym_resolves_in_that_module_only(ev, tmp_path):
    m, k, events = ev
    src = tmp_path / "shadow.c"
    # fib(n) = n + 1000, its second instruction at +1
    src.write_text('__asm__(".text\\n.globl fib\\n.type fib, @function\\nfib:\\n"\n'
                   '        "  nop\\n  lea 1000(%rdi), %rax\\n  ret\\n.size fib, .-fib\\n");\n')
    m.load_module(compile_module(src, tmp_path))
    # A bare name counts the kernel's and every module's symbols, as
    # number_of_same_symbols(): two fibs are not unique.
    with pytest.raises(ProbeSyntaxError) as info:
        events.write("p:kfib fib")
    assert info.value.message == "The symbol is not unique"
    events.write("p:modfib shadow:fib\np:off shadow:fib+1")
    events.enable()
    probes = {name: events.events[f"kprobes/{name}"].probes[0].kprobe.addr
              for name in ("modfib", "off")}
    assert probes["modfib"] == m.symbols.lookup_name("shadow:fib") != \
        m.symbols.lookup_name("fib")
    assert probes["off"] == probes["modfib"] + 1
    assert m.call("fib", 5) == 5 and events.trace_lines() == []     # the kernel's fib
    assert m.call("shadow:fib", 1) == 1001
    assert len(hits(events, "modfib")) == 1 and len(hits(events, "off")) == 1
    assert events.listing() == "p:kprobes/modfib shadow:fib\np:kprobes/off shadow:fib+1\n"


@pytest.mark.parametrize("command, code, message", [
    ("p:x probe_targets:no_such", errno.EINVAL, "Invalid probed address or symbol"),
    ("p:x probe_targets:fib", errno.EINVAL, "Invalid probed address or symbol"),
    ("p:x probe_targets:mod_strlen+1", errno.EILSEQ,
     "Probe point is not an instruction boundary"),
    ("r:x probe_targets:mod_bump+4", errno.EINVAL,
     "Retprobe address must be an function entry"),
    ("p:x probe_targets:mod_bump%hoge", errno.EINVAL, "Invalid probed address suffix"),
])
def test_mod_sym_errors_are_linux(ev, probe_targets_o, command, code, message):
    m, k, events = ev
    m.load_module(probe_targets_o)
    with pytest.raises(ProbeSyntaxError) as info:
        events.write(command)
    err = info.value
    assert (err.errno, err.message) == (code, message)
    # the caret under the probe point (the suffix for a bad suffix), as in error_log
    assert err.pos == (command.index("%") if "%" in command else command.index(" ") + 1)
    assert events.error_log == [err.format()]
    assert events.events == {} and k.probes() == []


def test_an_event_on_a_module_not_loaded_is_defined_and_waits(ev):
    m, k, events = ev
    events.write("p:later notyet:func+4 x=%di\nr:rlater notyet:func $retval")
    assert events.listing() == ("p:kprobes/later notyet:func+4 x=%di\n"
                                "r:kprobes/rlater notyet:func arg1=$retval\n")
    assert k.probes() == [] and events.error_log == []
    assert events.log == [f"kprobes/{e}: This probe might be able to register after target "
                          "module is loaded. Continue." for e in ("later", "rlater")]
    events.enable()
    events.disable()
    events.write("-:later")
    assert list(events.events) == ["kprobes/rlater"]
    # Only a module's symbol waits: an unknown kernel symbol is refused as before.
    with pytest.raises(ProbeSyntaxError) as info:
        events.write("p:x no_such_func")
    assert info.value.message == "Invalid probed address or symbol"


def test_a_waiting_event_follows_its_switch_when_the_module_comes(ev, probe_targets_o):
    m, k, events = ev
    events.write("p:on probe_targets:mod_bump\np:off probe_targets:mod_strlen")
    events.enable("on")
    m.load_module(probe_targets_o)
    on, off = (events.events[f"kprobes/{e}"].probes[0].kprobe for e in ("on", "off"))
    assert on.addr in k.armed and off.registered and off.addr not in k.armed
    m.call("mod_bump")
    m.call("mod_strlen", "x")
    assert len(hits(events, "on")) == 1 and hits(events, "off") == []
    events.enable("off")
    m.call("mod_strlen", "x")
    assert len(hits(events, "off")) == 1


def test_events_on_init_and_cleanup_code_fire(ev, init_targets_o):
    m, k, events = ev
    events.write("p:init init_targets:init_module\np:helper init_targets:init_helper ret=%di\n"
                 "p:exit init_targets:cleanup_module")
    events.enable()
    mod = m.load_module(init_targets_o)
    assert [len(hits(events, e)) for e in ("init", "helper", "exit")] == [1, 1, 0]
    assert hits(events, "helper")[0].endswith(" ret=0x0")
    m.unload_module(mod)
    assert len(hits(events, "exit")) == 1


def test_a_module_going_leaves_its_events_defined_and_gone(ev, probe_targets_o):
    m, k, events = ev
    events.write("p:b probe_targets:mod_bump\nr:rb probe_targets:mod_bump ret=$retval")
    events.enable()
    mod = m.load_module(probe_targets_o)
    m.unload_module(mod)
    assert events.listing() == ("p:kprobes/b probe_targets:mod_bump\n"
                                "r:kprobes/rb probe_targets:mod_bump ret=$retval\n")
    probes = [tp.kprobe for e in events.events.values() for tp in e.probes]
    assert all(p.gone and p.registered for p in probes)
    addr = probes[0].addr
    assert sorted(k.list().splitlines()[1:]) == [f"{addr:016x}  {kind}  {addr:#x} [GONE]"
                                                 for kind in "kr"]
    events.disable()
    events.enable()                                   # a gone probe is skipped, as Linux
    events.disable()
    events.write("", append=False)
    assert events.events == {} and k.probes() == []


def test_a_plain_symbol_event_on_a_module_stays_gone_on_reload(ev, probe_targets_o):
    """Linux re-registers only `MOD:SYM` events when a module comes (it cannot know a bare
    SYM was the module's): the bare-symbol event stays [GONE], never armed, listed so."""
    m, k, events = ev
    m.load_module(probe_targets_o)
    events.write("p:bare mod_bump")
    events.enable()
    m.unload_module("probe_targets")
    m.load_module(probe_targets_o)
    tp = events.events["kprobes/bare"].probes[0]
    assert tp.kprobe.gone and tp.kprobe.addr not in k.armed
    assert m.read(tp.kprobe.addr, 1) != b"\xcc" and m.call("mod_bump") == 1
    assert hits(events, "bare") == []
    assert k.list().splitlines()[1].endswith("  mod_bump+0x0  probe_targets [GONE]")


def test_a_probe_that_cannot_register_on_the_module_is_logged(ev, probe_targets_o):
    m, k, events = ev
    events.write("r:bad probe_targets:mod_bump+4")      # cannot be checked before it comes
    mod = m.load_module(probe_targets_o)                 # the module loads all the same
    assert events.log[-1] == "Failed to re-register probe bad on probe_targets: -22"
    assert not events.events["kprobes/bad"].probes[0].kprobe.registered
    assert m.loaded_modules() == [mod] and k.probes() == []


def test_an_event_on_a_module_whose_init_fails_goes_gone_and_stays(ev, init_fails_o):
    """The event was armed at COMING, so its probe fired in init; the failed init sends
    GOING, which kills it, and the event stays defined for a later load."""
    m, k, events = ev
    events.write("p:init init_fails:init_module")
    events.enable()
    with pytest.raises(ModuleLoadError):
        m.load_module(init_fails_o)
    tp = events.events["kprobes/init"].probes[0]
    assert len(hits(events, "init")) == 1 and tp.kprobe.gone
    assert events.listing() == "p:kprobes/init init_fails:init_module\n"
    with pytest.raises(ModuleLoadError):
        m.load_module(init_fails_o)
    assert len(hits(events, "init")) == 2 and k.gone.keys() == {tp.kprobe.addr}


def test_an_event_on_a_reloaded_module_reads_its_symbols_at_their_new_addresses(
        ev, probe_targets_o, reuse_targets_o):
    """`@SYM` is resolved again when the module comes back elsewhere (another module took
    its old place): the recorder reads the new counter, and the records made before print
    the place they had then."""
    m, _k, events = ev
    mod = m.load_module(probe_targets_o)
    events.write("p:cnt probe_targets:mod_bump c=@mod_counter:s64")
    events.enable()
    tp = events.events["kprobes/cnt"].probes[0]
    was = m.symbols.lookup_name("probe_targets:mod_counter")
    assert m.call("probe_targets:mod_bump") == 1 and m.call("probe_targets:mod_bump") == 2
    m.unload_module(mod)
    m.load_module(reuse_targets_o)
    m.load_module(probe_targets_o)
    counter = m.symbols.lookup_name("probe_targets:mod_counter")
    assert counter != was
    m.write(counter, (41).to_bytes(8, "little"))
    assert m.call("probe_targets:mod_bump") == 42
    head = ("            init-1       [000] d....     0.000012: cnt: "
            "(mod_bump+0x0/0x20 [probe_targets])")
    assert events.trace_lines() == [head + " c=0", head + " c=1", head + " c=41"]
    assert tp.nhit == 3
