"""exec-bug: the 2005 known problem, reproduced.  A kretprobe on flush_old_exec, which is
still running when it calls flush_thread() on the exec path.  As 2.6.13 shipped
(flush_on_exec), flush_thread() calls kprobe_flush_task(current) and recycles the
instance of the call in flight; its return then reaches the trampoline with no instance
for the task, and the kretprobe BUG fires.  Then the later fix (2.6.15: flush only on
exit), where the handler fires normally."""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder

TARGET = "flush_old_exec"
OOPS_LINES = 12          # the oops report's head: message, registers, call trace


def record_variant(flush_on_exec, unprobed):
    m, k = scenes.booted(flush_on_exec=flush_on_exec)
    rec = Recorder(m, k, design="task")
    rec.watch(TARGET)
    rec.fold = True
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    seen = {"handled": [], "flushes": []}
    variant = "2.6.13" if flush_on_exec else "fixed"

    def handler(ri, regs):
        seen["handled"].append((str(m.current), regs.ax, ri.ret_addr))
        rec.step("handler", f"{TARGET} returns {regs.ax} through the trampoline, which finds "
                 f"the instance at the head of {m.current}'s bucket (the task is called "
                 f"{m.current.comm!r} now: exec renamed it) and runs the handler; ip = "
                 f"{rec.short(ri.ret_addr)}.", phase="R.handler",
                 facts={"variant": variant, "ax": regs.ax, "task": str(m.current),
                        "ret_addr": ri.ret_addr})
        m.stop()

    rp = Kretprobe(symbol_name=TARGET, handler=handler)

    def tell_register(rec, ev):
        rec.probe = ev.probe
        if flush_on_exec:
            how = ("as in 2.6.13, kprobe_flush_task() is called from flush_thread() on the "
                   "exec path as well as from exit_thread()")
        else:
            how = ("with the later fix (2.6.15): only exit_thread() flushes; on the exec "
                   "path kprobe_flush_task() does nothing")
        return (f"register ({variant})", f"A kretprobe on {rec.short(ev.addr)}; {how}.",
                "arm", {"variant": variant})

    def tell_instance(rec, ev):
        ri = ev.instance
        if ev.what != "taken":
            return None
        seen["slot"] = ri.stack_addr
        return ("instance taken", f"{rec.task_name()} execs: it enters {TARGET} after "
                f"{rec.ran_since_step():,} guest instructions, an instance is taken and the "
                f"return address {rec.short(ri.ret_addr)} becomes kretprobe_trampoline. "
                f"{TARGET} will call flush_thread() before it returns.", "E.instance",
                {"variant": variant, "ret_addr": ri.ret_addr, "task": rec.task_name()})

    def tell_hypercall(rec, ev):
        if ev.name != "HC_KPROBE_FLUSH_TASK":
            return None
        caller = m.symbols.symbol_at(ev.args[1])
        if caller is None or caller.name != "flush_thread":
            return None
        mine = [ri for ri in k.kretprobes.instances() if ri.task == m.current_addr]
        seen["flushes"].append(len(mine))
        if flush_on_exec:
            return None          # told by the flush event, once it has recycled
        return ("flush_thread", f"flush_thread() calls kprobe_flush_task({rec.task_name()}), "
                f"which now returns at once on the exec path: the task keeps its "
                f"{len(mine)} instance, the one of {TARGET}'s call in flight.", "flush",
                {"variant": variant, "kept": len(mine)})

    def tell_flush(rec, ev):
        if ev.caller != "flush_thread":
            return None
        value = m.mem.u64(seen["slot"])
        return ("flush_thread", f"flush_thread() calls kprobe_flush_task({rec.task_name()}), "
                f"which recycles every instance of the task -- {TARGET}'s too, though its "
                f"call has not returned: its return slot still holds "
                f"{rec.short(value)}.", "flush",
                {"variant": variant, "slot_value": value, "tramp": value == tramp,
                 "free": len(rp.free_instances)})

    def tell_trap(rec, ev):
        if not flush_on_exec or ev.probe is None or not ev.probe.internal:
            return None
        return ("int3 at the trampoline", f"{TARGET} returns into kretprobe_trampoline: "
                f"trampoline_probe_handler walks {rec.task_name()}'s bucket and finds no "
                "instance -- it was recycled on the exec path.", "R.int3",
                {"variant": variant, "ip": ev.ip, "vector": 3})

    rec.quiet("kprobes.arm", "kprobes.handler", "kprobes.singlestep", "kprobes.fixup",
              "kprobes.handler-returned", "kprobes.disarm", "kprobes.swap")
    rec.narrators.update({"kprobes.register": tell_register,
                          "kprobes.instance": tell_instance, "hypercall": tell_hypercall,
                          "kprobes.flush": tell_flush, "kprobes.trap": tell_trap})
    facts = {"variant": variant}
    with rec:
        k.register_kretprobe(rp)
        result = m.run(max_insns=scenes.RUN_LIMIT)
        facts["reason"] = result.reason
        if result.reason == "oops":
            oops = m.oops
            facts["oops"] = oops.message
            lines = oops.format().splitlines()
            lines = lines[:lines.index("Console (last lines):")][:OOPS_LINES]
            rec.step("kernel BUG", f"The BUG check fires: {oops.message}. The machine stops "
                     "with the oops report below; the workload cannot go on.", phase="oops",
                     facts={"variant": variant, "message": oops.message, "task": oops.task},
                     extra={"title": "oops", "lines": lines})
        else:
            k.unregister_kretprobe(rp)
    facts.update({"handled": seen["handled"], "flushed": rp.flushed,
                  "returns": rp.returns, "flushes": seen["flushes"]})
    if result.reason != "oops":
        facts["same_final"] = scenes.same_final(unprobed, scenes.final_state(m))
    return rec.finish(), facts


def record():
    unprobed = scenes.unprobed_final()
    steps_bug, bug = record_variant(True, unprobed)
    steps_fix, fix = record_variant(False, unprobed)
    return steps_bug + steps_fix, {"2.6.13": bug, "fixed": fix,
                                   "same_final": fix["same_final"]}


def _flushed_in_flight(lesson):
    f = lesson.facts["2.6.13"]
    step = next(s for s in lesson.select(phase="flush") if s["facts"]["variant"] == "2.6.13")
    ok = f["flushes"] == [1] and f["flushed"] == 1 and step["facts"]["tramp"] and \
        step["kprobes"]["bucket"] == []
    return ok, (f"flush_thread's flush found {f['flushes']} instance(s) of the task and "
                f"recycled {f['flushed']}; the slot still held the trampoline")


def _bug(lesson):
    f = lesson.facts["2.6.13"]
    oops = lesson.first(phase="oops")
    ok = f["reason"] == "oops" and f["returns"] == 0 and f["handled"] == [] and \
        f["oops"].startswith("kernel BUG: kretprobe BUG: return through "
                             "kretprobe_trampoline with no instance for task") and \
        oops["facts"]["task"] in f["oops"]
    return ok, f"run ended {f['reason']!r}: {f['oops']}"


def _fixed(lesson):
    f = lesson.facts["fixed"]
    ok = f["flushes"] == [1] and f["flushed"] == 0 and len(f["handled"]) == 1 and \
        f["handled"][0][1] == 0 and f["handled"][0][0].startswith("true-")
    return ok, f"handler calls {f['handled'][:1]}; flushed {f['flushed']}"


DEMO = Demo(
    name="exec-bug",
    question="Why did a return probe on the exec path BUG in 2.6.13?",
    tier="S",
    confusions=(5,),
    record=record,
    claims=[
        Claim("2.6.13: flush_thread's flush recycles the instance of the call in flight",
              _flushed_in_flight),
        Claim("its return finds no instance: the kretprobe BUG, no handler", _bug),
        Claim("with the fix (flush only on exit) the handler fires normally", _fixed),
        scenes.same_final_claim("with the fix, final state == the unprobed run's"),
    ],
    prose=("Design (b) keys instances by task, so when a task's old image goes on exec, "
           "2.6.13 recycled its instances from flush_thread() -- including the one of the "
           "exec call still on the stack. The 2005 documentation called exec handled; "
           "here is what it did."),
    after=("Design (a) did not have this problem: its flush wrote the real return "
           "address back into the stack. The fix that followed keeps design (b) and "
           "flushes on exit only."),
)
