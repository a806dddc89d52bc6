"""Snapshots: the cost of a fresh booted machine for a test.

* m.restore(snap) of the after-boot snapshot vs Machine() + m.boot() of the toy kernel (and
  vs m.boot() alone), as ratios measured in one run: restore untouched, after a test-sized
  change (a kprobe, 100,000 instructions) and after the whole workload ran.  Restore costs
  what the run changed (copy-on-write pages, emu/cow.py), not the RAM size nor the boot's
  length, so against a guest booting in seconds (Linux) the ratio is that much larger: the
  last row puts it against a one-second boot.
* 200 trivial plugin tests (`def test(machine)`): the pytest session's wall time with the
  plugin's restore vs the same tests with a Machine() + boot() per test.
"""

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emu import Machine
from kprobes import Kprobe, Kprobes

REPEAT = 7
TESTS = 200


def _median(fn, repeat=REPEAT):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _fresh():
    Machine().boot()


def _restore_after(m, snap, change, repeat=REPEAT):
    times = []
    for _ in range(repeat):
        m.restore(snap)
        change(m)
        t = time.perf_counter()
        m.restore(snap)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _probe_and_run(m):
    k = Kprobes(m)
    k.register_kprobe(Kprobe(symbol_name="do_fork"))
    m.run(max_insns=100_000)


def restore_cost():
    fresh = _median(_fresh)
    m = Machine()
    t = time.perf_counter()
    m.boot()
    boot = time.perf_counter() - t
    t = time.perf_counter()
    snap = m.snapshot()
    take = time.perf_counter() - t
    idle = _restore_after(m, snap, lambda m: None)
    probed = _restore_after(m, snap, _probe_and_run)
    whole = _restore_after(m, snap, lambda m: m.run())
    return [
        ("snapshot: Machine() + boot() of the toy kernel", fresh * 1e3, "ms (median)"),
        ("snapshot: boot() alone", boot * 1e3, "ms (one boot)"),
        ("snapshot: take m.snapshot() after boot", take * 1e3, "ms (once a session)"),
        ("snapshot: restore, nothing changed", idle * 1e6, "us"),
        ("snapshot: restore after a kprobe + 100k insns", probed * 1e6, "us"),
        ("snapshot: restore after the whole workload", whole * 1e6, "us"),
        ("snapshot: Machine()+boot() / restore (kprobe+100k)", fresh / probed,
         "x cheaper (target >= 20x, < 1 ms)"),
        ("snapshot: boot() / restore (kprobe+100k)", boot / probed, "x"),
        ("snapshot: 1 s boot / restore after the workload", 1.0 / whole,
         "x (a Linux guest boots in seconds; target >= 1000x)"),
    ]


TRIVIAL = """
import pytest

@pytest.mark.parametrize("n", range({n}))
def test_trivial(machine, n):
    assert machine.booted and not machine.halted
    machine.write("init_task", bytes(8))
"""

BOOT_PER_TEST = """
import pytest
from emu import Machine

@pytest.fixture
def machine():
    m = Machine()
    m.boot()
    return m
"""


def _session(directory):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "-p", "no:xdist", str(directory)], check=True, capture_output=True,
                   cwd=directory)
    return time.perf_counter() - t


def plugin_session():
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp) / "plugin"
        booting = Path(tmp) / "boot"
        for d in (plugin, booting):
            d.mkdir()
            (d / "test_trivial.py").write_text(TRIVIAL.format(n=TESTS))
        (booting / "conftest.py").write_text(BOOT_PER_TEST)
        with_plugin = _session(plugin)
        with_boots = _session(booting)
    return [
        (f"plugin: {TESTS} trivial tests, restore per test", with_plugin, "s (session wall time)"),
        (f"plugin: {TESTS} trivial tests, boot per test", with_boots, "s (session wall time)"),
        ("plugin: boot per test / restore per test", with_boots / with_plugin, "x"),
    ]


def run():
    return restore_cost() + plugin_session()
