"""Regression: m.run(max_insns=N), RunResult.insns and `kpemu boot --max-insns N` counted
the clock -- hlt's idle jumps included -- not the instructions the guest executed."""

from emu import Machine
from tests.cli.test_cli import kpemu


def test_a_run_executes_exactly_max_insns(reference_run):
    m = Machine()
    m.boot()
    clock0, executed0 = m.clock.now, m.clock.executed
    n = reference_run["executed"] - executed0 - 1000     # past most of the idle time
    r = m.run(max_insns=n)
    assert r.reason == "limit" and r.insns == n
    assert m.clock.executed - executed0 == n
    assert m.clock.now - clock0 > n                       # the guest idled in hlt meanwhile
    r = m.run()
    assert r.reason == "halt" and r.insns == 1000
    assert m.clock.executed == reference_run["executed"]
    assert m.clock.now == reference_run["clock"]


def test_the_cli_limit_counts_instructions_executed(reference_run):
    n = reference_run["executed"] - 1000          # well past the first idle time
    r = kpemu("boot", "--quiet", "--max-insns", str(n))
    assert r.returncode == 4
    assert r.stderr.startswith(f"kpemu: stopped after {n} instructions (--max-insns)")
    clock = int(r.stderr.rsplit("clock ", 1)[1])
    assert clock > n
