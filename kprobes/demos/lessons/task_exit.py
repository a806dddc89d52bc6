"""task-exit: a task exits inside a probed function.  A kretprobe on do_exit, which never
returns: the first task of the workload to exit leaves an instance in flight, and
exit_thread()'s kprobe_flush_task() recycles it.  Recorded twice: design (b) leaves the
stack alone (the task's stack is about to be freed, nothing will pop that slot), design (a)
wrote the real return address back into it."""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import DESIGN_NAMES, Claim, Demo, Recorder

TARGET = "do_exit"


def record_design(design, unprobed):
    m, k = scenes.booted(design=design)
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    rec = Recorder(m, k, design=design)
    rec.watch(TARGET)
    rec.fold = True
    handled = []
    rp = Kretprobe(symbol_name=TARGET, handler=lambda ri, regs: handled.append(ri))
    seen = {}

    def slot_panel():
        value = m.mem.u64(seen["slot"])
        return {"title": "do_exit's return slot",
                "lines": [f"{seen['slot']:#x}: {value:016x} {rec.short(value)}",
                          f"ret_addr kept by the instance: {rec.short(seen['ret_addr'])}"]}

    def tell_instance(rec, ev):
        if ev.what != "taken" or "slot" in seen:
            return None
        ri = ev.instance
        seen.update(slot=ri.stack_addr, ret_addr=ri.ret_addr, task=rec.task_name())
        return ("do_exit entered", f"{rec.task_name()} calls do_exit(): an instance is taken "
                f"and the return address {rec.short(ri.ret_addr)} at {ri.stack_addr:#x} "
                "becomes kretprobe_trampoline. do_exit never returns, so nothing will "
                "ever pop that slot.", "E.instance",
                {"slot": ri.stack_addr, "ret_addr": ri.ret_addr, "task": rec.task_name()})

    def tell_flush(rec, ev):
        if "flushed" in seen:
            return None
        value = m.mem.u64(seen["slot"])
        seen.update(flushed=value, free=len(rp.free_instances))
        m.stop()
        if design == "task":
            what = ("recycles the instance and leaves the stack as it is: the slot still "
                    "holds kretprobe_trampoline, harmless, since the stack is freed with "
                    "the task")
        else:
            what = ("writes the instance's ret_addr back into its stack slot, then "
                    "recycles it: the slot holds the real return address again")
        return ("kprobe_flush_task", f"exit_thread() calls kprobe_flush_task({rec.task_name()}"
                f") (a hypercall here), which walks the task's instances: it {what}. "
                f"{len(rp.free_instances)} of {rp.maxactive} instances are free.", "flush",
                {"slot_value": value, "free": len(rp.free_instances),
                 "tramp": value == tramp}), slot_panel()

    def flush_narrator(rec, ev):
        told = tell_flush(rec, ev)
        if told is None:
            return None
        (title, text, phase, facts), extra = told
        rec.step(title, text, phase=phase, facts=facts, event="kprobes.flush", extra=extra)
        return None

    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler", "kprobes.singlestep",
              "kprobes.fixup", "kprobes.handler-returned", "kprobes.disarm", "kprobes.swap")
    rec.narrators["kprobes.register"] = lambda rec, ev: (
        "register_kretprobe", f"A kretprobe on {rec.short(ev.addr)}, kretprobe "
        f"{DESIGN_NAMES[design]}.", "arm", {"addr": ev.addr})
    rec.narrators["kprobes.instance"] = tell_instance
    rec.narrators["kprobes.flush"] = flush_narrator

    with rec:
        k.register_kretprobe(rp)
        scenes.run_until_stopped(m)
        k.unregister_kretprobe(rp)
    probed = scenes.final_state(m)
    facts = {"slot": seen["slot"], "ret_addr": seen["ret_addr"], "tramp": tramp,
             "flushed_value": seen["flushed"], "handled": len(handled),
             "task": seen["task"], "free": seen["free"], "maxactive": rp.maxactive,
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


def record():
    unprobed = scenes.unprobed_final()
    steps_b, facts_b = record_design("task", unprobed)
    steps_a, facts_a = record_design("stack", unprobed)
    return steps_b + steps_a, {"task": facts_b, "stack": facts_a}


def _recycled(lesson):
    out = []
    for design in ("task", "stack"):
        f = lesson.facts[design]
        if f["handled"] or f["free"] != f["maxactive"]:
            return False, f"design {design}: handlers {f['handled']}, free {f['free']}"
        out.append(f"{design}: {f['free']} of {f['maxactive']} free, no handler")
    return True, "; ".join(out)


def _stack(lesson):
    b, a = lesson.facts["task"], lesson.facts["stack"]
    ok = b["flushed_value"] == b["tramp"] and a["flushed_value"] == a["ret_addr"] and \
        a["slot"] == b["slot"] and a["ret_addr"] == b["ret_addr"]
    return ok, (f"slot {b['slot']:#x} after the flush: (b) {b['flushed_value']:#x} (the "
                f"trampoline), (a) {a['flushed_value']:#x} (ret_addr)")


def _same(lesson):
    for design in ("task", "stack"):
        ok, detail = lesson.facts[design]["same_final"]
        if not ok:
            return False, f"design {design}: {detail}"
    return True, "both designs: " + lesson.facts["task"]["same_final"][1]


DEMO = Demo(
    name="task-exit",
    question="What happens to a return probe's instance when its task exits?",
    tier="S",
    confusions=(5,),
    record=record,
    claims=[
        Claim("kprobe_flush_task recycles the instance, no handler runs (both designs)",
              _recycled),
        Claim("design (b) leaves the trampoline in the stack; design (a) wrote the real "
              "address back", _stack),
        Claim("final state == the unprobed run's, in both designs", _same),
    ],
    prose=("A call that never returns -- do_exit -- keeps its instance for ever unless "
           "someone takes it back. That is kprobe_flush_task(), which exit_thread() calls "
           "for the exiting task."),
    after=("Without the flush, every exited task would leak one instance per probed "
           "function it died in, until the pool ran dry and the kretprobe missed "
           "everything."),
)
