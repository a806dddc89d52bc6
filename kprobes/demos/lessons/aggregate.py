"""aggregate: two kprobes at one address -- the second registration makes the aggregate
probe (register_aggr_kprobe), one trap pair serves both, and the byte comes back only when
the last one goes.  P1 and P2 on sys_getpid+0, hit once by the workload's getpid()."""

from kprobes import Kprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, trap_counts

TARGET = "sys_getpid"


def record():
    unprobed, m, k, rec = scenes.start(TARGET)
    fn = m.symbols.get(TARGET)
    order = []                 # (which handler, probe name) as they ran
    facts = {"addr": fn.addr}

    def make(name):
        def pre(p, regs):
            order.append(("pre", name))
            rec.step(f"{name}'s pre_handler", f"{name}'s pre_handler runs (regs.ip = "
                     f"{regs.ip:#x}), called by the aggregate: handler no. {len(order)} "
                     "of this hit.", phase="pre.child", facts={"probe": name, "ip": regs.ip})
            return 0

        def post(p, regs, flags):
            order.append(("post", name))
            rec.step(f"{name}'s post_handler", f"{name}'s post_handler runs (regs.ip = "
                     f"{regs.ip:#x}, in the shared slot): handler no. {len(order)}.",
                     phase="post.child", facts={"probe": name, "ip": regs.ip})
        return Kprobe(symbol_name=TARGET, pre_handler=pre, post_handler=post)

    p1, p2 = make("P1"), make("P2")
    rec.names.update({p1: "P1", p2: "P2"})
    events = []

    def tell_register(rec, ev):
        p = ev.probe
        name = rec.names.get(p)
        events.append(("register", name))
        top = k.table[ev.addr]
        if not top.is_aggregate:
            rec.probe = p
            return ("register P1", f"register_kprobe(P1): P1 is the first probe at "
                    f"{rec.short(ev.addr)}, so it gets its own copy of the "
                    f"{p.ainsn.length}-byte instruction ({p.ainsn.text}) in the slot at "
                    f"{ev.slot:#x}, and the byte is armed.", "arm",
                    {"probe": name, "slot": ev.slot, "aggregate": False})
        rec.names[top] = "aggregate"
        facts["children"] = [rec.names.get(c) for c in top.children]
        return (f"register {name}", f"register_kprobe({name}): {rec.short(ev.addr)} has a "
                f"probe already, so register_aggr_kprobe() puts an aggregate probe in the "
                f"table in its place, with P1's slot ({top.ainsn.slot:#x}) and its saved "
                f"byte {top.opcode:02x}, and adds {name} at the head of its list: "
                f"{', '.join(facts['children'])}. No byte is written, nothing is copied.",
                "aggr", {"probe": name, "slot": ev.slot, "aggregate": True,
                         "children": facts["children"]})

    def tell_arm(rec, ev):
        events.append(("arm", ev.addr))
        return ("arm", f"The first byte at {rec.short(ev.addr)}, {ev.opcode:02x}, is "
                "replaced by cc (int3).", "arm", {"addr": ev.addr, "opcode": ev.opcode})

    def tell_handler(rec, ev):
        if ev.which not in ("pre_handler", "post_handler"):
            return None
        top = ev.probe
        names = ", ".join(rec.names.get(c) for c in top.children)
        what = ev.which.replace("_", " ")
        return (f"aggregate {what}", f"The probe the trap found is the aggregate: its "
                f"{ev.which} calls each child's {what} in list order, {names} -- newest "
                "first, as 2.6.13 added them at the head.", ev.which[:-8] + ".aggr",
                {"children": [rec.names.get(c) for c in top.children],
                 "regs_ip": ev.regs["ip"]})

    def tell_disarm(rec, ev):
        events.append(("disarm", ev.addr))
        return ("disarm", f"The original byte {ev.opcode:02x} is written back at "
                f"{rec.short(ev.addr)}: no probe is left there; the aggregate and its slot "
                "go next.", "disarm", {"addr": ev.addr, "opcode": ev.opcode})

    rec.narrators.update({"kprobes.register": tell_register, "kprobes.arm": tell_arm,
                          "kprobes.handler": tell_handler, "kprobes.disarm": tell_disarm})

    with rec:
        rec.step("before", f"Two kprobes, P1 and P2, will be registered on {TARGET}+0x0, "
                 "in that order, each with a pre_handler and a post_handler.",
                 phase="before", facts={"addr": fn.addr})
        k.register_kprobe(p1)
        k.register_kprobe(p2)
        facts["slots"] = [p1.ainsn.slot, p2.ainsn.slot]
        scenes.run_until_event(m, lambda ev: ev.kind == "kprobes.fixup")
        k.unregister_kprobe(p2)
        facts["byte_after_p2"] = m.read(fn.addr, 1)[0]
        rec.step("unregister P2", f"unregister_kprobe(P2): P2 leaves the aggregate's list; "
                 f"P1 is still there, so the byte at {rec.short(fn.addr)} stays "
                 f"{facts['byte_after_p2']:02x}.", phase="unregister",
                 facts={"byte": facts["byte_after_p2"]})
        k.unregister_kprobe(p1)
        facts["byte_after_p1"] = m.read(fn.addr, 1)[0]
    probed = scenes.final_state(m)
    facts.update({"order": order, "events": events, "opcode": p1.opcode,
                  "same_final": scenes.same_final(unprobed, probed)})
    return rec.finish(), facts


def _no_new_copy(lesson):
    f = lesson.facts
    arms = [e for e in f["events"] if e[0] == "arm"]
    reg2 = f["events"].index(("register", "P2"))
    ok = len(arms) == 1 and f["events"].index(arms[0]) < reg2 and \
        f["slots"][0] == f["slots"][1] and lesson.first(phase="aggr")["facts"]["aggregate"]
    return ok, (f"{len(arms)} arm event, before P2's registration; slots "
                f"{f['slots'][0]:#x} and {f['slots'][1]:#x}")


def _order(lesson):
    got = lesson.facts["order"]
    want = [("pre", "P2"), ("pre", "P1"), ("post", "P2"), ("post", "P1")]
    return got == want, f"handlers ran {got}"


def _byte(lesson):
    f = lesson.facts
    ok = f["byte_after_p2"] == 0xCC and f["byte_after_p1"] == f["opcode"] and \
        [e[0] for e in f["events"]].count("disarm") == 1
    return ok, (f"after P2 went: {f['byte_after_p2']:02x}; after P1: "
                f"{f['byte_after_p1']:02x} (the original {f['opcode']:02x})")


DEMO = Demo(
    name="aggregate",
    question="Several probes at one address: who owns the int3?",
    tier="S",
    confusions=(),
    record=record,
    claims=[
        Claim("the second registration makes the aggregate: no byte written, no new copy",
              _no_new_copy),
        Claim("handlers run newest first: P2 then P1, pre and post", _order),
        Claim("one trap pair for both probes: int3 1, #DB 1", trap_counts(1, 1)),
        Claim("unregistering P2 leaves the int3; unregistering the last restores the byte",
              _byte),
        scenes.same_final_claim(),
    ],
    prose=("Two kprobes on the same instruction. The table holds one probe per address, "
           "so the second registration turns the entry into an aggregate that owns the "
           "int3 and the slot and calls both probes' handlers."),
    after=("Each probe at an address costs its handlers, never another trap: the "
           "aggregate runs them all in one int3/#DB pair."),
)
