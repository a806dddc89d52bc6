"""maxactive: why return events go missing -- three scenes on one machine, each with its
own kretprobe, and what the default pool size is.

  1. recursion deeper than the pool: fib(4) (m.call on the booted machine) under a
     kretprobe with maxactive 2;
  2. across tasks: the workload's busy1 and busy2 both run busy_sum(); with maxactive 1,
     busy1 is preempted inside it holding the only instance and busy2's call is missed;
  3. a miss of another kind: a kretprobe handler that calls the probed function itself
     (m.call) re-enters the entry kprobe, which counts the miss; the kretprobe's own
     counter does not move.  This kretprobe asks for the default pool (maxactive 0).

The lesson folds the traps of each hit into one step (entry, miss, return); the TRAPS
panel still counts every one.
"""

from kprobes import Kretprobe
from kprobes.demos import models, scenes
from kprobes.demos.lesson import Claim, Demo, Recorder
from kprobes.kretprobe import NR_CPUS

RECURSIVE = "fib"
N = 4                     # fib(4): 4 frames on its deepest chain
M = 2                     # its kretprobe's pool
SHARED = "busy_sum"       # run by busy1 and busy2, both preempted inside it
SHARED_MAXACTIVE = 1


def record():
    unprobed = scenes.unprobed_final()
    m, k = scenes.booted()
    rec = Recorder(m, k, design="task")
    rec.fold = True
    arg = {}                   # id(instance) -> the argument of the call it was taken for
    handled = []               # (scene, function, arg, ax, task) of every handler call
    entries = []               # (scene, function, arg, task, took an instance, nmissed)
    state = {"scene": None, "holder": None, "ticked": False,
             "descended": False}

    task = rec.task_name
    trap_no = rec.trap_count

    # -- narrators ------------------------------------------------------------------------

    def tell_register(rec, ev):
        rp = ev.probe.kretprobe
        if rp is None:
            return None
        if rp is rps["default"]:
            pool = (f"maxactive was 0, so register_kretprobe() chose the default: "
                    f"{rp.maxactive} instances, max(10, 2*NR_CPUS) with NR_CPUS = {NR_CPUS}, "
                    "the formula of a preemptible kernel (2.6.13 used NR_CPUS without "
                    "CONFIG_PREEMPT; kernels today always take max(10, 2*NR_CPUS))")
        else:
            pool = f"maxactive = {rp.maxactive}: {rp.maxactive} instance" + \
                ("s" if rp.maxactive != 1 else "") + " on the free list"
        return ("register_kretprobe", f"A kretprobe on {rec.short(ev.addr)}; {pool}.",
                "arm", {"maxactive": rp.maxactive, "addr": ev.addr})

    def tell_instance(rec, ev):
        ri = ev.instance
        rp = ri.rp or ri.orphan_of
        fn = rp.kp.symbol_name
        if ev.what != "taken":
            return None
        a = m.engine.reg("di")
        arg[id(ri)] = a
        entries.append((state["scene"], fn, a, task(), True, rp.nmissed))
        if state["scene"] == "tasks":
            state["holder"], state["holder_name"] = m.current_addr, task()
        ran = rec.ran_since_step()
        return (f"{fn}({a}) entered",
                f"{task()} enters {fn}({a}){f' after {ran:,} guest instructions' if ran else ''} "
                f"(int3 no. {trap_no('int3')}): an instance is taken from the pool -- "
                f"{len(rp.free_instances)} of {rp.maxactive} left -- and its return "
                f"address {rec.short(ri.ret_addr)} is swapped for kretprobe_trampoline.",
                "E.instance", {"scene": state["scene"], "fn": fn, "arg": a,
                               "free": len(rp.free_instances), "task": task(),
                               "nmissed": rp.nmissed, "ret_addr": ri.ret_addr})

    def tell_return(rec, ev):
        if ev.which != "handler":
            return None
        ri = ev.instance
        rp = ri.rp
        fn, a, ax = rp.kp.symbol_name, arg[id(ri)], ev.regs["ax"]
        return (f"{fn}({a}) returned",
                f"{task()}'s {fn}({a}) returns {ax} through kretprobe_trampoline (int3 no. "
                f"{trap_no('int3')}): the handler runs for the instance at the head of the "
                f"task's bucket, which then goes back to the free list, and ip = "
                f"{rec.short(ri.ret_addr)}.",
                "R.handler", {"scene": state["scene"], "fn": fn, "arg": a, "ax": ax,
                              "task": task(), "ret_addr": ri.ret_addr})

    def tell_miss(rec, ev):
        p = ev.probe
        if ev.cause == "reentered":
            rp = p.kretprobe
            return ("kp.nmissed", f"The handler's m.call enters {rp.kp.symbol_name} while "
                    f"kprobes is still busy with the trampoline's int3 (int3 no. "
                    f"{trap_no('int3')}): that is a re-entry, so the entry kprobe runs no "
                    f"handler -- no instance is taken -- and counts the miss in its own "
                    f"nmissed ({p.nmissed}); the kretprobe's nmissed stays {rp.nmissed}.",
                    "miss", {"scene": state["scene"], "cause": ev.cause,
                             "kp_nmissed": p.nmissed, "rp_nmissed": rp.nmissed,
                             "task": task()})
        rp = p
        fn = rp.kp.symbol_name
        a = m.engine.reg("di")
        entries.append((state["scene"], fn, a, task(), False, rp.nmissed))
        descent = False
        ran = rec.ran_since_step()
        later = f" after {ran:,} guest instructions" if ran else ""
        if state["scene"] == "tasks":
            why = f"{state['holder_name']} still holds the only instance, inside {fn}"
            text = (f"{task()} enters {fn}({a}){later} (int3 no. {trap_no('int3')}) and "
                    f"finds the pool empty: {why}. rp.nmissed becomes {rp.nmissed}; "
                    f"the return address {rec.short(m.mem.u64(m.engine.reg('sp')))} stays "
                    "on the stack, so this call's return will not be seen.")
        else:
            text = (f"{fn}({a}) is entered{later} (int3 no. {trap_no('int3')}) while its "
                    f"callers hold all {rp.maxactive} instances: none for this call, its "
                    f"return address stays, rp.nmissed = {rp.nmissed}.")
            descent = a < 2 and not state["descended"]
            if descent:
                state["descended"] = True
                depth = len([e for e in entries if e[0] == state["scene"]])
                text += (f" fib({a}) ends the first descent: of its chain of {depth} "
                         f"frames the outermost {rp.maxactive} are instrumented and the "
                         f"{depth - rp.maxactive} inner ones missed.")
        return (f"{fn}({a}) missed", text, "miss",
                {"scene": state["scene"], "cause": ev.cause, "fn": fn, "arg": a,
                 "rp_nmissed": rp.nmissed, "task": task(),
                 "descent": state["scene"] == "recursion" and descent})

    def tell_tick(rec, ev):
        state["ticked"] = True
        rec.guest_vectors = set()
        return ("timer tick", f"The timer interrupt (vector {ev.vector}) arrives at "
                f"{rec.short(ev.ip)} while {task()} is inside {SHARED} holding the only "
                "instance. Its time slice is over: on the way out of the interrupt the "
                "scheduler switches to another task, and the instance stays taken.",
                "tick", {"vector": ev.vector, "ip": ev.ip, "task": task(),
                         "scene": state["scene"]})

    def watch_tick(ev):
        """Before the recorder sees it: the first tick that lands while the instance's
        holder runs inside the function is one the lesson tells."""
        if ev.kind == "irq" and state["scene"] == "tasks" and not state["ticked"] and \
                state["holder"] == m.current_addr and rps["tasks"].used_instances:
            rec.guest_vectors = {ev.vector}

    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler-returned",
              "kprobes.singlestep", "kprobes.fixup", "delivered", "kprobes.swap")
    rec.narrators["kprobes.register"] = tell_register
    rec.narrators["kprobes.instance"] = tell_instance
    rec.narrators["kprobes.handler"] = tell_return
    rec.narrators["kprobes.miss"] = tell_miss
    rec.narrators["irq"] = tell_tick
    rec.narrators["kprobes.disarm"] = lambda rec, ev: (
        "unregistered", f"unregister_kretprobe(): the byte {ev.opcode:02x} is back at "
        f"{rec.short(ev.addr)}.", "disarm", {"addr": ev.addr})

    def handler(ri, regs):
        handled.append((state["scene"], ri.rp.kp.symbol_name, arg[id(ri)], regs.ax,
                        task()))
        if state["scene"] == "reentry":
            state["inner"] = m.call(RECURSIVE, 1)

    rps = {"recursion": Kretprobe(symbol_name=RECURSIVE, handler=handler, maxactive=M),
           "tasks": Kretprobe(symbol_name=SHARED, handler=handler,
                              maxactive=SHARED_MAXACTIVE),
           "default": Kretprobe(symbol_name=RECURSIVE, handler=handler, maxactive=0)}
    facts = {}
    m.observers.append(watch_tick)
    with rec:
        # 1. recursion deeper than the pool
        state["scene"] = "recursion"
        rp = rps["recursion"]
        by_depth = models.fib_calls_by_depth(N)
        rec.watch(RECURSIVE)
        rec.step("recursion", f"Scene 1: {task()} calls fib({N}) through m.call, under a "
                 f"kretprobe with maxactive {M}. fib({N}) is {models.fib_depth(N)} frames "
                 f"deep and makes {models.fib_calls(N)} calls; the pool can follow only "
                 f"{M} of them at a time.", phase="scene",
                 facts={"scene": "recursion", "depth": models.fib_depth(N),
                        "calls": models.fib_calls(N)})
        k.register_kretprobe(rp)
        facts["fib"] = m.call(RECURSIVE, N)
        facts["recursion"] = {
            "nmissed": rp.nmissed, "returns": rp.returns, "entries": rp.entries,
            "miss_report": rp.miss_report(), "maxactive": rp.maxactive,
            "deeper": sum(c for d, c in by_depth.items() if d > M),
            "shallow": sum(c for d, c in by_depth.items() if d <= M)}
        rec.step("scene 1 tally", f"fib({N}) = {facts['fib']}. Of its {rp.entries} calls, "
                 f"{rp.returns} were seen returning and rp.nmissed = {rp.nmissed}: every "
                 f"call deeper than {M} found the pool empty; miss_report() says "
                 f"{rp.miss_report()}. The clock is back at {m.clock.now:,}: m.call ran "
                 "on a frozen clock.", phase="tally",
                 facts={"scene": "recursion", **facts["recursion"]})
        k.unregister_kretprobe(rp)

        # 2. across tasks
        state["scene"] = "tasks"
        rp = rps["tasks"]
        rec.watch(SHARED)
        rec.step("across tasks", f"Scene 2: the workload runs on. busy1 and busy2 both "
                 f"call {SHARED}(), long enough that the timer preempts each inside it; "
                 f"its kretprobe has maxactive {SHARED_MAXACTIVE}.", phase="scene",
                 facts={"scene": "tasks"})
        k.register_kretprobe(rp)

        def both_done():
            names = [e[3] for e in entries if e[0] == "tasks"]
            done = [n for n in names if f"{n.rsplit('-', 1)[0]}[{n.rsplit('-', 1)[1]}]: "
                    f"{SHARED}(" in m.console]
            return len(names) == 2 and len(done) == 2
        scenes.run_until(m, both_done)
        missed = [e for e in entries if e[0] == "tasks" and not e[4]]
        line = next(ln for ln in m.console.splitlines()
                    if missed and ln.startswith(missed[0][3].replace("-", "[", 1) + "]"))
        facts["tasks"] = {"nmissed": rp.nmissed, "returns": rp.returns,
                          "entries": rp.entries, "miss_report": rp.miss_report(),
                          "line": line}
        rec.step("the invisible return", f"By clock {m.clock.now:,} {missed[0][3]} has "
                 f"printed \"{line}\": its call returned, straight to its caller and without "
                 f"a trap. kprobes saw {rp.entries} entries and {rp.returns} return; "
                 f"rp.nmissed = {rp.nmissed} is all that is left of the other.",
                 phase="tally", facts={"scene": "tasks", **facts["tasks"]})
        k.unregister_kretprobe(rp)

        # 3. the entry kprobe re-entered from a handler, with the default pool
        state["scene"] = "reentry"
        rp = rps["default"]
        rec.watch(RECURSIVE)
        rec.step("re-entry", f"Scene 3: a kretprobe on {RECURSIVE} whose handler itself "
                 f"calls {RECURSIVE}(1) through m.call; {task()}, the task the workload "
                 f"stopped in, calls {RECURSIVE}(1).",
                 phase="scene", facts={"scene": "reentry"})
        k.register_kretprobe(rp)
        facts["reentry_result"] = m.call(RECURSIVE, 1)
        facts["reentry"] = {"rp_nmissed": rp.nmissed, "kp_nmissed": rp.kp.nmissed,
                            "returns": rp.returns, "entries": rp.entries,
                            "miss_report": rp.miss_report(), "maxactive": rp.maxactive,
                            "inner": state.get("inner")}
        rec.step("scene 3 tally", f"The call returned {facts['reentry_result']} and the "
                 f"handler's own fib(1) returned {state.get('inner')}, unseen: "
                 f"rp.nmissed = {rp.nmissed}, rp.kp.nmissed = {rp.kp.nmissed}. Only "
                 f"miss_report() shows both kinds: {rp.miss_report()}.", phase="tally",
                 facts={"scene": "reentry", **facts["reentry"]})
        k.unregister_kretprobe(rp)
    m.observers.remove(watch_tick)
    probed = scenes.final_state(m)
    facts.update({"entries": entries, "handled": handled, "n": N, "m": M,
                  "nr_cpus": NR_CPUS, "same_final": scenes.same_final(unprobed, probed)})
    return rec.finish(), facts


# -- claims ------------------------------------------------------------------------------

def _descent(lesson):
    step = next(s for s in lesson.select(phase="miss") if s["facts"].get("descent"))
    f = lesson.facts
    depth = models.fib_depth(f["n"])
    got = step["facts"]["rp_nmissed"]
    return got == depth - f["m"], (f"at the bottom of fib({f['n']})'s first descent "
                                  f"(N = {depth}, M = {f['m']}): nmissed {got}")


def _recursion_totals(lesson):
    r = lesson.facts["recursion"]
    ok = (r["nmissed"] == r["deeper"] and r["returns"] == r["shallow"]
          and r["miss_report"] == {"maxactive": r["nmissed"]})
    return ok, (f"nmissed {r['nmissed']} == calls deeper than M ({r['deeper']}); handler "
                f"calls {r['returns']} == calls within M ({r['shallow']})")


def _outermost_instrumented(lesson):
    f = lesson.facts
    rows = [e for e in f["entries"] if e[0] == "recursion"]
    took = [e[4] for e in rows]
    # the first descent: the outermost M took instances, the rest missed
    depth = models.fib_depth(f["n"])
    ok = took[:depth] == [True] * f["m"] + [False] * (depth - f["m"])
    order = [a for s, _fn, a, _ax, _t in f["handled"] if s == "recursion"]
    return ok and order == [3, 2, 4], (f"first descent took {took[:depth]}; handlers for "
                                       f"fib{tuple(order)}")


def _across_tasks(lesson):
    t = lesson.facts["tasks"]
    rows = [e for e in lesson.facts["entries"] if e[0] == "tasks"]
    tick = lesson.first(phase="tick")
    miss = next(s for s in lesson.select(phase="miss") if s["facts"]["scene"] == "tasks")
    ok = (len(rows) == 2 and rows[0][4] and not rows[1][4] and rows[0][3] != rows[1][3]
          and tick["facts"]["task"] == rows[0][3] and miss["facts"]["task"] == rows[1][3]
          and tick["i"] < miss["i"] and t["nmissed"] == 1 and t["returns"] == 1
          and t["entries"] == 2 and t["miss_report"] == {"maxactive": 1})
    return ok, (f"{rows[0][3]} took the instance and was preempted; {rows[1][3]} missed; "
                f"entries {t['entries']}, returns {t['returns']}, nmissed {t['nmissed']}")


def _reentry(lesson):
    r = lesson.facts["reentry"]
    ok = (r["rp_nmissed"] == 0 and r["kp_nmissed"] == 1 and r["returns"] == 1
          and r["miss_report"] == {"reentered": 1} and r["inner"] == 1)
    return ok, (f"rp.nmissed {r['rp_nmissed']}, kp.nmissed {r['kp_nmissed']}, "
                f"miss_report {r['miss_report']}")


def _default(lesson):
    f = lesson.facts
    got = f["reentry"]["maxactive"]
    return got == max(10, 2 * f["nr_cpus"]), f"maxactive 0 became {got} (NR_CPUS {f['nr_cpus']})"


DEMO = Demo(
    name="maxactive",
    question="Why do return events go missing, sometimes with nmissed = 0?",
    tier="C",
    confusions=(5,),
    record=record,
    claims=[
        Claim("fib(4)'s first descent, N = 4 frames with M = 2: nmissed == N - M",
              _descent),
        Claim("the outermost M frames are instrumented, handlers innermost first",
              _outermost_instrumented),
        Claim("over all of fib(4): nmissed == the calls deeper than M, handler calls == "
              "the rest", _recursion_totals),
        Claim("across tasks: busy1, preempted, holds the only instance; busy2 misses; "
              "1 return seen, nmissed 1", _across_tasks),
        Claim("re-entered from a handler: kp.nmissed 1, rp.nmissed 0", _reentry),
        Claim("maxactive 0 means max(10, 2*NR_CPUS)", _default),
        scenes.same_final_claim(),
    ],
    prose=("Each kretprobe has a fixed pool of maxactive instances, and every call that "
           "has entered and not yet returned holds one. Three scenes show who holds them "
           "and where a missed return is counted."),
    after=("A missed return leaves one trace: a counter. The pool-empty misses are in "
           "the kretprobe's nmissed, the re-entered ones in its entry kprobe's -- tools "
           "that show only the first see nmissed = 0 while returns go missing."),
)
