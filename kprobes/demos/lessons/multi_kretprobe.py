"""multi-kretprobe: two kretprobes on one function.  R1 (registered first) and R2 on fib;
fib(2) is called through m.call, so fib(2) and its inner fib(1) and fib(0) each take two
instances.  The entry kprobes share an aggregate, which calls the newest (R2's) first: R2's
instance gets the real return address, R1's finds the trampoline already in the slot.  On
return one int3 reports both, R1 first, and the walk stops at R2's instance, the first
whose ret_addr is not the trampoline."""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo

TARGET = "fib"
N = 2


def record():
    unprobed, m, k, rec = scenes.start(TARGET, design="task", fold=True)
    tramp = m.symbols.lookup_name("kretprobe_trampoline")
    arg = {}
    taken = []               # (probe name, n, ret_addr) in the order instances were taken
    reported = []            # (probe name, n, ret_addr, int3 no.) in handler order
    names = {}

    def handler(ri, regs):
        pass

    r1 = Kretprobe(symbol_name=TARGET, handler=handler)
    r2 = Kretprobe(symbol_name=TARGET, handler=handler)
    names.update({r1: "R1", r2: "R2"})
    rec.names.update({r1.kp: "R1", r2.kp: "R2"})

    def trap_no():
        return rec.trap_count("int3")

    def tell_register(rec, ev):
        rp = ev.probe.kretprobe
        if rp is None:
            return None
        name = names[rp]
        if rp is r1:
            rec.probe = ev.probe
            return ("register R1", f"register_kretprobe(R1): {rp.maxactive} instances and "
                    f"an entry kprobe on {rec.short(ev.addr)}.", "arm", {"probe": name})
        top = k.table[ev.addr]
        rec.names[top] = "aggregate"
        order = [rec.names.get(c) for c in top.children]
        return ("register R2", f"register_kretprobe(R2) on the same function: its entry "
                f"kprobe joins R1's in an aggregate, whose list is {', '.join(order)} -- the "
                "newest first, so at every entry R2's pre_handler_kretprobe runs before "
                "R1's.", "aggr", {"probe": name, "children": order})

    def tell_instance(rec, ev):
        if ev.what != "taken":
            return None
        ri = ev.instance
        name = names[ri.rp]
        n = m.engine.reg("di")
        arg[id(ri)] = n
        taken.append((name, n, ri.ret_addr))
        if ri.ret_addr == tramp:
            what = (f"finds kretprobe_trampoline in the return slot already -- {names[r2]} "
                    "put it there -- and records that as its instance's ret_addr")
        else:
            what = (f"records the real return address {rec.short(ri.ret_addr)} as its "
                    "instance's ret_addr and writes the trampoline into the slot")
        ran = rec.ran_since_step()
        if name == "R2":
            lead = f"fib({n}) is entered (int3 no. {trap_no()}" + \
                (f", after {ran} guest instructions): " if ran else "): ")
        else:
            lead = "The same entry: "
        return (f"{name} takes an instance", f"{lead}{name}'s pre_handler_kretprobe {what}. "
                f"The instance goes on the head of {rec.task_name()}'s bucket.",
                "E.instance",
                {"probe": name, "n": n, "ret_addr": ri.ret_addr,
                 "is_tramp": ri.ret_addr == tramp})

    def tell_handler(rec, ev):
        if ev.which != "handler":
            return None
        ri = ev.instance
        name = names[ri.rp]
        n = arg[id(ri)]
        reported.append((name, n, ri.ret_addr, trap_no()))
        if ri.ret_addr == tramp:
            then = ("its ret_addr is the trampoline itself, so trampoline_probe_handler "
                    "recycles it and walks on to the next instance")
        else:
            older = len([r for r in k.kretprobes.instances() if r.task == ri.task]) - 1
            then = (f"its ret_addr {rec.short(ri.ret_addr)} is not the trampoline: the walk "
                    f"stops here and ip = {rec.short(ri.ret_addr)}")
            if older:
                then += f"; the {older} older instances wait for their own return"
        first = len(reported) < 2 or reported[-2][3] != trap_no()
        lead = (f"fib({n}) returns {ev.regs['ax']} into kretprobe_trampoline (int3 no. "
                f"{trap_no()}). " if first else "")
        return (f"{name}'s handler", f"{lead}{name}'s handler runs for the instance at the "
                f"head of the bucket; {then}.", "R.handler",
                {"probe": name, "n": n, "ret_addr": ri.ret_addr, "int3": trap_no(),
                 "is_tramp": ri.ret_addr == tramp, "ax": ev.regs["ax"]})

    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler-returned",
              "kprobes.singlestep", "kprobes.fixup", "kprobes.swap")
    rec.narrators.update({"kprobes.register": tell_register,
                          "kprobes.instance": tell_instance,
                          "kprobes.handler": tell_handler})
    rec.narrators["kprobes.disarm"] = lambda rec, ev: (
        "unregistered", f"Both kretprobes are unregistered: the byte {ev.opcode:02x} is "
        f"back at {rec.short(ev.addr)}.", "disarm", {"addr": ev.addr})

    with rec:
        rec.step("before", f"Two kretprobes, R1 then R2, on {TARGET}; {rec.task_name()} "
                 f"calls {TARGET}({N}) through m.call (which calls fib(1) and fib(0)).",
                 phase="before")
        k.register_kretprobe(r1)
        k.register_kretprobe(r2)
        result = m.call(TARGET, N)
        rec.step("m.call returned", f"fib({N}) = {result}, and every instance is back in "
                 f"its pool: R1 {len(r1.free_instances)} of {r1.maxactive}, R2 "
                 f"{len(r2.free_instances)} of {r2.maxactive} free.", phase="return",
                 facts={"result": result, "free": [len(r1.free_instances),
                                                   len(r2.free_instances)]})
        k.unregister_kretprobes([r1, r2])
    probed = scenes.final_state(m)
    facts = {"tramp": tramp, "taken": taken, "reported": reported, "result": result,
             "call_return": m.call_return_address,
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


def _entry_order(lesson):
    f = lesson.facts
    taken = f["taken"]
    pairs = [taken[i:i + 2] for i in range(0, len(taken), 2)]
    ok = len(pairs) == 3 and all(
        a[0] == "R2" and a[2] != f["tramp"] and b[0] == "R1" and b[2] == f["tramp"]
        and a[1] == b[1] for a, b in pairs)
    return ok, "at each entry: " + "; ".join(
        f"{a[0]} ret_addr {a[2]:#x}, then {b[0]} ret_addr {b[2]:#x}" for a, b in pairs[:1])


def _one_trap_two_handlers(lesson):
    f = lesson.facts
    rep = f["reported"]
    by_trap = {}
    for name, n, ret_addr, trap in rep:
        by_trap.setdefault(trap, []).append((name, ret_addr == f["tramp"]))
    ok = len(by_trap) == 3 and all(v == [("R1", True), ("R2", False)]
                                   for v in by_trap.values())
    c = lesson.final()["counters"]
    ok = ok and (c["int3"], c["debug"]) == (6, 3)
    return ok, (f"{len(by_trap)} returns, each one int3 with handlers R1 (ret_addr = "
                f"trampoline) then R2; int3 {c['int3']}, #DB {c['debug']}")


def _walk_stops(lesson):
    """At fib(1)'s return fib(2)'s two instances stay in the bucket."""
    first = lesson.first(phase="R.handler")
    second = lesson.select(phase="R.handler")[1]
    bucket = [ri["rp"] for ri in second["kprobes"]["bucket"]]
    ok = first["facts"]["n"] == 1 and second["facts"]["n"] == 1 and \
        not second["facts"]["is_tramp"] and len(bucket) == 3
    return ok, (f"at fib(1)'s return the walk stopped at R2's instance; the bucket still "
                f"held {len(bucket)} (this one and fib({N})'s two)")


DEMO = Demo(
    name="multi-kretprobe",
    question="Two kretprobes on one function: whose instance has the real return?",
    tier="S",
    confusions=(4,),
    record=record,
    claims=[
        Claim("at entry R2's instance is taken first with ret_addr = R, then R1's with "
              "ret_addr = the trampoline", _entry_order),
        Claim("on return one int3; handlers R1 then R2; R1 sees ri.ret_addr == trampoline",
              _one_trap_two_handlers),
        Claim("the walk stops at the first instance whose ret_addr is not the trampoline",
              _walk_stops),
        Claim("m.call returned fib(2)", lambda l: (l.facts["result"] == 1,
                                                    f"fib(2) = {l.facts['result']}")),
        scenes.same_final_claim(),
    ],
    prose=("Two kretprobes on fib. Each entry hijacks the same return slot twice; the "
           "second hijacker finds the trampoline there and believes it is the return "
           "address. The trampoline's walk over the task's instances sorts it out."),
    after=("A handler of a kretprobe that was registered earlier can see ri.ret_addr == "
           "kretprobe_trampoline: the real address is in the instance of the probe "
           "registered later."),
)
