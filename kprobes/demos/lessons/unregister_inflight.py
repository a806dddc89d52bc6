"""unregister-inflight: the kretprobe goes while a call it hijacked is still inside the
function.  A kretprobe on busy_sum; busy1 enters it (its return address is the trampoline
now), and the kretprobe is unregistered before busy_sum returns.  The instance in flight
is orphaned (ri->rp = NULL) and stays in busy1's bucket; at the return the trampoline
finds it, runs no handler, frees it and resumes at the real caller."""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo

TARGET = "busy_sum"


def record():
    unprobed, m, k, rec = scenes.start(TARGET, design="task", fold=True)
    handled = []
    rp = Kretprobe(symbol_name=TARGET, handler=lambda ri, regs: handled.append(ri))
    facts = {}

    def tell_register(rec, ev):
        rec.probe = ev.probe
        return ("register_kretprobe", f"A kretprobe on {rec.short(ev.addr)}: "
                f"{rp.maxactive} instances, an entry kprobe on the first instruction.",
                "arm", {"addr": ev.addr})

    def tell_instance(rec, ev):
        ri = ev.instance
        if ev.what == "taken":
            facts["ret_addr"] = ri.ret_addr
            facts["slot"] = ri.stack_addr
            return ("instance taken", f"{rec.task_name()} enters {TARGET} after "
                    f"{rec.ran_since_step():,} guest instructions: an instance is taken and "
                    f"its return address {rec.short(ri.ret_addr)} at {ri.stack_addr:#x} "
                    "replaced by kretprobe_trampoline.", "E.instance",
                    {"ret_addr": ri.ret_addr, "slot": ri.stack_addr, "task": ri.task})
        if ev.what == "freed":
            return ("orphan freed", "recycle_rp_inst(): an instance without a kretprobe "
                    "has no free list to go back to, so it is freed; the bucket is empty "
                    "again.", "R.freed", {"what": ev.what, "task": ev.task})
        return None

    def tell_miss(rec, ev):
        if ev.cause != "orphaned":
            return None
        return ("orphan returned", f"{TARGET} returns {m.engine.reg('ax')} into "
                f"kretprobe_trampoline after {rec.ran_since_step():,} more guest "
                "instructions (other tasks ran in between). trampoline_probe_handler takes "
                "the head of the task's bucket: an orphan, ri->rp == NULL, so no handler "
                "runs; the unseen return is counted as 'orphaned' in the kretprobe's miss "
                f"report ({ev.probe.miss_report()}).", "R.orphan",
                {"cause": ev.cause, "ax": m.engine.reg("ax"),
                 "report": ev.probe.miss_report()})

    def tell_returned(rec, ev):
        if not ev.probe.internal or not ev.value:
            return None
        facts["resumed"] = ev.regs["ip"]
        return ("resume", f"The trampoline's pre_handler returns 1 with ip = "
                f"{rec.short(ev.regs['ip'])}, the ret_addr the orphan kept: busy_sum "
                "returns to its real caller as if nothing had been probed.", "resume",
                {"ip": ev.regs["ip"]})

    def tell_disarm(rec, ev):
        return ("unregister_kretprobe", f"unregister_kretprobe() while {TARGET} is still "
                f"running: the byte {ev.opcode:02x} is back at {rec.short(ev.addr)}, so "
                "no new call is caught.", "disarm", {"addr": ev.addr, "opcode": ev.opcode})

    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler", "kprobes.singlestep",
              "kprobes.fixup", "kprobes.swap")
    rec.narrators.update({"kprobes.register": tell_register,
                          "kprobes.instance": tell_instance, "kprobes.miss": tell_miss,
                          "kprobes.handler-returned": tell_returned,
                          "kprobes.disarm": tell_disarm})
    with rec:
        rec.step("before", f"A kretprobe on {TARGET}, which busy1 and busy2 call; the "
                 "lesson unregisters it while busy1's call is in flight.", phase="before")
        k.register_kretprobe(rp)
        # busy1's entry, after the step's fix-up
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup")
        k.unregister_kretprobe(rp)
        orphans = [ri for ri in k.kretprobes.instances() if ri.rp is None]
        facts["orphans"] = len(orphans)
        rec.step("orphaned", f"The instance in flight cannot be freed: {rec.task_name()}'s "
                 f"stack still says kretprobe_trampoline at {facts['slot']:#x}. It is "
                 f"orphaned instead "
                 f"-- ri->rp = NULL -- and stays in {rec.task_name()}'s bucket; the "
                 f"{rp.maxactive - 1} free instances are freed.", phase="orphaned",
                 facts={"orphans": len(orphans), "slot_value": m.mem.u64(facts["slot"])})
        # the trampoline's handler has set ip to the caller
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.handler-returned" and
                               ev.probe.internal)
    probed = scenes.final_state(m)
    facts.update({"handled": len(handled), "report": rp.miss_report(),
                  "orphans_returned": k.kretprobes.orphans_returned,
                  "same_final": scenes.same_final(unprobed, probed)})
    return rec.finish(), facts


def _orphaned(lesson):
    step = lesson.first(phase="orphaned")
    bucket = step["kprobes"]["bucket"]
    f = lesson.facts
    ok = f["orphans"] == 1 and [b["rp"] for b in bucket] == ["orphan"] and \
        bucket[0]["ret_addr"] == f["ret_addr"] and step["kprobes"]["pools"] == {}
    return ok, f"bucket after unregister: {[(b['rp'], b['ret']) for b in bucket]}"


def _resumed(lesson):
    f = lesson.facts
    return f["resumed"] == f["ret_addr"], \
        f"resumed at {f['resumed']:#x}, the saved ret_addr {f['ret_addr']:#x}"


def _no_handler(lesson):
    f = lesson.facts
    ok = f["handled"] == 0 and f["report"] == {"orphaned": 1} and f["orphans_returned"] == 1
    return ok, f"handler calls {f['handled']}, miss report {f['report']}"


def _freed(lesson):
    step = lesson.first(phase="R.freed")
    ok = step["kprobes"]["bucket"] == [] and lesson.final()["kprobes"]["bucket"] == []
    c = lesson.final()["counters"]
    ok = ok and (c["int3"], c["debug"]) == (2, 1)
    return ok, f"the bucket is empty; traps int3 {c['int3']}, #DB {c['debug']}"


DEMO = Demo(
    name="unregister-inflight",
    question="What happens to a call in flight when its kretprobe is unregistered?",
    tier="S",
    confusions=(5,),
    record=record,
    claims=[
        Claim("the instance in flight is orphaned (rp = NULL) and stays in the bucket",
              _orphaned),
        Claim("the return still resumes at the real caller", _resumed),
        Claim("no handler runs; the miss report counts it as orphaned", _no_handler),
        Claim("the orphan is freed; 3 traps in all", _freed),
        scenes.same_final_claim(),
    ],
    prose=("Unregistering a kretprobe cannot wait for every call it hijacked to return, "
           "nor put their return addresses back: it orphans their instances, and the "
           "trampoline, which stays armed for ever, takes care of them."),
    after=("The trampoline keeps working after every kretprobe is gone; a return that "
           "comes after unregister_kretprobe() runs no handler and is counted only as "
           "'orphaned'."),
)
