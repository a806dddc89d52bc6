"""m.snapshot() / m.restore(): a restored machine runs byte-identically."""

import pytest

from emu import Machine, MachineError

MSRS = {"STAR": 0xC0000081, "LSTAR": 0xC0000082, "FMASK": 0xC0000084,
        "KERNEL_GS_BASE": 0xC0000102, "GS_BASE": 0xC0000101, "EFER": 0xC0000080}


def outcome(m, result):
    return {"reason": result.reason, "exit_code": result.exit_code, "console": m.console,
            "clock": m.clock.now, "executed": m.clock.executed, "idle": m.clock.idle,
            "ticks": m.pit.ticks, "irqs": m.irqs,
            "tasks": [(t.pid, t.comm, t.state, t.exit_code) for t in m.tasks()]}


def reference(ref):
    return {k: ref[k] for k in ("console", "clock", "executed", "idle", "ticks")}


@pytest.fixture
def booted():
    m = Machine()
    m.boot()
    return m, m.snapshot()


def test_restore_after_boot_runs_like_a_fresh_boot(booted, reference_run):
    m, snap = booted
    first = outcome(m, m.run())
    m.restore(snap)
    assert m.booted and not m.halted and m.exit_code is None
    again = outcome(m, m.run())
    assert again == first
    assert {k: again[k] for k in reference(reference_run)} == reference(reference_run)
    assert again["reason"] == reference_run["result"].reason == "halt"
    assert again["tasks"] == reference_run["tasks"]


def test_a_snapshot_taken_mid_workload_gives_identical_continuations(reference_run):
    m = Machine()
    m.boot()
    m.run(max_insns=150_000)
    snap = m.snapshot()
    console_then = m.console
    first = outcome(m, m.run())
    for _ in range(2):
        m.restore(snap)
        assert m.console == console_then       # the console so far, not the later lines
        assert outcome(m, m.run()) == first
    assert first["console"] == reference_run["console"]
    assert first["clock"] == reference_run["clock"]


def test_every_register_comes_back(booted):
    m, snap = booted
    eng = m.engine
    names = ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "ip", "flags", "cs", "ss", "ds", "es", "fs", "gs",
             "cr0", "cr3", "cr4", "fs_base", "gs_base")
    before = {n: eng.reg(n) for n in names}
    tables = {t: eng.table_reg(t) for t in ("gdtr", "idtr")}
    msrs = {n: eng.uc.msr_read(v) for n, v in MSRS.items()}
    m.run(max_insns=200_000)
    for n in ("ax", "bx", "r15", "gs_base", "fs_base"):
        eng.set_reg(n, 0x1234)
    eng.uc.msr_write(MSRS["KERNEL_GS_BASE"], 0xFFFF888000001000)
    eng.uc.msr_write(MSRS["LSTAR"], 0xFFFFFFFF81000010)
    m.restore(snap)
    assert {n: eng.reg(n) for n in names} == before
    assert {t: eng.table_reg(t) for t in ("gdtr", "idtr")} == tables
    assert {n: eng.uc.msr_read(v) for n, v in MSRS.items()} == msrs


def test_memory_devices_and_run_state_come_back(booted):
    m, snap = booted
    addr = m.symbols.lookup_name("jiffies") or m.symbols.lookup_name("init_task")
    before = m.read(addr, 64)
    console, ticks, now = m.console, m.pit.ticks, m.clock.now
    pic = (dict(vars(m.pic.master)), dict(vars(m.pic.slave)))
    pit = [dict(vars(ch)) for ch in m.pit.channels]
    m.write(addr, b"\xaa" * 64)
    m.uart.scr = 0x5A
    result = m.run()
    assert result.reason == "halt" and m.halted
    m.restore(snap)
    assert m.read(addr, 64) == before
    assert (m.console, m.pit.ticks, m.clock.now) == (console, ticks, now)
    assert (vars(m.pic.master), vars(m.pic.slave)) == pic
    assert [vars(ch) for ch in m.pit.channels] == pit
    assert m.uart.scr == 0
    assert not m.halted and m.exit_code is None and m.oops is None


def test_modules_and_their_symbols_come_and_go_with_the_snapshot(booted, probe_targets_o):
    m, snap = booted
    mod = m.load_module(probe_targets_o)
    name = mod.symbols[0].name
    assert m.symbols.lookup_name(name) is not None
    m.restore(snap)
    assert m.loaded_modules() == []
    assert m.symbols.lookup_name(name) is None
    again = m.load_module(probe_targets_o)          # the area is free again: same place
    assert again.base == mod.base
    assert m.symbols.lookup_name(name) == again.symbols[0].value
    m.restore(snap)
    assert m.symbols.lookup_name(name) is None


def test_a_snapshot_of_a_loaded_module_keeps_it(probe_targets_o):
    m = Machine()
    m.boot()
    mod = m.load_module(probe_targets_o)
    snap = m.snapshot()
    m.unload_module(mod)
    m.restore(snap)
    assert [x.name for x in m.loaded_modules()] == [mod.name]
    assert m.read(mod.base, 16) == m.read(mod.base, 16)
    assert m.symbols.lookup_name(mod.symbols[0].name) == mod.symbols[0].value


def test_two_snapshots_restore_in_any_order(reference_run):
    m = Machine()
    m.boot()
    at_boot = m.snapshot()
    m.run(max_insns=100_000)
    later = m.snapshot()
    clock_later = m.clock.now
    for snap, clock in ((at_boot, None), (later, clock_later), (at_boot, None),
                        (later, clock_later)):
        m.restore(snap)
        if clock is not None:
            assert m.clock.now == clock
        result = m.run()
        assert result.reason == "halt"
        assert m.console == reference_run["console"]
        assert m.clock.now == reference_run["clock"]


def test_guest_calls_work_after_restore(booted):
    m, snap = booted
    fib = m.call("fib", 10)
    m.run(max_insns=50_000)
    m.restore(snap)
    assert m.call("fib", 10) == fib


def test_an_observer_added_after_the_snapshot_is_gone_after_restore(booted):
    m, snap = booted
    m.observers.append(lambda e: None)
    m.restore(snap)
    assert m.observers == []


def test_restore_refuses_what_is_not_this_machines_snapshot(booted):
    m, snap = booted
    other = Machine()
    with pytest.raises(MachineError, match="machine it was taken of"):
        other.restore(snap)
    with pytest.raises(MachineError, match="takes what m.snapshot"):
        m.restore({"ram": b""})


def test_snapshot_refuses_an_extension_without_snapshot_support(booted):
    m, snap = booted
    m.extensions["probe-layer"] = object()
    with pytest.raises(MachineError, match="'probe-layer' is installed"):
        m.snapshot()
    m.restore(snap)
    assert m.extensions == {}
    m.snapshot()


def test_an_extension_with_snapshot_support_is_restored_with_the_machine(booted):
    m, _ = booted

    class Counter:
        def __init__(self):
            self.n = 0

        def snapshot_state(self):
            return self.n

        def restore_state(self, state):
            self.n = state

    c = m.extensions["counter"] = Counter()
    c.n = 5
    snap = m.snapshot()
    c.n = 9
    m.restore(snap)
    assert m.extensions["counter"] is c and c.n == 5
