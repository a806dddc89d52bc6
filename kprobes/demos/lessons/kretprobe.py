"""kretprobe: one probed return, design (b) -- a kretprobe on sys_mkdir, which the workload's
mkdir thread calls through int $0x80, followed from the entry trap to the resume in the
caller, with a backtrace taken inside the handler shown raw and resolved."""

from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, trap_counts
from kprobes.demos.lessons import returns

DESIGN = "task"


def _in_handler(rec, ri, regs):
    m = rec.m
    panel, raw, resolved = returns.trace_panel(m, regs, "BACKTRACE from inside the handler")
    rec.step("backtrace in the handler", f"A backtrace taken here, raw, starts at "
             f"{raw[0].split('/')[0]}: the caller's return address was replaced, so the "
             f"frame chain names the trampoline. An unwinder that knows kretprobes (Linux "
             f"5.15 on) finds this task's instance and prints its ret_addr, "
             f"{resolved[0].split('/')[0]}, instead.", phase="R.handler",
             facts={"raw": raw, "resolved": resolved}, extra=panel)


def record():
    return returns.record_return(DESIGN, in_handler=_in_handler)


def _entry_two_traps(lesson):
    n = [s["vector"] for s in lesson.steps if s["trap_no"] is not None and
         s["phase"] in ("E.int3", "E.db")]
    return n == [3, 1], f"entry traps by vector: {n}"


def _swap(lesson):
    f = lesson.facts
    swap = lesson.first(event="kprobes.swap")["facts"]
    entry = lesson.first(phase="E.int3")
    ok = (swap["slot"] == entry["regs"]["sp"] == f["slot"] and swap["old"] == f["ret_addr"]
          and swap["new"] == f["tramp"])
    row = next(r for r in lesson.first(event="kprobes.swap")["stack"]
               if r["addr"] == swap["slot"])
    ok = ok and row["value"] == f["tramp"] and row["note"].startswith("was ")
    return ok, (f"slot {swap['slot']:#x} (sp at the entry trap {entry['regs']['sp']:#x}): "
                f"{swap['old']:#x} -> {swap['new']:#x}")


def _instance(lesson):
    f = lesson.facts
    taken = lesson.first(event="kprobes.instance", phase="E.pre/swap")
    bucket = taken["kprobes"]["bucket"]
    ok = (taken["facts"]["free"] == f["maxactive"] - 1 and
          bucket and bucket[0]["ret_addr"] == f["ret_addr"] and
          taken["facts"]["task"] == f["task"])
    return ok, (f"free {f['maxactive']} -> {taken['facts']['free']}, head of the bucket "
                f"of {taken['kprobes']['task']}: {bucket[0]['ret'] if bucket else None}")


def _ret_to_tramp(lesson):
    f = lesson.facts
    step = lesson.first(phase="R.ret")
    ok = (step["where"]["ip"] == f["tramp"] and step["facts"]["byte"] == 0xCC and
          lesson.first(phase="before")["facts"]["tramp_original"] == 0x90 and
          step["regs"]["sp"] == f["slot"] + 8)
    return ok, (f"ip {step['where']['ip']:#x}, byte {step['facts']['byte']:02x}, "
                f"sp {step['regs']['sp']:#x}")


def _handler_ax(lesson):
    f = lesson.facts
    resume = lesson.first(phase="resume", event="note")
    return f["ax"] == resume["regs"]["ax"], \
        f"handler saw ax {f['ax']:#x}, the caller gets {resume['regs']['ax']:#x}"


def _no_step(lesson):
    after = lesson.steps[lesson.steps.index(lesson.first(phase="R.int3")):]
    steps = [s for s in after if s["event"] in ("kprobes.singlestep",) or
             s["vector"] == 1]
    ret = lesson.first(event="kprobes.handler-returned")
    return not steps and ret["facts"]["value"] == 1, \
        f"{len(steps)} single-step steps after the trampoline's int3, pre_handler " \
        f"returned {ret['facts']['value']}"


def _resume(lesson):
    f = lesson.facts
    resume = lesson.first(phase="resume", event="note")
    return resume["where"]["ip"] == f["ret_addr"], \
        f"resumed at {resume['where']['ip']:#x}, ret_addr {f['ret_addr']:#x}"


def _recycled(lesson):
    f = lesson.facts
    rec = lesson.first(event="kprobes.instance", phase="R.handler")
    return rec["facts"]["free"] == f["maxactive"] and f["nmissed"] == 0, \
        f"free list back to {rec['facts']['free']}, nmissed {f['nmissed']}"


def _backtrace(lesson):
    f = lesson.facts
    step = next(s for s in lesson.steps if s["title"] == "backtrace in the handler")
    raw, resolved = step["facts"]["raw"], step["facts"]["resolved"]
    ok = raw[0].startswith(returns.TRAMPOLINE + "+") and \
        resolved[0].split("/")[0] == lesson.first(phase="resume", event="note")[
            "where"]["sym"] and raw[1:] == resolved[1:]
    return ok, f"raw #0 {raw[0]}, resolved #0 {resolved[0]} (ret_addr {f['ret_addr']:#x})"


DEMO = Demo(
    name="kretprobe",
    question="One probed return, design (b): how does a kretprobe catch a function's "
             "return?",
    tier="C",
    confusions=(2, 4),
    record=record,
    claims=[
        Claim("traps == {int3: 2, debug: 1}: 3 for the probed call", trap_counts(2, 1)),
        Claim("the entry kprobe takes 2 traps: int3 then #DB", _entry_two_traps),
        Claim("arch_prepare_kretprobe swaps the slot at the entry sp: caller -> "
              "kretprobe_trampoline", _swap),
        Claim("the instance comes off the free list (maxactive -> maxactive - 1) to the "
              "head of the current task's bucket", _instance),
        Claim("ret pops the trampoline: ip == kretprobe_trampoline, whose nop (90) is cc",
              _ret_to_tramp),
        Claim("the handler's regs.ax is the value the caller receives", _handler_ax),
        Claim("trampoline_probe_handler returns 1: no single-step at the return", _no_step),
        Claim("execution resumes at the instance's ret_addr", _resume),
        Claim("the instance is recycled (free list full again), nmissed == 0", _recycled),
        Claim("the raw backtrace shows the trampoline where the resolved one shows the "
              "caller", _backtrace),
        scenes.same_final_claim(),
    ],
    prose=("A kretprobe on sys_mkdir (maxactive 4), design (b) as in Linux 2.6.13: the "
           "entry probe hijacks the return address, the function returns into "
           "kretprobe_trampoline, and the trampoline's int3 runs the handler with the "
           "return value in rax."),
    after=("Three traps: int3 and #DB at the entry (an ordinary kprobe whose pre_handler "
           "swaps the return address), one int3 at the trampoline, and no step there "
           "because trampoline_probe_handler sets ip itself. A backtrace taken before the "
           "return is resolved shows kretprobe_trampoline -- kpemu demo stacktrace."),
)
