"""recursion: per-task instances form a stack -- fib(5) under a kretprobe whose pool holds
exactly as many instances as fib(5) has frames on its deepest chain.

fib(5) is run with m.call("fib", 5) on the booted machine (the task current there, init,
calls it; the workload's own fib thread calls fib(15..18), whose 1,973+ calls would bury
the point).  The lesson folds what does not teach: each call is one step (the entry int3,
the return swapped, the instance taken, the single-step), each return one step (the
trampoline's int3, the handler, the instance recycled); the TRAPS panel still counts every
trap.
"""

from kprobes import Kretprobe
from kprobes.demos import models, scenes
from kprobes.demos.lesson import Claim, Demo

TARGET = "fib"
N = 5


def record():
    unprobed, m, k, rec = scenes.start(TARGET, design="task", fold=True)
    fn = m.symbols.get(TARGET)
    depth = models.fib_depth(N)
    arg = {}                # id(instance) -> the n of the call it was taken for
    handled = []            # (n, ax, ret_addr) of every handler call, in order
    entries = []            # (n, ret_addr, depth) of every instance taken

    def handler(ri, regs):
        handled.append((arg[id(ri)], regs.ax, ri.ret_addr))

    rp = Kretprobe(symbol_name=TARGET, handler=handler, maxactive=depth)

    trap_no = rec.trap_count

    def tell_register(rec, ev):
        if ev.probe is not rp.kp:
            return None
        rec.probe = ev.probe
        return ("register_kretprobe",
                f"register_kretprobe() puts maxactive = {rp.maxactive} instances on the "
                f"free list and a kprobe on {rec.short(ev.addr)}, the function's first "
                f"instruction ({ev.probe.ainsn.text}).", "arm",
                {"maxactive": rp.maxactive, "addr": ev.addr})

    def tell_taken(rec, ev):
        ri = ev.instance
        if ev.what != "taken":
            return tell_recycled(rec, ev)
        n = m.engine.reg("di")
        arg[id(ri)] = n
        live = len([r for r in k.kretprobes.instances() if r.task == ev.task])
        entries.append((n, ri.ret_addr, live))
        if live == 1:
            whose = "its caller's (this is the outermost frame)"
        else:
            whose = f"inside fib, since fib({arg.get(id(_head(1)), '?')}) called it"
        ran = rec.ran_since_step()
        return (f"fib({n}) entered",
                f"fib({n}) is entered{f' after {ran} guest instructions' if ran else ''} "
                f"(int3 no. {trap_no('int3')}): pre_handler_kretprobe takes an instance and "
                f"writes kretprobe_trampoline over the return address {rec.short(ri.ret_addr)} "
                f"at {ri.stack_addr:#x} -- {whose}. {rec.task_name()}'s bucket now holds "
                f"{live} instance{'s' if live != 1 else ''}, the new one at the head; "
                f"{len(rp.free_instances)} of {rp.maxactive} are free.",
                "E.instance", {"n": n, "ret_addr": ri.ret_addr, "slot": ri.stack_addr,
                               "depth": live, "free": len(rp.free_instances)})

    def tell_recycled(rec, ev):
        n, ax, ret_addr = handled[-1]
        live = len([r for r in k.kretprobes.instances() if r.task == ev.task])
        return (f"fib({n}) returned",
                f"fib({n}) returns {ax} into kretprobe_trampoline, whose int3 (no. "
                f"{trap_no('int3')}) runs trampoline_probe_handler: it takes the head of "
                f"{rec.task_name()}'s bucket -- the newest instance, this call's -- and "
                f"calls the handler with ax = {ax}. The instance is recycled and ip set to "
                f"its ret_addr {rec.short(ret_addr)}; {live} left in the bucket.",
                "R.recycle", {"n": n, "ax": ax, "ret_addr": ret_addr, "depth": live,
                              "free": len(rp.free_instances)})

    def _head(k_th):
        """The task's k-th newest instance (0: the head)."""
        mine = [r for r in k.kretprobes.instances() if r.task == m.current_addr]
        return mine[k_th] if len(mine) > k_th else None

    # The swap is told with the entry; its stack note ("was ... -> now ...") stays.
    rec.quiet("kprobes.arm", "kprobes.trap", "kprobes.handler", "kprobes.handler-returned",
              "kprobes.singlestep", "kprobes.fixup", "kprobes.swap")
    rec.narrators["kprobes.register"] = tell_register
    rec.narrators["kprobes.instance"] = tell_taken
    rec.narrators["kprobes.disarm"] = lambda rec, ev: (
        "unregistered", f"unregister_kretprobe() disarms first: the original byte "
        f"{ev.opcode:02x} is back at {rec.short(ev.addr)}; then its "
        f"{len(rp.free_instances)} free instances are freed. The workload runs on unprobed.",
        "disarm", {"addr": ev.addr, "opcode": ev.opcode})

    with rec:
        rec.step("before", f"{rec.task_name()} will call fib({N}) through m.call. fib is "
                 f"plain double recursion: fib({N}) makes {models.fib_calls(N)} calls, "
                 f"{depth} deep on its deepest chain fib({N}) -> ... -> fib(1).",
                 phase="before", facts={"calls": models.fib_calls(N), "depth": depth})
        k.register_kretprobe(rp)
        result = m.call(TARGET, N)
        rec.step("m.call returned",
                 f"m.call returned fib({N}) = {result}. The guest clock is back at "
                 f"{m.clock.now:,}: the call and all {trap_no('int3') + trap_no('debug')} "
                 "traps ran on a frozen clock, so the workload will not notice.",
                 phase="return", facts={"result": result, "clock": m.clock.now})
        k.unregister_kretprobe(rp)
    probed = scenes.final_state(m)
    facts = {"n": N, "calls": models.fib_calls(N), "depth": depth,
             "maxactive": rp.maxactive, "nmissed": rp.nmissed, "result": result,
             "entries": entries, "handled": handled, "fn": fn.addr, "fn_size": fn.size,
             "call_return": m.call_return_address,
             "same_final": scenes.same_final(unprobed, probed)}
    return rec.finish(), facts


# -- claims ------------------------------------------------------------------------------

def _traps(lesson):
    calls = lesson.facts["calls"]
    c = lesson.final()["counters"]
    got = {"int3": c["int3"], "debug": c["debug"]}
    want = {"int3": 2 * calls, "debug": calls}
    return got == want, f"{calls} calls: counted {got}, 3 per call is {want}"


def _bucket_is_a_stack(lesson):
    prev = []
    for step in lesson.steps:
        if step["phase"] not in ("E.instance", "R.recycle"):
            continue
        bucket = [ri["ret_addr"] for ri in step["kprobes"]["bucket"]]
        if step["phase"] == "E.instance":
            ok = bucket[1:] == prev and bucket[0] == step["facts"]["ret_addr"]
        else:
            ok = bucket == prev[1:] and prev[0] == step["facts"]["ret_addr"]
        if not ok:
            return False, f"step {step['i']}: bucket {bucket} after {prev}"
        prev = bucket
    return prev == [], "every entry pushed at the head, every return popped the head"


def _depth(lesson):
    f = lesson.facts
    deepest = max(d for _n, _r, d in f["entries"])
    return (deepest == f["depth"] == f["maxactive"] and f["nmissed"] == 0,
            f"deepest {deepest} instances, fib({f['n']}) is {f['depth']} deep, "
            f"maxactive {f['maxactive']}, nmissed {f['nmissed']}")


def _ret_addrs(lesson):
    f = lesson.facts
    for n, ret_addr, depth in f["entries"]:
        inside = f["fn"] <= ret_addr < f["fn"] + f["fn_size"]
        if (depth == 1 and ret_addr != f["call_return"]) or (depth > 1 and not inside):
            return False, f"fib({n}) at depth {depth}: ret_addr {ret_addr:#x}"
    sites = sorted({r for _n, r, d in f["entries"] if d > 1})
    return True, (f"outermost: {f['call_return']:#x} (m.call's return); inner: "
                  + ", ".join(f"{s:#x}" for s in sites) + " in fib")


def _innermost_first(lesson):
    f = lesson.facts
    order = [n for n, _ax, _r in f["handled"]]
    live, expected = [], []
    # The order a stack gives: replay entries and returns as the steps have them.
    for step in lesson.steps:
        if step["phase"] == "E.instance":
            live.append(step["facts"]["n"])
        elif step["phase"] == "R.recycle":
            expected.append(live.pop())
    values = all(ax == models.fib(n) for n, ax, _r in f["handled"])
    return (order == expected and values and len(order) == f["calls"],
            f"handlers for fib({', '.join(map(str, order[:6]))}, ...): each the newest "
            "live call; every ax == fib(n)")


def _result_and_clock(lesson):
    f = lesson.facts
    ret = lesson.first(phase="return")
    before = lesson.first(phase="before")
    return (f["result"] == models.fib(f["n"]) and ret["clock"] == before["clock"],
            f"fib({f['n']}) = {f['result']}; clock {before['clock']:,} before and after")


DEMO = Demo(
    name="recursion",
    question="Per-task instances form a stack: what happens to them in a recursion?",
    tier="C",
    confusions=(5,),
    record=record,
    claims=[
        Claim("traps == 3 per call: int3 2, #DB 1 for each of fib(5)'s calls", _traps),
        Claim("the task's bucket grows and shrinks at its head only, like a stack",
              _bucket_is_a_stack),
        Claim("the deepest point holds fib(5)'s depth of instances == maxactive; "
              "nmissed == 0", _depth),
        Claim("ret_addr is inside fib for inner frames, the caller's for the outermost",
              _ret_addrs),
        Claim("handlers run innermost first, each with ax == fib(n)", _innermost_first),
        Claim("m.call returned fib(5) and the guest clock did not move", _result_and_clock),
        scenes.same_final_claim(),
    ],
    prose=("fib(5) under a kretprobe (design (b), instances keyed by task) with maxactive "
           "equal to fib(5)'s depth. Each step is one call or one return; watch the "
           "bucket in the KPROBES panel grow and shrink at its head."),
    after=("The instances of one task form a stack: the newest is at the head of the "
           "task's bucket and the trampoline always finds the right one first. Give the "
           "pool fewer instances than the recursion is deep and returns go missing: "
           "kpemu demo maxactive."),
)
