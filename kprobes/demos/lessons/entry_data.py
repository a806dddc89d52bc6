"""entry-data: an entry_handler and per-instance data.  A kretprobe on busy_sum with
data_size 16: the entry_handler writes the guest clock and the argument into ri->data,
the return handler reads them back and measures the call in guest clock ticks (the clock
is the instruction count, and probes do not move it).  The entry_handler declines busy2's
call by returning non-zero: that call's stack is left untouched."""

import struct

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, trap_counts

TARGET = "busy_sum"
TRACED = "busy1"          # the task whose calls the entry_handler keeps
DATA = struct.Struct("<QQ")   # ri->data: the clock at entry, the argument


def record():
    unprobed, m, k, rec = scenes.start(TARGET, design="task", fold=True)
    seen = {"entries": [], "returns": [], "vetoed": None}

    def data_lines(ri):
        start, n = DATA.unpack(ri.data)
        return [f"bytes  {bytes(ri.data).hex(' ')}",
                f"start  {start:,} (guest clock at entry)", f"n      {n}"]

    def entry_handler(ri, regs):
        task = m.current
        if task.comm != TRACED:
            seen["vetoed"] = {"task": str(task), "slot": regs.sp,
                              "ret_addr": m.mem.u64(regs.sp)}
            rec.step("entry_handler: declined", f"{task} enters {TARGET} after "
                     f"{rec.ran_since_step():,} guest instructions; the entry_handler keeps "
                     f"only {TRACED}'s calls, so it returns 1: pre_handler_kretprobe will put "
                     "the instance back on the free list and leave the return address "
                     "alone.", phase="E.veto", facts={"task": str(task), "value": 1})
            return 1
        DATA.pack_into(ri.data, 0, m.clock.now, regs.di)
        seen["entries"].append((str(task), m.clock.now, regs.di))
        rec.step("entry_handler", f"{task} enters {TARGET}({regs.di}) after "
                 f"{rec.ran_since_step():,} guest instructions. The entry_handler writes the "
                 f"guest clock, {m.clock.now:,}, and the argument into this instance's "
                 f"{len(ri.data)}-byte ri->data and returns 0: the call is tracked.",
                 phase="E.entry", facts={"task": str(task), "clock": m.clock.now,
                                         "n": regs.di, "value": 0},
                 extra={"title": "ri->data", "lines": data_lines(ri)})
        return 0

    def handler(ri, regs):
        start, n = DATA.unpack(ri.data)
        took = m.clock.now - start
        seen["returns"].append((str(m.current), start, n, took, regs.ax))
        rec.step("handler", f"{m.current}'s {TARGET}({n}) returns {regs.ax}. The handler "
                 f"reads ri->data back -- start {start:,}, n {n} -- and measures the call: "
                 f"{m.clock.now:,} - {start:,} = {took:,} guest clock ticks, other tasks' "
                 "turns included.", phase="R.handler",
                 facts={"start": start, "n": n, "took": took, "clock": m.clock.now,
                        "ax": regs.ax}, extra={"title": "ri->data", "lines": data_lines(ri)})

    rp = Kretprobe(symbol_name=TARGET, handler=handler, entry_handler=entry_handler,
                   data_size=DATA.size)

    def tell_register(rec, ev):
        rec.probe = ev.probe
        return ("register_kretprobe", f"A kretprobe on {rec.short(ev.addr)} with an "
                f"entry_handler and data_size = {rp.data_size}: each of its {rp.maxactive} "
                f"instances carries {rp.data_size} bytes of ri->data for the two handlers.",
                "arm", {"data_size": rp.data_size, "maxactive": rp.maxactive})

    def tell_fixup(rec, ev):
        vetoed = seen["vetoed"]
        if vetoed is None or "after" in vetoed:
            return None
        vetoed["after"] = m.mem.u64(vetoed["slot"])
        return ("stack untouched", f"{vetoed['task']}'s entry hit is over: its return "
                f"slot at {vetoed['slot']:#x} still holds {rec.short(vetoed['after'])}, and "
                f"{len(rp.free_instances)} of {rp.maxactive} instances are free (the other "
                f"is {TRACED}'s, in flight). This call will return "
                "without a trap and without a handler; it counts as an 'entry_handler' "
                "miss, not in nmissed.", "E.untouched",
                {"slot": vetoed["slot"], "value": vetoed["after"],
                 "free": len(rp.free_instances)})

    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler", "kprobes.singlestep",
              "kprobes.handler-returned", "kprobes.instance", "kprobes.swap")
    rec.narrators.update({"kprobes.register": tell_register, "kprobes.fixup": tell_fixup})
    rec.narrators["kprobes.disarm"] = lambda rec, ev: (
        "unregistered", f"unregister_kretprobe(): the byte {ev.opcode:02x} is back at "
        f"{rec.short(ev.addr)}.", "disarm", {"addr": ev.addr})

    with rec:
        rec.step("before", f"busy1 and busy2 both call {TARGET}; a kretprobe will time "
                 f"{TRACED}'s call from entry to return.", phase="before")
        k.register_kretprobe(rp)
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.handler-returned" and
                               ev.probe.internal)
        report = rp.miss_report()
        k.unregister_kretprobe(rp)
    probed = scenes.final_state(m)
    facts = {"entries": seen["entries"], "returns": seen["returns"],
             "vetoed": seen["vetoed"], "report": report, "nmissed": rp.nmissed,
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


def _duration(lesson):
    f = lesson.facts
    entry = lesson.first(phase="E.entry")
    ret = lesson.first(phase="R.handler")
    [(task, start, n, took, _ax)] = f["returns"]
    ok = start == entry["clock"] == entry["facts"]["clock"] and \
        took == ret["clock"] - entry["clock"] and n == entry["facts"]["n"] and \
        task == entry["facts"]["task"]
    return ok, (f"{task}: ri->data gave start {start:,}, n {n}; took {took:,} == "
                f"{ret['clock']:,} - {entry['clock']:,}")


def _untouched(lesson):
    v = lesson.facts["vetoed"]
    step = lesson.first(phase="E.untouched")
    pool = step["kprobes"]["pools"]["r:busy_sum+0x0"]
    ok = v["after"] == v["ret_addr"] and pool == {"free": 9, "used": 1, "nmissed": 0} and \
        lesson.facts["nmissed"] == 0 and lesson.facts["report"] == {"entry_handler": 1}
    return ok, (f"{v['task']}: slot {v['slot']:#x} {v['ret_addr']:#x} before and "
                f"{v['after']:#x} after; nmissed {lesson.facts['nmissed']}, "
                f"report {lesson.facts['report']}")


DEMO = Demo(
    name="entry-data",
    question="What can entry_handler decide, and how do the two handlers share data?",
    tier="S",
    confusions=(5,),
    record=record,
    claims=[
        Claim("ri->data carries the entry's clock and argument to the return handler; the "
              "duration is the clock difference", _duration),
        Claim("an entry_handler returning non-zero leaves the stack untouched; not in "
              "nmissed", _untouched),
        Claim("traps: 3 for the tracked call, 2 for the declined one (int3 3, #DB 2)",
              trap_counts(3, 2)),
        scenes.same_final_claim(),
    ],
    prose=("Modern kretprobes (2.6.25 on) have an entry_handler and data_size: each "
           "instance carries a private buffer from entry to return, which is how a call "
           "is timed. kpemu's clock is the guest's instruction count, so the figure is "
           "exact and the probes do not change it."),
    after=("The duration is guest time between entry and return of one call, however "
           "many other tasks ran in between; an entry_handler that returns non-zero "
           "makes the call invisible without touching its stack."),
)
