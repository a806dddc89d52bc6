"""kprobe: one hit, end to end -- a probe on sys_getpid+0 while the workload runs."""

from kprobes import Kprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, trap_counts

TARGET = "sys_getpid"


def record():
    unprobed, m, k, rec = scenes.start(TARGET)
    fn = m.symbols.get(TARGET)
    seen = {}

    def pre(p, regs):
        seen["pre_ip"] = regs.ip
        return 0

    def post(p, regs, flags):
        seen["post_ip"] = regs.ip
        seen["post_flags"] = flags

    p = Kprobe(symbol_name=TARGET, pre_handler=pre, post_handler=post)
    with rec:
        rec.step("before", f"The workload is about to run. {TARGET} starts at {fn.addr:#x}; "
                 "no probe yet, nothing armed.", phase="before",
                 facts={"addr": fn.addr})
        k.register_kprobe(p)
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup")
        scenes.step_out(m, fn)
        ret = m.engine.reg("ax")
        rec.step("returned", f"{TARGET} returned {ret} (the pid of {rec.task_name()}) to "
                 f"{rec.short(m.engine.reg('ip'))}, as it does unprobed: the probe's whole "
                 "work happened between the two traps.", phase="return",
                 facts={"ax": ret})
    probed = scenes.final_state(m)
    facts = {"addr": p.addr, "slot": p.ainsn.slot, "length": p.ainsn.length,
             "pre_ip": seen.get("pre_ip"), "post_ip": seen.get("post_ip"),
             "post_flags": seen.get("post_flags"),
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


def _pre_ip(lesson):
    f = lesson.facts
    step = lesson.first(event="kprobes.handler", phase="pre")
    return (f["pre_ip"] == f["addr"] + 1 == step["facts"]["regs_ip"],
            f"pre_handler saw ip {f['pre_ip']:#x}, probe at {f['addr']:#x}")


def _post_in_slot(lesson):
    f = lesson.facts
    inside = f["slot"] <= f["post_ip"] < f["slot"] + 16
    return inside and f["post_ip"] == f["slot"] + f["length"], (
        f"post_handler saw ip {f['post_ip']:#x}, slot {f['slot']:#x} + {f['length']}")


def _one_slot_insn(lesson):
    step = lesson.first(event="kprobes.trap", vector=1)
    return step["counters"]["slot_insns"] == 1, \
        f"{step['counters']['slot_insns']} instruction(s) ran in the slot"


def _dr6_bs(lesson):
    db = lesson.first(event="kprobes.trap", vector=1)["facts"]
    return db["bs"] == 1, f"DR6 = {db['dr6']:#x}"


def _tf_set_then_cleared(lesson):
    ss = lesson.first(event="kprobes.singlestep")
    fix = lesson.first(event="kprobes.fixup")
    ok = ss["flags"] == {"TF": 1, "IF": 0} and fix["flags"]["TF"] == 0 and \
        fix["flags"]["IF"] == lesson.first(phase="int3")["flags"]["IF"]
    return ok, f"step prepared {ss['flags']}, resumed {fix['flags']}"


def _resume_addr(lesson):
    f = lesson.facts
    fix = lesson.first(event="kprobes.fixup")
    return fix["where"]["ip"] == f["addr"] + f["length"], \
        f"resumed at {fix['where']['ip']:#x} = {f['addr']:#x} + {f['length']}"


DEMO = Demo(
    name="kprobe",
    question="One hit, end to end: what happens between the int3 and the return?",
    tier="C",
    confusions=(1, 2),
    record=record,
    claims=[
        Claim("traps == {int3: 1, debug: 1} for the one hit", trap_counts(1, 1)),
        Claim("pre_handler's regs.ip == probe address + 1", _pre_ip),
        Claim("post_handler's regs.ip is in the slot, just past the copy", _post_in_slot),
        Claim("exactly one guest instruction ran in the slot", _one_slot_insn),
        Claim("the #DB says single-step: DR6.BS is set", _dr6_bs),
        Claim("the step runs with TF=1 IF=0; resume clears TF and restores IF",
              _tf_set_then_cleared),
        Claim("resume_execution puts ip at probe address + instruction length",
              _resume_addr),
        scenes.same_final_claim(),
    ],
    prose=("A kprobe on the first instruction of sys_getpid, hit once by the workload's "
           "getpid() system call. Watch the two traps: the int3 that replaced the first "
           "byte, and the debug trap after the displaced instruction ran alone in its "
           "slot."),
    after=("The pre_handler's ip is one past the probe address because int3 is a trap; "
           "the post_handler runs with ip still in the slot, long before the function "
           "returns -- a return value needs a kretprobe (kpemu demo kretprobe)."),
)
