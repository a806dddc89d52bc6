"""kprobes: the cost of a hit, of registration, of a kprobe_events record, and of probes
that are never hit.

* A kprobe hit with no-op pre and post handlers (int3 + out-of-line single-step + #DB,
  the 2005 mechanism) against two emulator peers doing the same job with a Unicorn
  UC_HOOK_CODE on the one address and the same handler body (the no-op pre and post with
  a pt_regs view): one registered with raw ctypes uc_hook_add the way kpemu's engine
  registers its own hooks, one with the binding's hook_add.  Every side runs on a machine
  of its own (the peers on machines that never had a probe), all measured on the image's
  recursive fib through m.call, interleaved round by round, less an unprobed machine's
  time in the same round, per hit.  The hit on the Python reference trap path
  (k.arch.fastpath = False) is shown for scale.
* Registration: the cost per probe of a batch of 100 registered with 10 probes already
  registered and with 10,000 (on a generated module of ten-instruction functions that
  never run), the two interleaved, the batch unregistered again after each round.
* One kprobe_events event with two fetch arguments, enabled: its cost per hit over the
  unprobed run (the trap, the fetch and the record; the text is made only when read).
* Unprobed guest speed with those 10,000 probes registered on code that never runs vs a
  machine with none.
"""

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

from unicorn import UC_HOOK_CODE
from unicorn.unicorn_py3.unicorn import uclib

from bench._measure import (Spread, cost_rows, interleaved, net, net_ratio, per_round,
                            target)
from emu import Machine
from emu.cpu import PtRegs
from kprobes import Kprobe, Kprobes
from kprobes.events import KprobeEvents

FIB_N = 17
ROUNDS = 11
FUNCTIONS = 1100            # ten probe addresses each: 10,000 registered + batches of 100
BATCH = 100
REG_ROUNDS = 7

HOOK_CODE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32,
                             ctypes.c_void_p)


def fib_calls(n):
    return 1 if n < 2 else 1 + fib_calls(n - 1) + fib_calls(n - 2)


def noop_pre(p, regs):
    return 0


def noop_post(p, regs, flags):
    pass


def booted(*layers):
    m = Machine()
    for layer in layers:
        layer(m)
    m.boot()
    return m


def raw_code_hook(m, addr, body):
    """A UC_HOOK_CODE on `addr` registered with raw ctypes uc_hook_add, as emu.engine
    registers its own hooks; the callback object is kept on the machine."""
    cb = HOOK_CODE(body)
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(m.engine._uch, ctypes.byref(handle), UC_HOOK_CODE, cb, None,
                               ctypes.c_uint64(addr), ctypes.c_uint64(addr))
    assert status == 0, status
    m.bench_keep = getattr(m, "bench_keep", []) + [cb]
    m.engine.flush_code(addr, 1)        # a hook added after translation needs the flush


def hit_cost():
    hits = fib_calls(FIB_N)
    base = booted()
    probed = booted()
    kp_probe = Kprobe(symbol_name="fib", pre_handler=noop_pre, post_handler=noop_post)
    Kprobes(probed).register_kprobe(kp_probe)
    python = booted()
    py_k = Kprobes(python)
    py_k.arch.fastpath = False
    py_k.register_kprobe(Kprobe(symbol_name="fib", pre_handler=noop_pre,
                                post_handler=noop_post))
    raw, binding = booted(), booted()
    addr = raw.symbols.lookup_name("fib")

    def peer_body(engine):
        def body(*_args):
            regs = PtRegs(engine)
            noop_pre(None, regs)
            noop_post(None, regs, 0)
            regs.flush()
        return body

    raw_code_hook(raw, addr, peer_body(raw.engine))
    binding.engine.uc.hook_add(UC_HOOK_CODE, peer_body(binding.engine), begin=addr, end=addr)
    binding.engine.flush_code(addr, 1)
    sides = {name: (lambda m=m: m.call("fib", FIB_N)) for name, m in (
        ("base", base), ("kprobe", probed), ("python", python), ("raw", raw),
        ("binding", binding))}
    t = interleaved(sides, ROUNDS)
    assert kp_probe.nmissed == 0 and probed.extensions["kprobes"].arch.fast_hits > 0

    return [(f"fib({FIB_N}): hits per call", hits, "probed calls")] + cost_rows(
        t, "base", 1e6 / hits, "us per hit (min/med/max)", [
            ("kprobe hit, no-op pre+post (2 traps)", "kprobe"),
            ("  the same on the Python reference path", "python"),
            ("peer: raw ctypes UC_HOOK_CODE on the address", "raw"),
            ("peer: binding hook_add UC_HOOK_CODE", "binding")]) + [
        target("kprobe hit / raw ctypes peer", net_ratio(t, "kprobe", "raw", "base"), 1.5,
               "ratio"),
        target("kprobe hit / binding peer", net_ratio(t, "kprobe", "binding", "base"), 1.0,
               "ratio")]


def _dormant_module(tmp):
    lines = [".text"]
    for i in range(FUNCTIONS):
        lines += [f".globl never_{i}", f"never_{i}:"] + ["  nop"] * 9 + ["  ret"]
    src = Path(tmp) / "dormant.S"
    src.write_text("\n".join(lines) + "\n")
    obj = Path(tmp) / "dormant.o"
    subprocess.run(["gcc", "-c", "-o", str(obj), str(src)], check=True)
    return obj


def _dormant_probes(m, functions):
    return [Kprobe(addr=m.symbols.lookup_name(f"never_{i}") + j)
            for i in functions for j in range(10)]


def registration_and_dormant():
    """Registration at 10 and at 10,000 registered; then guest speed with the 10,000."""
    if shutil.which("gcc") is None:
        return [("registration and dormant probes", 0, "skipped: gcc not installed")]
    with tempfile.TemporaryDirectory() as tmp:
        obj = _dormant_module(tmp)
        few, many, plain = (booted(lambda m: m.load_module(obj)) for _ in range(3))
        k_few, k_many = Kprobes(few), Kprobes(many)
        k_few.register_kprobes(_dormant_probes(few, range(1)))              # 10
        k_many.register_kprobes(_dormant_probes(many, range(1000)))         # 10,000
        assert len(k_few.probes()) == 10 and len(k_many.probes()) == 10_000
        batch_fns = range(1000, 1000 + BATCH // 10)
        batches = {"at 10": (k_few, _dormant_probes(few, batch_fns)),
                   "at 10,000": (k_many, _dormant_probes(many, batch_fns))}

        def register(name):
            k, batch = batches[name]
            return lambda: k.register_kprobes(batch)

        times = {name: [] for name in batches}
        for r in range(REG_ROUNDS):
            for name in (list(batches) if r % 2 == 0 else list(batches)[::-1]):
                times[name].append(interleaved({name: register(name)}, 1)[name][0])
                k, batch = batches[name]
                k.unregister_kprobes(batch)
        reg = {name: Spread.of(v).scaled(1e6 / BATCH) for name, v in times.items()}
        flat = per_round(times, lambda i: times["at 10,000"][i] / times["at 10"][i])
        t = interleaved({"none": lambda: plain.call("fib", FIB_N + 3),
                         "dormant": lambda: many.call("fib", FIB_N + 3)}, ROUNDS)
        dormant = per_round(t, lambda i: t["none"][i] / t["dormant"][i])
    return [target("registration, 10 registered", reg["at 10"], 50, "us per probe"),
            target("registration, 10,000 registered", reg["at 10,000"], 50, "us per probe"),
            target("registration at 10,000 / at 10", flat, 1.25, "ratio (flat)"),
            target("guest speed with 10,000 dormant probes / none", dormant, 0.95,
                   "ratio", at_most=False)]


EVENT = "p:bench/fibargs fib n=%di:s64 depth=+0(%sp):x64"


def event_cost():
    hits = fib_calls(FIB_N)
    base = booted()
    m = booted()
    events = KprobeEvents(Kprobes(m))
    events.write(EVENT)
    events.enable()
    t = interleaved({"base": lambda: base.call("fib", FIB_N),
                     "event": lambda: m.call("fib", FIB_N)}, ROUNDS)
    assert events.buffer.written == hits * ROUNDS
    line = events.trace_lines()[-1]
    assert "fibargs: (fib+0x0/" in line and " n=1 depth=0x" in line, line
    return [target("kprobe_events hit, 2 fetch args, recorded",
                   net(t, "event", "base", 1e6 / hits), 3, "us per hit")]


def run():
    return hit_cost() + event_cost() + registration_and_dormant()
