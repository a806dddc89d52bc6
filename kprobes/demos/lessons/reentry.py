"""reentry: a probe hit from inside a handler.  P1 on sys_getpid+0 (hit once by the
workload's getpid()) has a pre_handler that calls mix_add(1) through m.call; P2 is a
kprobe on mix_add+0.  P2's int3 comes while kprobes is busy with P1: its handlers are
skipped and its nmissed counted, but its instruction is still stepped out of line, with
P1's state saved in the one-level save area and restored after the step."""

from kprobes import Kprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import DEFAULT_NARRATORS, Claim, Demo, Recorder, trap_counts

TARGET = "sys_getpid"
CALLED = "mix_add"
ARG = 1


def record():
    unprobed = scenes.unprobed_final()
    m, k = scenes.booted()
    want = m.call(CALLED, ARG)
    rec = Recorder(m, k)
    rec.watch(TARGET)
    ran = []                # (probe name, handler) of every handler of P1 and P2 that ran
    facts = {}

    def p1_pre(p, regs):
        ran.append(("P1", "pre"))
        rec.watch(CALLED)
        facts["got"] = m.call(CALLED, ARG)
        rec.watch(TARGET)
        rec.probe = p                    # SLOT shows P1's copy again
        rec.step("m.call returned", f"m.call({CALLED!r}, {ARG}) returned {facts['got']:#x} "
                 f"to P1's pre_handler: {CALLED} ran to its end, and P2 never reported it. "
                 f"kprobes is back on P1's hit: current P1, status "
                 f"{k.cpu_state()['status']}.", phase="P1.pre", facts={"ax": facts["got"]})
        return 0

    p1 = Kprobe(symbol_name=TARGET, pre_handler=p1_pre,
                post_handler=lambda p, regs, flags: ran.append(("P1", "post")))
    p2 = Kprobe(symbol_name=CALLED, pre_handler=lambda p, regs: ran.append(("P2", "pre")),
                post_handler=lambda p, regs, flags: ran.append(("P2", "post")))
    rec.names.update({p1: "P1", p2: "P2"})

    def tell_trap(rec, ev):
        if ev.data.get("reentered"):
            rec.probe = ev.probe
            state = k.cpu_state()
            return ("int3, re-entered", f"P1's pre_handler is still running when the CPU "
                    f"hits P2's int3 at {rec.short(ev.ip)}: kprobe_handler finds kprobes "
                    f"busy ({state['status']}, current {rec.probe_label(state['current_kprobe'])}"
                    "). A re-entry: save_previous_kprobe() puts P1's state in the "
                    "one-level save area and P2 becomes current, without its handlers.",
                    "int3.reentered", {"probe_addr": ev.ip, "vector": 3,
                                       "status": state["status"], "reentered": True})
        if ev.vector == 1 and k.cpu_state()["status"] == "KPROBE_REENTER":
            return ("#DB, re-entered", f"The copy of P2's instruction ran alone in its slot "
                    f"and the debug trap came at {rec.short(ev.ip)}. Status "
                    "KPROBE_REENTER: post_kprobe_handler() skips P2's post_handler and will "
                    "restore P1 from the save area after the fix-up.", "db.reentered",
                    {"ip": ev.ip, "vector": 1, "status": "KPROBE_REENTER"})
        return DEFAULT_NARRATORS["kprobes.trap"](rec, ev)

    def tell_miss(rec, ev):
        return ("P2.nmissed", f"kprobes_inc_nmissed_count(): P2 missed this hit (cause "
                f"{ev.cause!r}), P2.nmissed = {ev.probe.nmissed}. Its instruction must run "
                "all the same, and only out of line: the int3 is still in the text.",
                "miss", {"probe": rec.names.get(ev.probe), "cause": ev.cause,
                         "nmissed": ev.probe.nmissed})

    def tell_fixup(rec, ev):
        told = DEFAULT_NARRATORS["kprobes.fixup"](rec, ev)
        if k.cpu_state()["status"] != "KPROBE_REENTER":
            return told
        title, text, _phase, fx = told
        return (title, text + " Then restore_previous_kprobe() makes P1 current again, "
                "status KPROBE_HIT_ACTIVE: the save area is empty.", "resume.reentered", fx)

    rec.narrators.update({"kprobes.trap": tell_trap, "kprobes.miss": tell_miss,
                          "kprobes.fixup": tell_fixup})

    with rec:
        rec.step("before", f"P1 on {TARGET}+0x0 calls {CALLED}({ARG}) from its pre_handler; "
                 f"P2 is a kprobe on {CALLED}+0x0. Unprobed, {CALLED}({ARG}) returns "
                 f"{want:#x}.", phase="before", facts={"want": want})
        k.register_kprobe(p1)
        k.register_kprobe(p2)
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup" and
                               ev.probe is p1)
        k.unregister_kprobes([p1, p2])
    probed = scenes.final_state(m)
    facts.update({"want": want, "ran": ran, "p2_nmissed": p2.nmissed,
                  "p2_misses": dict(p2.misses), "p1_nmissed": p1.nmissed,
                  "p1_slot": p1.ainsn.slot, "p2_slot": p2.ainsn.slot,
                  "same_final": scenes.same_final(unprobed, probed)})
    return rec.finish(), facts


def _skipped(lesson):
    f = lesson.facts
    ok = f["ran"] == [("P1", "pre"), ("P1", "post")] and f["p2_nmissed"] == 1 and \
        f["p2_misses"] == {"reentered": 1} and f["p1_nmissed"] == 0
    return ok, f"handlers that ran: {f['ran']}; P2.nmissed {f['p2_nmissed']}"


def _stepped(lesson):
    f = lesson.facts
    steps = [s["facts"]["slot"] for s in lesson.select(event="kprobes.singlestep")]
    db = lesson.first(phase="db.reentered")
    ok = steps == [f["p2_slot"], f["p1_slot"]] and \
        f["p2_slot"] <= db["facts"]["ip"] < f["p2_slot"] + 16
    return ok, (f"single-steps in P2's slot {f['p2_slot']:#x}, then P1's "
                f"{f['p1_slot']:#x}")


def _save_restore(lesson):
    db = lesson.first(phase="db.reentered")
    back = lesson.first(phase="P1.pre")
    ok = db["kprobes"]["status"] == "KPROBE_REENTER" and \
        db["kprobes"]["current"] == "P2 p:mix_add+0x0" and \
        db["kprobes"]["saved"] == "P1 p:sys_getpid+0x0" and \
        back["kprobes"]["current"] == "P1 p:sys_getpid+0x0" and \
        back["kprobes"]["saved"] is None and back["kprobes"]["status"] == "KPROBE_HIT_ACTIVE"
    return ok, (f"during P2's step: {db['kprobes']['status']}, saved "
                f"{db['kprobes']['saved']}; after: current {back['kprobes']['current']}")


DEMO = Demo(
    name="reentry",
    question="What happens when a probe is hit from inside a handler?",
    tier="S",
    confusions=(5,),
    record=record,
    claims=[
        Claim("traps: 4 in total (int3 2, #DB 2)", trap_counts(2, 2)),
        Claim("P2's handlers are skipped and P2.nmissed == 1; P1's run", _skipped),
        Claim("P2's instruction is still stepped out of line, before P1's", _stepped),
        Claim("status KPROBE_REENTER with P1 in the one-level save area, then restored",
              _save_restore),
        Claim("the handler's call returned mix_add(1) as unprobed",
              lambda l: (l.facts["got"] == l.facts["want"],
                         f"{l.facts['got']:#x} == {l.facts['want']:#x}")),
        scenes.same_final_claim(),
    ],
    prose=("kprobes runs one probe at a time per CPU. When a handler's own code hits "
           "another probe, that probe is counted as missed -- but its instruction has "
           "been replaced by int3, so it must still be single-stepped from its slot."),
    after=("The save area is one level deep: a probe hit while a re-entered one is being "
           "stepped is unrecoverable (Linux BUGs). A handler that calls probed code costs "
           "the callee's probe its event, and shows up only in that probe's nmissed."),
)
