"""kprobes: the cost of a hit, and the cost of probes that are never hit.

* A kprobe hit with no-op pre and post handlers (int3 + out-of-line single-step + #DB,
  the 2005 mechanism) vs the emulator-peer way: a Unicorn UC_HOOK_CODE on the one address,
  calling the same no-op pre and post with the same pt_regs view.  Both measured on the
  image's recursive fib through m.call, less the unprobed time, per hit.  The hit is
  also timed on the Python reference trap path (k.arch.fastpath = False), for scale.
* Unprobed guest throughput with 10,000 kprobes registered on code that never runs (a
  generated module of 1,000 ten-instruction functions) vs with none: the default workload.
"""

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from unicorn import UC_HOOK_CODE

from emu import Machine
from emu.cpu import PtRegs
from kprobes import Kprobe, Kprobes

FIB_N = 18
REPEAT = 5


def fib_calls(n):
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def _median_call(m, n):
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        m.call("fib", n)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def noop_pre(p, regs):
    return 0


def noop_post(p, regs, flags):
    pass


def hit_cost():
    hits = fib_calls(FIB_N)
    m = Machine()
    k = Kprobes(m)
    m.boot()
    base = _median_call(m, FIB_N)
    p = Kprobe(symbol_name="fib", pre_handler=noop_pre, post_handler=noop_post)
    k.register_kprobe(p)
    probed = _median_call(m, FIB_N)
    k.arch.fastpath = False             # every trap through the Python reference path
    python_path = _median_call(m, FIB_N)
    k.arch.fastpath = True
    k.unregister_kprobe(p)

    # The peer: a code hook on fib's first instruction, same handlers, same regs view.
    addr = m.symbols.lookup_name("fib")
    engine = m.engine

    def peer(uc, address, size, user_data):
        regs = PtRegs(engine)
        noop_pre(p, regs)
        noop_post(p, regs, 0)
        regs.flush()

    engine.uc.hook_add(UC_HOOK_CODE, peer, begin=addr, end=addr)
    engine.flush_code(addr, 1)     # a hook added after translation needs the flush
    hooked = _median_call(m, FIB_N)
    kp_us = (probed - base) / hits * 1e6
    py_us = (python_path - base) / hits * 1e6
    peer_us = (hooked - base) / hits * 1e6
    return [(f"fib({FIB_N}): hits per call", hits, "probed calls"),
            ("kprobe hit, no-op pre+post (2 traps)", kp_us, "us per hit"),
            ("  the same on the Python reference path", py_us, "us per hit"),
            ("peer: UC_HOOK_CODE on the address", peer_us, "us per hit"),
            ("kprobe hit / peer hook", kp_us / peer_us, "ratio (target <= 2)")]


def _dormant_module(tmp):
    lines = [".text"]
    for i in range(1000):
        lines += [f".globl never_{i}", f"never_{i}:"] + ["  nop"] * 9 + ["  ret"]
    src = Path(tmp) / "dormant.S"
    src.write_text("\n".join(lines) + "\n")
    obj = Path(tmp) / "dormant.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    return obj


def _workload_time(m):
    m.boot()
    t = time.perf_counter()
    result = m.run()
    return time.perf_counter() - t, result.insns


def dormant_cost():
    if shutil.which("gcc") is None:
        return [("10,000 dormant probes", 0, "skipped: gcc not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        obj = _dormant_module(tmp)
        plain, with_probes = [], []
        for _ in range(REPEAT):
            m = Machine()
            m.load_module(obj)
            plain.append(_workload_time(m))
            m = Machine()
            k = Kprobes(m)
            m.load_module(obj)
            probes = [Kprobe(addr=m.symbols.lookup_name(f"never_{i}") + j)
                      for i in range(1000) for j in range(10)]
            k.register_kprobes(probes)
            assert len(k.probes()) == 10_000     # k.table also holds the trampoline
            with_probes.append(_workload_time(m))
    t0 = statistics.median(t for t, _ in plain)
    t1 = statistics.median(t for t, _ in with_probes)
    insns = plain[0][1]
    return [("workload throughput, no probes", insns / t0 / 1e6, "MIPS"),
            ("workload throughput, 10,000 dormant probes", insns / t1 / 1e6, "MIPS"),
            ("dormant / none throughput", t0 / t1, "ratio (target >= 0.95)")]


def run():
    return hit_cost() + dormant_cost()
