"""The default image boots, runs its workload under preemption and powers off -- the same
way every time, with PIT ticks exactly where QEMU's i8254 rule puts them."""

import re

from emu import Machine
from emu.devices.pit8254 import NS_PER_SEC, PIT_FREQ

WORKLOAD = ["fib", "mkdir", "true", "mixer", "sleeper", "busy1", "busy2"]


def test_default_image_boots_and_every_task_exits(reference_run):
    result = reference_run["result"]
    console = reference_run["console"]
    assert result.reason == "halt" and result.exit_code == 0
    assert console.startswith("toykernel: x86_64 PC kernel for kpemu, preemptive, one CPU\n")
    for comm in WORKLOAD:
        assert re.search(rf"^init: {comm}\[\d+\] exited with -?\d+: ok$", console, re.M), comm
    assert "init: 7 tasks exited, 0 failed" in console
    tasks = {comm: state for _pid, comm, state, _code in reference_run["tasks"]}
    assert [tasks[c] for c in WORKLOAD] == ["zombie"] * 7
    assert tasks["swapper"] == "running" and tasks["init"] == "running"


def test_boot_stops_before_the_workload_with_interrupts_on():
    m = Machine()
    result = m.boot()
    assert result.reason == "boot" and m.booted
    assert m.console.endswith("init[1]: starting the workload\n")
    assert m.engine.reg("flags") & 0x200                # IF: interrupts on
    assert m.current.pid == 1 and m.current.comm == "init"
    assert [t.comm for t in m.tasks()] == ["swapper", "init"]
    assert m.pit.channels[0].load_time is not None   # the timer runs


def test_two_runs_are_byte_identical(reference_run):
    m = Machine()
    result = m.run()
    assert m.console == reference_run["console"]
    assert m.clock.now == reference_run["clock"]
    assert result.insns == reference_run["result"].insns
    assert [(t.pid, t.comm, t.state, t.exit_code) for t in m.tasks()] == reference_run["tasks"]


def test_a_run_split_by_max_insns_is_the_same_run(reference_run):
    m = Machine()
    m.boot()
    pieces = []
    while True:
        r = m.run(max_insns=50_000)
        pieces.append(r)
        if r.reason != "limit":
            break
        assert r.insns == 50_000
    assert r.reason == "halt" and len(pieces) > 5
    assert m.console == reference_run["console"]
    assert m.clock.now == reference_run["clock"]


def test_preemption_switches_tasks_in_the_middle_of_a_function():
    """A timer interrupt lands inside busy_sum (not at its entry) on one task, the next one
    finds another task running, and the first is later interrupted inside busy_sum again:
    the guest's scheduler really switched it out mid-function and back in."""
    m = Machine()
    m.boot()
    seen = []

    def observe(event):
        if event.kind == "irq":
            sym = m.symbols.lookup_addr(event.ip)
            seen.append((m.current.comm, sym[0] if sym else None, sym[1] if sym else None))

    m.observers.append(observe)
    assert m.run().reason == "halt"
    mid = [i for i, (comm, name, off) in enumerate(seen) if name == "busy_sum" and off > 0]
    assert mid
    switched = [i for i in mid if i + 1 < len(seen) and seen[i + 1][0] != seen[i][0]
                and any(seen[j][0] == seen[i][0] and seen[j][1] == "busy_sum"
                        for j in range(i + 1, len(seen)))]
    assert switched, seen
    assert {seen[i][0] for i in mid} == {"busy1", "busy2"}


def test_pit_ticks_land_where_the_i8254_rule_puts_them():
    """hz=30000 makes the kernel program divisor 40; edge k is due before instruction
    T0 + floor((k*40 + 1) * 10^9 / 1193182).  An interrupt is delivered exactly there
    unless the guest has IF=0 at that moment (then at the first boundary with IF=1)."""
    m = Machine(cmdline="hz=30000")
    delivered = []
    m.observers.append(lambda e: e.kind == "irq" and delivered.append(e.clock))
    result = m.run()
    assert result.reason == "halt"
    assert "PIT channel 0 at 30000 Hz (divisor 40)" in m.console
    ch = m.pit.channels[0]
    assert ch.count == 40 and ch.mode == 2
    due = [ch.load_time + ((k * 40 + 1) * NS_PER_SEC) // PIT_FREQ
           for k in range(1, len(delivered) + 1)]
    assert all(d >= e for d, e in zip(delivered, due))
    exact = sum(d == e for d, e in zip(delivered, due))
    assert exact >= 0.7 * len(due), (exact, len(due))
    jiffies = int(re.search(r"jiffies (\d+)", m.console).group(1))
    assert jiffies == len(delivered) == m.pit.ticks


def test_rdtsc_reads_the_instruction_clock(machine, probe_targets_o):
    """rdtsc returns the instruction count, that rdtsc included (QEMU icount shift=0)."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    machine.load_module(probe_targets_o)
    fn = machine.symbols.get("mod_rdtsc")
    code = machine.read(fn.addr, fn.size)
    mnemonics = [i.mnemonic for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(code, fn.addr)]
    nth = mnemonics.index("rdtsc") + 1
    now = machine.clock.now
    assert machine.call("mod_rdtsc") == now + nth
    assert machine.clock.now == now          # m.call leaves the guest clock alone
    # The guest's own view: "tsc delta" = rdtsc at power-off minus rdtsc at startup_64,
    # which includes the clock jumps of hlt (virtual time, as under QEMU icount).
    machine.run()
    delta = int(re.search(r"tsc delta (\d+)", machine.console).group(1))
    assert 0 < machine.clock.now - delta < 5000
