"""tail-call: F jumps to G with its own frame gone, both kretprobed, design (b): G's
instance holds the trampoline as its return address, one return runs both handlers, and
execution resumes in F's caller."""

from kprobes import Kretprobe
from kprobes.demos import scenes
from kprobes.demos.lesson import Claim, Demo, Recorder
from kprobes.demos.lessons.designs import TAIL_ARG, TARGETS
from kprobes.demos.lessons.returns import MAXACTIVE, TRAMPOLINE

F, G, CALLER = "designs_f", "designs_g", "designs_tail"


def record():
    m, k = scenes.booted(design="task")
    m.load_module(TARGETS)
    unprobed = m.call(CALLER, TAIL_ARG)
    tramp = m.symbols.lookup_name(TRAMPOLINE)
    resume = m.symbols.lookup_name("designs_tail_ret")
    rec = Recorder(m, k, design="task")
    rec.watch(F)
    rec.fold = True
    # The entry hits' single-steps are kpemu demo kprobe's lesson; this one keeps the
    # return-address swaps, the instances and the handlers.
    rec.quiet("kprobes.register", "kprobes.arm", "kprobes.singlestep", "kprobes.fixup",
              "kprobes.handler-returned")
    told_trap = rec.narrators["kprobes.trap"]
    rec.narrators["kprobes.trap"] = lambda r, ev: told_trap(r, ev) if ev.vector == 3 else None
    rec.narrators.update({"kprobes.swap": _tell_swap, "kprobes.instance": _tell_instance,
                          "kprobes.handler": _tell_handler})
    told = []

    def handler(name):
        def report(ri, regs):
            told.append({"name": name, "ret_addr": ri.ret_addr, "ax": regs.ax})
        return report

    rps = [Kretprobe(symbol_name=name, maxactive=MAXACTIVE, handler=handler(name))
           for name in (F, G)]
    with rec:
        rec.step("a tail call", f"{CALLER}({TAIL_ARG}) calls {F}, which calls a leaf and "
                 f"then jumps to {G} with its own frame gone: {G}'s ret goes straight back "
                 f"to {rec.short(resume)}. Both {F} and {G} are kretprobed, design (b).",
                 phase="setup", facts={"resume": resume, "tramp": tramp})
        k.register_kretprobes(rps)
        value = m.call(CALLER, TAIL_ARG)
        rec.step("returned", f"{CALLER} got {value}, as unprobed ({unprobed}). One ret, "
                 f"one trap at the trampoline, and {len(told)} handlers: "
                 + ", then ".join(f"{t['name']}'s (ri.ret_addr {rec.short(t['ret_addr'])})"
                                  for t in told)
                 + f"; execution resumed at {rec.short(resume)}.", phase="result",
                 facts={"value": value})
    facts = {"value": value, "unprobed": unprobed, "told": told, "tramp": tramp,
             "resume": resume}
    return rec.finish(), facts


def _name(ri):
    return (ri.rp or ri.orphan_of).kp.symbol_name


def _tell_swap(rec, ev):
    rec.stack_notes[ev.slot] = (ev.old, ev.new)
    name = _name(ev.instance)
    if ev.old == ev.new:
        text = (f"{name}'s entry finds the slot at sp = {ev.slot:#x} holding "
                f"{rec.short(ev.old)} already: the tail call reused the frame F's entry "
                "swapped. arch_prepare_kretprobe() writes the trampoline again, and this "
                "instance's ret_addr is the trampoline itself.")
    else:
        text = (f"arch_prepare_kretprobe() for {name}: the return slot at sp = "
                f"{ev.slot:#x} held {rec.short(ev.old)}; it now holds {rec.short(ev.new)}.")
    return ("swap", text, "E.swap", {"slot": ev.slot, "old": ev.old, "new": ev.new,
                                     "function": name})


def _tell_instance(rec, ev):
    ri = ev.instance
    rp = ri.rp
    if ev.what == "taken":
        return (f"{_name(ri)}'s instance", f"{_name(ri)}'s instance (ret_addr "
                f"{rec.short(ri.ret_addr)}) goes at the head of bucket {ev.bucket} of "
                f"{rec.task_name()}.", "E.instance",
                {"function": _name(ri), "ret_addr": ri.ret_addr, "bucket": ev.bucket})
    return (f"{_name(ri)}'s instance {ev.what}", f"{_name(ri)}'s instance is {ev.what}"
            + (f" ({len(rp.free_instances)} free)." if rp else "."), "R.recycle",
            {"function": _name(ri), "what": ev.what})


def _tell_handler(rec, ev):
    if ev.which != "handler":
        return None
    ri = ev.instance
    more = ("it is the trampoline, so the walk goes on to the next instance"
            if ri.ret_addr == rec.m.symbols.lookup_name(TRAMPOLINE) else
            "a real return address: the walk stops here and ip is set to it")
    return (f"{_name(ri)}'s handler", f"trampoline_probe_handler() reaches {_name(ri)}'s "
            f"instance: its handler runs with ax = {ev.regs['ax']:#x}; ri.ret_addr is "
            f"{rec.short(ri.ret_addr)} -- {more}.", "R.handler",
            {"function": _name(ri), "ret_addr": ri.ret_addr, "ax": ev.regs["ax"]})


def _swaps(lesson):
    swaps = [s["facts"] for s in lesson.select(event="kprobes.swap")]
    tramp, resume = lesson.facts["tramp"], lesson.facts["resume"]
    ok = [(s["old"], s["new"]) for s in swaps] == [(resume, tramp), (tramp, tramp)] and \
        swaps[0]["slot"] == swaps[1]["slot"]
    return ok, (f"{len(swaps)} swaps of the slot {swaps[0]['slot']:#x}: F's saw the caller's "
                "address, G's saw the trampoline already there")


def _handlers(lesson):
    told = lesson.facts["told"]
    tramp, resume = lesson.facts["tramp"], lesson.facts["resume"]
    got = [(t["name"], t["ret_addr"]) for t in told]
    return got == [(G, tramp), (F, resume)], \
        f"handlers in order: {[n for n, _a in got]}"


def _one_return_trap(lesson):
    returns = [s for s in lesson.select(event="kprobes.trap", vector=3)
               if s["facts"]["probe_addr"] == lesson.facts["tramp"]]
    return len(returns) == 1, f"{len(returns)} int3 at the trampoline"


def _traps(lesson):
    c = lesson.final()["counters"]
    return (c["int3"], c["debug"]) == (3, 2), \
        f"int3 {c['int3']} (F, G, the trampoline), #DB {c['debug']} (F's and G's entries)"


DEMO = Demo(
    name="tail-call",
    question="A tail call between two kretprobed functions: whose return is it?",
    tier="S",
    confusions=(4,),
    record=record,
    claims=[
        Claim("G's entry finds the trampoline already in the slot F's entry swapped", _swaps),
        Claim("one return runs G's handler (ret_addr = the trampoline), then F's "
              "(ret_addr = F's caller)", _handlers),
        Claim("one int3 at the trampoline serves both returns", _one_return_trap),
        Claim("traps == {int3: 3, debug: 2}", _traps),
        Claim("the caller gets the unprobed value",
              lambda l: (l.facts["value"] == l.facts["unprobed"],
                         f"{l.facts['value']} == {l.facts['unprobed']}")),
    ],
    prose=("designs_f calls a leaf, then jumps to designs_g: G runs in F's place and returns "
           "to F's caller. With both kretprobed, G's entry finds the trampoline already in "
           "the return slot, and its instance records the trampoline as its return address."),
    after=("trampoline_probe_handler() walks the task's instances from the head and keeps "
           "going while an instance's ret_addr is the trampoline itself: G's handler, then "
           "F's, and the return lands where F's caller expects it (design (a)'s tail-call "
           "scene in kpemu demo designs shows the same return told with a stale address)."),
)
