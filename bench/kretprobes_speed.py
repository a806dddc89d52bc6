"""kretprobes: the cost of a probed call, of deep recursion, and of an instance in flight.

* A kretprobe hit (entry + return, no-op handler) on the image's fib against the
  emulator-peer way of doing the same job: a UC_HOOK_CODE on the entry that reads the
  return address at [rsp] and one on each `ret` of the function that takes it back and
  calls the same no-op handler with a pt_regs view -- registered with raw ctypes
  uc_hook_add (as emu.engine registers its hooks) and with the binding's hook_add.  Both
  June 2005 designs: "task" (3 traps per call) and "stack" (4 traps), and "task" on the
  Python reference trap path for scale.  Every side on a machine of its own (a peer never
  runs where a kretprobe is armed), interleaved round by round, less an unprobed
  machine's time in the same round, per probed call.
* Recursion 100,000 deep under one kretprobe with maxactive 100,001 (on a 4 MiB m.call
  stack): it completes, every frame reported.
* What an instance costs, measured honestly: tracemalloc from before registration to the
  deepest point of a 10,000-deep recursion (the pool kpemu pre-allocates plus what an
  instance in flight holds: its addresses, its place in the task's bucket and the used
  list), per instance.
"""

import ctypes
import shutil
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from unicorn import UC_HOOK_CODE

from bench._measure import cost_rows, interleaved, net_ratio, target
from bench.kprobes_speed import booted, raw_code_hook
from emu import Machine
from emu.cpu import PtRegs
from kprobes import Kprobe, Kprobes, Kretprobe

FIB_N = 15
ROUNDS = 11
DEPTH = 100_000
MEMORY_DEPTH = 10_000
TARGETS = Path(__file__).resolve().parent.parent / "tests" / "kprobes" / "targets"


def fib_calls(n):
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def noop(ri, regs):
    pass


def _kretprobed(design, fastpath=True):
    m = Machine()
    k = Kprobes(m, kretprobe_design=design)
    k.arch.fastpath = fastpath
    m.boot()
    rp = Kretprobe(symbol_name="fib", handler=noop, maxactive=64)
    k.register_kretprobe(rp)
    return m, rp


def _peer(add_hook):
    """A clean machine with the peer's hooks on fib: the entry pushes [rsp], each `ret`
    pops it and calls the handler (every return is seen, the outermost too)."""
    m = booted()
    fib = m.symbols.get("fib")
    engine = m.engine
    rets = [i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(fib.addr, fib.size), fib.addr) if i.mnemonic == "ret"]
    pending = []
    reported = [0]
    read_u64 = m.mem.u64

    def entry(*_args):
        pending.append(read_u64(PtRegs(engine).sp))

    def ret(*_args):
        pending.pop()
        regs = PtRegs(engine)
        noop(None, regs)
        regs.flush()
        reported[0] += 1

    add_hook(m, fib.addr, entry)
    for addr in rets:
        add_hook(m, addr, ret)
    return m, reported


def _binding_hook(m, addr, body):
    m.engine.uc.hook_add(UC_HOOK_CODE, body, begin=addr, end=addr)
    m.engine.flush_code(addr, 1)


def per_call():
    calls = fib_calls(FIB_N)
    base = booted()
    task, rp_task = _kretprobed("task")
    stack, rp_stack = _kretprobed("stack")
    python, _rp = _kretprobed("task", fastpath=False)
    raw, raw_reported = _peer(raw_code_hook)
    binding, _reported = _peer(_binding_hook)
    sides = {name: (lambda m=m: m.call("fib", FIB_N)) for name, m in (
        ("base", base), ("task", task), ("stack", stack), ("python", python), ("raw", raw),
        ("binding", binding))}
    t = interleaved(sides, ROUNDS)
    assert rp_task.returns == rp_stack.returns == raw_reported[0] == calls * ROUNDS
    assert rp_task.nmissed == rp_stack.nmissed == 0

    return [(f"kretprobe on fib({FIB_N}): probed calls", calls, "calls")] + cost_rows(
        t, "base", 1e6 / calls, "us per call (min/med/max)", [
            ("kretprobe call, design 'task' (3 traps)", "task"),
            ("  the same on the Python reference path", "python"),
            ("kretprobe call, design 'stack' (4 traps)", "stack"),
            ("peer: raw ctypes entry + ret code hooks", "raw"),
            ("peer: binding entry + ret code hooks", "binding")]) + [
        target("kretprobe (task) / raw ctypes peer", net_ratio(t, "task", "raw", "base"), 1.5,
               "ratio"),
        ("kretprobe (task) / binding peer", net_ratio(t, "task", "binding", "base"), "ratio")]


def _ret_targets(tmp):
    obj = Path(tmp) / "ret_targets.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(TARGETS / "ret_targets.S")], check=True)
    return obj


def deep_recursion():
    if shutil.which("gcc") is None:
        return [("recursion 100,000 deep", 0, "skipped: gcc not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        m = booted(lambda m: m.load_module(_ret_targets(tmp)))
        k = Kprobes(m)
        rp = Kretprobe(symbol_name="rdepth", handler=noop, maxactive=DEPTH + 1)
        k.register_kretprobe(rp)
        t = time.perf_counter()
        depth = m.call("rdepth", DEPTH, stack_size=4 << 20, max_insns=10**8)
        wall = time.perf_counter() - t
        reported = rp.returns
        assert depth == DEPTH and reported == DEPTH + 1 and rp.nmissed == 0
        k.unregister_kretprobe(rp)
        memory = _instance_memory(m, k)
    return [("recursion 100,000 deep: frames reported", reported, "of 100,001, 0 missed"),
            ("recursion 100,000 deep: wall time", wall, "s"),
            target("kretprobe instance (pool + in flight)", memory, 160,
                   "bytes each (tracemalloc)")]


def _instance_memory(m, k):
    """Bytes per instance, tracemalloc'd from before registration to the moment all
    MEMORY_DEPTH + 1 instances are in flight (a kprobe on the deepest call's base case;
    the kretprobe itself has only a handler, the common case)."""
    at_deepest = []
    tail = m.symbols.get("rdepth_ret")           # rdepth's code after its call
    base_case = next(i.address for i in Cs(CS_ARCH_X86, CS_MODE_64).disasm(
        m.read(tail.addr, tail.size), tail.addr) if i.mnemonic == "xor")
    k.register_kprobe(Kprobe(addr=base_case, pre_handler=lambda p, regs: at_deepest.append(
        tracemalloc.get_traced_memory()[0]) and 0))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rp = Kretprobe(symbol_name="rdepth", handler=noop, maxactive=MEMORY_DEPTH + 1)
        k.register_kretprobe(rp)
        m.call("rdepth", MEMORY_DEPTH, stack_size=1 << 20, max_insns=10**8)
    finally:
        tracemalloc.stop()
    assert len(at_deepest) == 1 and rp.returns == MEMORY_DEPTH + 1
    k.unregister_kretprobe(rp)
    return (at_deepest[0] - before) / (MEMORY_DEPTH + 1)


def run():
    return per_call() + deep_recursion()
