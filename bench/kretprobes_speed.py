"""kretprobes: the cost of a probed call and of deep recursion.

* A kretprobe hit (entry + return, no-op handler) on the image's fib vs the emulator-peer
  way: two kinds of Unicorn UC_HOOK_CODE hooks, one on the entry reading [rsp] and one on
  each return site checking it -- the job a return probe does.  Per probed call, less the
  unprobed time.
* The same for both June 2005 designs side by side: "task" (3 traps per call) and
  "stack" (4 traps).
* Recursion 100,000 deep under one kretprobe with maxactive 100,000 (on a 4 MiB m.call
  stack): it completes, every frame reported; memory per instance (tracemalloc).
"""

import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE

from emu import Machine
from emu.cpu import PtRegs
from kprobes import Kprobes, Kretprobe

FIB_N = 16
REPEAT = 5
DEPTH = 100_000
TARGETS = Path(__file__).resolve().parent.parent / "tests" / "kprobes" / "targets"


def fib_calls(n):
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def _median_call(m, *args):
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        m.call(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def noop(ri, regs):
    pass


def per_call(design):
    m = Machine()
    k = Kprobes(m, kretprobe_design=design)
    m.boot()
    base = _median_call(m, "fib", FIB_N)
    rp = Kretprobe(symbol_name="fib", handler=noop, maxactive=64)
    k.register_kretprobe(rp)
    probed = _median_call(m, "fib", FIB_N)
    assert rp.nmissed == 0
    return m, base, (probed - base) / fib_calls(FIB_N) * 1e6


def peer_cost(m, base):
    """Entry hook pushes [rsp]; a hook on each return site inside fib pops it and calls
    the handler (the outermost return goes to m.call's landing pad, where emu_start stops
    before any hook could run, so one call in each run is not reported)."""
    fib = m.symbols.get("fib")
    engine = m.engine
    sites = [i.address + i.size for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(fib.addr, fib.size), fib.addr) if i.mnemonic == "call"]
    pending = []
    reported = [0]

    def entry(uc, address, size, user_data):
        regs = PtRegs(engine)
        pending.append(m.read_u64(regs.sp))

    def ret_site(uc, address, size, user_data):
        if pending and pending[-1] == address:
            pending.pop()
            regs = PtRegs(engine)
            noop(None, regs)
            regs.flush()
            reported[0] += 1

    engine.uc.hook_add(UC_HOOK_CODE, entry, begin=fib.addr, end=fib.addr)
    for site in sites:
        engine.uc.hook_add(UC_HOOK_CODE, ret_site, begin=site, end=site)
    engine.flush_code(fib.addr, fib.size)
    t = _median_call(m, "fib", FIB_N)
    return (t - base) / fib_calls(FIB_N) * 1e6


def deep_recursion():
    if shutil.which("gcc") is None:
        return [("recursion 100,000 deep", 0, "skipped: gcc not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "ret_targets.o"
        subprocess.run(["gcc", "-c", "-o", str(obj), str(TARGETS / "ret_targets.S")],
                       check=True)
        m = Machine()
        k = Kprobes(m)
        m.boot()
        m.load_module(obj)
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        rp = Kretprobe(symbol_name="rdepth", handler=noop, maxactive=DEPTH + 1)
        k.register_kretprobe(rp)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        t = time.perf_counter()
        depth = m.call("rdepth", DEPTH, stack_size=4 << 20, max_insns=10**8)
        wall = time.perf_counter() - t
    assert depth == DEPTH and rp.returns == DEPTH + 1 and rp.nmissed == 0
    return [("recursion 100,000 deep: frames reported", rp.returns, "of 100,001, 0 missed"),
            ("recursion 100,000 deep: wall time", wall, "s"),
            ("memory per kretprobe instance", grown / (DEPTH + 1), "bytes (tracemalloc)")]


def run():
    m, base, task_us = per_call("task")
    peer_us = peer_cost(m, base)
    _m2, _b2, stack_us = per_call("stack")
    return [(f"kretprobe on fib({FIB_N}): probed calls", fib_calls(FIB_N), "calls"),
            ("kretprobe call, design 'task' (3 traps)", task_us, "us per call"),
            ("kretprobe call, design 'stack' (4 traps)", stack_us, "us per call"),
            ("peer: entry + return-site code hooks", peer_us, "us per call"),
            ("kretprobe (task) / peer", task_us / peer_us, "ratio (target <= 2)")] + \
        deep_recursion()
