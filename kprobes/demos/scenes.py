"""What the demos share: a booted machine, running the workload to a point the lesson
chose, stepping a function out, and the unprobed run every probed one is compared with.

Only the public API: Machine, Kprobes, m.run(max_insns=...), and m.stop().
"""

import copy
import functools

from emu import Machine
from kprobes import Kprobes
from kprobes.demos.lesson import Claim, LessonError, Recorder

RUN_LIMIT = 5_000_000      # no lesson needs more of the workload than this
STEP_LIMIT = 10_000        # nor more single instructions to leave a function


def booted(design="task", flush_on_exec=False):
    """A machine booted to the start of the workload, with kprobes installed."""
    m = Machine()
    k = Kprobes(m, kretprobe_design=design, flush_on_exec=flush_on_exec)
    m.boot()
    return m, k


def start(watch, design=None, fold=False):
    """How most lessons begin: the unprobed run's final state, a booted machine with
    kprobes, and a recorder watching function `watch` (folding plain runs when `fold`):
    (unprobed, m, k, rec)."""
    unprobed = unprobed_final()
    m, k = booted(design=design or "task")
    rec = Recorder(m, k, design=design)
    rec.watch(watch)
    rec.fold = fold
    return unprobed, m, k, rec


def run_until_stopped(m, limit=RUN_LIMIT):
    """Run the workload until something calls m.stop(); a lesson whose moment never
    comes fails."""
    result = m.run(max_insns=limit)
    if result.reason != "stopped":
        raise LessonError(f"the lesson's moment never came: the run ended with "
                          f"{result.reason!r} after {result.insns:,} instructions")
    return result


def run_until_event(m, stop_at, limit=RUN_LIMIT):
    """Run the workload until a mechanism event for which stop_at(event) holds (a clean
    point to stop at, e.g. a kprobes.fixup), then stop there."""
    def watch(event):
        if stop_at(event):
            m.stop()
    m.observers.append(watch)
    try:
        return run_until_stopped(m, limit)
    finally:
        m.observers.remove(watch)


def step_until(m, done, limit=STEP_LIMIT):
    """Run one instruction at a time until done(ip) holds."""
    for _ in range(limit):
        if done(m.engine.reg("ip")):
            return
        result = m.run(max_insns=1)
        if result.reason not in ("limit", "stopped"):
            raise LessonError(f"the run ended with {result.reason!r} while the lesson "
                              "stepped")
    raise LessonError(f"no end after {limit} single steps")


def step_out(m, fn):
    """Single-step until ip leaves function `fn` (a Symbol): just after its ret."""
    step_until(m, lambda ip: not fn.addr <= ip < fn.addr + fn.size)


def final_state(m):
    """Run to power-off; what a probed run must share with the unprobed one."""
    result = m.run(max_insns=RUN_LIMIT * 4)
    return {"reason": result.reason, "exit_code": m.exit_code, "clock": m.clock.now,
            "console": m.console, "regs": m.regs_dict()}


def unprobed_final():
    """The final state of the same workload on a machine without kprobes (the runs are
    deterministic, so it is the run every probed one must match; it is run once per
    process and each caller gets its own copy)."""
    return copy.deepcopy(_unprobed_final())


@functools.lru_cache(maxsize=1)
def _unprobed_final():
    m = Machine()
    m.boot()
    return final_state(m)


def same_final(unprobed, probed):
    """(ok, detail) for the claim "final state == the unprobed run's"."""
    diff = [key for key in unprobed if unprobed[key] != probed[key]]
    if diff:
        return False, "differs in " + ", ".join(diff)
    return True, (f"power-off at clock {probed['clock']:,}, exit code {probed['exit_code']}, "
                  f"{len(probed['console'])} console bytes, all registers: identical")


def run_until(m, done, chunk=1_000, limit=RUN_LIMIT):
    """Run the workload `chunk` instructions at a time until done() holds (a line on the
    console, say); a lesson whose moment never comes fails."""
    ran = 0
    while not done():
        if ran >= limit:
            raise LessonError(f"the lesson's moment never came in {ran:,} instructions")
        result = m.run(max_insns=chunk)
        ran += result.insns
        if result.reason not in ("limit", "stopped"):
            raise LessonError(f"the run ended with {result.reason!r} before the lesson's "
                              "moment")


def same_final_claim(text="final state == the unprobed run's"):
    """The claim every lesson that leaves the workload running makes, over its fact
    "same_final" (same_final()'s answer)."""
    return Claim(text, lambda lesson: tuple(lesson.facts["same_final"]))
