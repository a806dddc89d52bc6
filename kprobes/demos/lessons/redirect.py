"""redirect: a pre_handler that returns 1 -- it has set regs.ip to another function itself,
so kprobes does not single-step the probed instruction and calls no post_handler.

A kprobe on mix_add (v + 0x9e3779b9) whose pre_handler sends the call to mix_rol (v
rotated left by 17), which takes the same argument; the lesson calls mix_add(1) through
m.call and compares with both functions called unprobed.
"""

from kprobes import Kprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder

TARGET = "mix_add"
INSTEAD = "mix_rol"
ARG = 1


def record():
    unprobed = scenes.unprobed_final()
    m, k = scenes.booted()
    want = {TARGET: m.call(TARGET, ARG), INSTEAD: m.call(INSTEAD, ARG)}
    instead = m.symbols.lookup_name(INSTEAD)
    rec = Recorder(m, k)
    rec.watch(TARGET)
    seen = {"pre": [], "post": []}

    def pre(p, regs):
        seen["pre"].append(regs.ip)
        regs.ip = instead
        return 1

    def post(p, regs, flags):
        seen["post"].append(regs.ip)

    def tell_returned(rec, ev):
        if ev.which != "pre_handler":
            return None
        return ("pre_handler returned 1", f"The pre_handler returned {ev.value}: "
                f"kprobe_handler takes that to mean it has set regs.ip itself (to "
                f"{rec.short(ev.regs['ip'])}), releases the per-CPU state and resumes "
                "there -- no prepare_singlestep, no #DB, no post_handler.", "pre",
                {"value": ev.value, "ip": ev.regs["ip"]})

    rec.narrators["kprobes.handler-returned"] = tell_returned
    p = Kprobe(symbol_name=TARGET, pre_handler=pre, post_handler=post)
    with rec:
        rec.step("before", f"Unprobed, {TARGET}({ARG}) returns {want[TARGET]:#x} and "
                 f"{INSTEAD}({ARG}) returns {want[INSTEAD]:#x} (both just called through "
                 f"m.call). Now a kprobe on {TARGET} whose pre_handler sets regs.ip to "
                 f"{INSTEAD} and returns 1; it has a post_handler too.", phase="before",
                 facts=dict(want))
        k.register_kprobe(p)
        got = m.call(TARGET, ARG)
        rec.watch(INSTEAD)
        rec.step("returned", f"m.call({TARGET!r}, {ARG}) returned {got:#x}: {INSTEAD}'s "
                 f"result. {INSTEAD} ran from its first instruction with {TARGET}'s "
                 f"arguments and returned to {TARGET}'s caller, whose return address was "
                 "still on the stack. (REGS are init's again: m.call put them back.)",
                 phase="return", facts={"ax": got})
        state = k.cpu_state()
        k.unregister_kprobe(p)
    probed = scenes.final_state(m)
    facts = {"addr": p.addr, "instead": instead, "got": got, "want": want,
             "pre_ips": seen["pre"], "post_ips": seen["post"],
             "running_after": state["running"],
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


def _traps(lesson):
    c = lesson.final()["counters"]
    got = {"int3": c["int3"], "debug": c["debug"], "slot_insns": c["slot_insns"]}
    return got == {"int3": 1, "debug": 0, "slot_insns": 0}, f"counted {got}"


def _no_step(lesson):
    kinds = {s["event"] for s in lesson.steps}
    f = lesson.facts
    ok = "kprobes.singlestep" not in kinds and "kprobes.fixup" not in kinds and \
        f["post_ips"] == [] and not f["running_after"]
    return ok, (f"no single-step, no fix-up, post_handler called {len(f['post_ips'])} "
                f"times; kprobes running afterwards: {f['running_after']}")


def _redirected(lesson):
    f = lesson.facts
    ret = lesson.first(event="kprobes.handler-returned")
    ok = f["got"] == f["want"][f"{INSTEAD}"] != f["want"][TARGET] and \
        ret["regs"]["ip"] == f["instead"] and ret["facts"]["value"] == 1 and \
        f["pre_ips"] == [f["addr"] + 1]
    return ok, (f"pre_handler saw ip {f['pre_ips'][0]:#x}, returned 1 with ip "
                f"{ret['regs']['ip']:#x}; the call returned {f['got']:#x}")


DEMO = Demo(
    name="redirect",
    question="What does a pre_handler that returns 1 change?",
    tier="S",
    confusions=(1,),
    record=record,
    claims=[
        Claim("traps == {int3: 1, debug: 0}: no instruction ran in the slot", _traps),
        Claim("no single-step, no fix-up, no post_handler; kprobes released", _no_step),
        Claim("the pre_handler moved ip to mix_rol, and the call returned mix_rol(1)",
              _redirected),
        scenes.same_final_claim(),
    ],
    prose=("A pre_handler returning 1 tells kprobe_handler that it has set regs.ip "
           "itself: the displaced instruction is not single-stepped and the post_handler "
           "never runs. This is how jprobes and function overrides were built."),
    after=("One trap instead of two: returning 1 skips prepare_singlestep, so no #DB "
           "comes and there is nothing for resume_execution to fix."),
)
