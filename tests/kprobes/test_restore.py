"""kprobes and machine snapshots: a snapshot holds no kprobes; restoring takes a Kprobes
installed since off the machine with every byte it armed, and leaves no stale translated
code behind (the decision is documented in emu/snapshot.py)."""

import pytest

from emu import Machine, MachineError
from kprobes import Kprobe, Kprobes, KprobesError, Kretprobe


@pytest.fixture
def booted():
    m = Machine()
    m.boot()
    return m, m.snapshot()


def test_snapshot_is_refused_while_kprobes_is_installed():
    m = Machine()
    Kprobes(m)
    m.boot()
    with pytest.raises(MachineError, match="'kprobes' is installed"):
        m.snapshot()


def test_a_probe_from_before_the_restore_does_not_fire_one_after_does(booted, reference_run):
    m, snap = booted
    addr = m.symbols.lookup_name("sys_mkdir")
    original = m.read(addr, 1)
    k = Kprobes(m)
    old_hits, ret_hits = [], []
    k.register_kprobe(Kprobe(symbol_name="sys_mkdir", pre_handler=lambda p, r: old_hits.append(1)))
    k.register_kretprobe(Kretprobe(symbol_name="do_fork", handler=lambda ri, r: ret_hits.append(1)))
    assert m.run().reason == "halt"
    assert len(old_hits) == 4 and ret_hits
    assert m.read(addr, 1) == b"\xcc"

    m.restore(snap)
    # kprobes is off the machine, with its bytes: the blocks translated with an int3 in
    # them are gone too, or the guest would trap into its own int3 handler.
    assert "kprobes" not in m.extensions
    assert m.read(addr, 1) == original
    old_hits.clear()
    ret_hits.clear()
    result = m.run()
    assert result.reason == "halt" and old_hits == [] and ret_hits == []
    assert m.console == reference_run["console"] and m.clock.now == reference_run["clock"]

    m.restore(snap)
    k2 = Kprobes(m)
    new_hits = []
    k2.register_kprobe(Kprobe(symbol_name="sys_mkdir", pre_handler=lambda p, r: new_hits.append(1)))
    assert m.run().reason == "halt"
    assert len(new_hits) == 4 and old_hits == []
    assert m.console == reference_run["console"]


def test_a_kprobes_detached_by_a_restore_refuses_registration():
    """A restore to a snapshot from before Kprobes(m) takes kprobes away; the old object
    must not arm an int3 no handler would take."""
    m = Machine()
    m.boot()
    snap = m.snapshot()
    k = Kprobes(m)
    m.restore(snap)
    with pytest.raises(KprobesError, match="no longer installed"):
        k.register_kprobe(Kprobe(symbol_name="fib"))
    assert m.read(m.symbols.lookup_name("fib"), 1) != b"\xcc"
    assert m.call("fib", 10) == 55
